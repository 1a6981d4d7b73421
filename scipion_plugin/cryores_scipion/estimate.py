"""Plain functions between the protocol and the cryores core (testable without Scipion).

They only translate Scipion's file names and choices into calls of the core's Python API
(``cryores.predict_file`` and ``cryores.local_fsc_file``): there is no second implementation.
``cryores`` is imported inside the functions because it imports torch, which would slow every
Scipion start (Scipion imports all plugins' protocol modules to build its menu).
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

from .constants import MRC_SUFFIXES

if TYPE_CHECKING:
    from cryores import Prediction

_FORMAT_SUFFIX = re.compile(r":(mrc|mrcs|map|ccp4)$")


def plain_path(file_name: str) -> str:
    """A Scipion file name without its ``:mrc``-style format suffix."""
    return _FORMAT_SUFFIX.sub("", file_name)


def is_mrc_path(file_name: str) -> bool:
    """True when the core can read the file (it reads MRC/CCP4 only)."""
    return plain_path(file_name).lower().endswith(MRC_SUFFIXES)


def core_problem() -> str | None:
    """Why the cryores core cannot be used in this Python, or None when it can."""
    try:
        import cryores  # noqa: F401
    except ImportError as error:
        return (f"the cryores package cannot be imported in Scipion's Python ({error}); install it there "
                "first: scipion3 python -m pip install /path/to/cryores")
    return None


def model_problem(model_card: str | None) -> str | None:
    """Why the deep-learning method has no model to run, or None when it has one.

    An empty ``model_card`` means the model installed in cryores; a given one must exist.
    Checked in ``_validate`` so a missing model stops the run before it is launched.
    """
    if model_card:
        return None if os.path.isfile(model_card) else f"model card {model_card} does not exist"
    from cryores.model_card import installed_card_path

    if installed_card_path() is None:
        return ("no trained cryores model is installed: give a model card (advanced parameter "
                "'Model card') or use the 'local FSC' method with half maps")
    return None


def lowpass_cut_problem(model_card: str | None, cut: float | None) -> str | None:
    """Why ``cut`` (Å; 0 or None: not given) cannot floor the model's reading, or None when it can.

    Checked in ``_validate`` with the model's own upper end, so a bad cut stops the run before it
    is launched rather than after the maps are read."""
    if not cut:
        return None
    from cryores.errors import CryoResError
    from cryores.model_card import load_model
    from cryores.predict import check_lowpass_cut

    try:
        check_lowpass_cut(cut, load_model(model_card or None).max_resolution)
    except CryoResError as error:
        return str(error)
    return None


def run_deep_learning(map_file: str, output: str, *, voxel_size: float, mask_file: str | None = None,
                      samples: int = 0, uncertainty: str | None = None, device: str = "auto",
                      model_card: str | None = None, half_map2: str | None = None,
                      lowpass_cut: float | None = None, find_cut: bool = True) -> Prediction:
    """Local resolution of one map with the network; writes ``output`` (and ``uncertainty``).

    voxel_size is Scipion's sampling rate, which wins over the file header (as in every
    Scipion protocol). With ``uncertainty`` the σ map (Å) is written there too: v3 models predict
    it; U-Net models take the standard deviation of ``samples`` MC-dropout passes (10 when 0).
    With ``half_map2``, ``map_file`` is half map 1 and the network reads the two half maps' average.
    ``lowpass_cut``: the Å the map was low-passed at; no voxel reads finer (``cryores.predict``).
    ``find_cut``: without one, look for it in the spectrum of a map without a noise reference.
    """
    import cryores

    result, _ = cryores.predict_file(
        plain_path(map_file), output, half_map2=plain_path(half_map2) if half_map2 else None,
        mask=plain_path(mask_file) if mask_file else None,
        uncertainty=uncertainty, samples=samples or None, voxel_size=voxel_size,
        model=model_card or None, device=device, force=True, lowpass_cut=lowpass_cut, find_cut=find_cut)
    return result


def uncertainty_source(model_card: str | None, samples: int) -> str:
    """How the model behind ``model_card`` (empty: the installed one) makes its σ, in words.

    v3 cards predict it (and ignore MC-dropout samples); U-Net cards take it from dropout passes,
    ``samples`` of them, or 10 when 0 (as ``cryores.predict_file`` does)."""
    from cryores.model_card import load_model
    from cryores.predict import DEFAULT_MC_SAMPLES

    if load_model(model_card or None).spectral:
        return "predicted by the network, calibrated so that ±1.645 σ holds 90 % of validation voxels"
    return f"standard deviation of {samples or DEFAULT_MC_SAMPLES} MC-dropout passes"


def run_local_fsc(half1_file: str, half2_file: str, output: str, *, voxel_size: float,
                  mask_file: str | None = None, window: float | None = None) -> Prediction:
    """Half-map local FSC (FSC = 0.143 in a soft window); writes ``output`` on half map 1's grid."""
    import cryores

    options = {} if window is None else {"window": window}
    result, _ = cryores.local_fsc_file(
        plain_path(half1_file), plain_path(half2_file), output,
        mask=plain_path(mask_file) if mask_file else None, voxel_size=voxel_size, force=True, **options)
    return result
