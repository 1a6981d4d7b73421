"""Local resolution from one map: the public ``predict`` and ``predict_file`` functions.

Pipeline: check input -> molecular mask (user's or automatic) -> resample to the model's voxel
size -> normalise -> overlapping patch inference -> back to the input grid -> clip to
[Nyquist, model's upper bound] inside the mask, exactly 0 outside.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .box_faces import mirror_pads, read_past_faces
from .cautions import faint_solvent, prediction_cautions
from .cut_finding import find_lowpass_cut
from .cut_scale import scale_for_cut
from .errors import CryoResError
from .inference import resolve_device, sliding_window_predict
from .masking import automatic_mask, mask_from_array
from .memory import check_fits
from .model_card import LoadedModel, load_model
from .mrc_io import DensityMap, check_output_path, peek_grid, read_half_map_average, read_map, read_mask, write_maps
from .normalise import normalise
from .progress import ProgressArg, progress_reporter
from .resample import fourier_resample, linear_resample, shape_for_voxel_size
from .spectral import feature_grid, reference_region
from .spectral_inference import spectral_predict
from .summary import ResolutionSummary, summarise
from .validation import as_voxel_size, check_density

DEFAULT_MC_SAMPLES = 10
ROI_MARGIN_VOXELS = 2  # predict a little beyond the mask so interpolation back is exact at its edge


@dataclass
class Prediction:
    """Result of :func:`predict`, all arrays on the input grid.

    resolution: Å inside ``mask``, 0 outside. uncertainty: σ in Å, for v3 models always (from
    their calibrated 5-95 % interval), for U-Net models the Monte-Carlo dropout standard
    deviation (None without samples). summary: median and 5-95 % range inside the mask.
    cautions: plain-language lines on where the map or the reading lies beyond what the model was
    trained on, or where its absolute values are less certain (:mod:`cryores.cautions`); empty
    when nothing is. noise_reference: whether the map's solvent held noise for a v3 model to read
    the map against (False for masked, flattened or zoned maps); None for models that do not
    use one. lowpass_cut: the low-pass cut (Å) the caller gave, which no value reads finer than.
    found_cut: where the caller gave none and the map has no noise reference, the low-pass cut (Å)
    found in its spectrum (:mod:`cryores.cut_finding`) and used as if given; None otherwise.
    cut_scale: the factor a map without a noise reference was scaled by so that its
    best-resolved fifth reads the cut (:mod:`cryores.cut_scale`); None when it was not scaled.
    solvent_spread: where a v3 model read the map against its solvent, how far the solvent's
    values spread (:func:`cryores.spectral.solvent_spread`); a faint one is cautioned
    (:data:`cryores.cautions.FAINT_SOLVENT`). None when not measured.
    """

    resolution: np.ndarray
    mask: np.ndarray
    uncertainty: np.ndarray | None
    summary: ResolutionSummary
    model_name: str
    voxel_size: tuple[float, float, float]
    cautions: tuple[str, ...] = ()
    noise_reference: bool | None = None
    lowpass_cut: float | None = None
    cut_scale: float | None = None
    solvent_spread: float | None = None
    found_cut: float | None = None


def predict(
    density: np.ndarray,
    voxel_size: float | Sequence[float],
    mask: np.ndarray | None = None,
    *,
    model: LoadedModel | str | os.PathLike | None = None,
    samples: int = 0,
    device: str = "auto",
    patch_size: int | None = None,
    overlap: float | None = None,
    batch_size: int = 4,
    seed: int = 0,
    progress: ProgressArg = False,
    memory_limit: int | None = None,
    lowpass_cut: float | None = None,
    scale_to_cut: bool = True,
    find_cut: bool = True,
) -> Prediction:
    """Local resolution (Å) of a density map given as a numpy array.

    density: 3-D array (any real dtype). voxel_size: Å, one number or one per array axis.
    mask: optional array of the same shape, > 0.5 inside; None computes the automatic mask
    (see :mod:`cryores.masking`). model: a LoadedModel, a model-card path, or None for the
    installed model. samples: 0 for one deterministic pass, >= 2 for Monte-Carlo dropout (mean
    and standard deviation). patch_size and overlap default to the model card's. seed fixes the dropout
    masks without touching the caller's torch random state. progress: True for a terminal bar
    or a callable ``(done, total)`` called after each batch of patches. lowpass_cut: the Å the
    map was low-pass filtered at, its global FSC resolution, as post-processing does; nothing
    finer is left in such a map, so no voxel reads finer, and (v3 models) a map without a noise
    reference is also scaled so that its best-resolved fifth reads the cut (:mod:`cryores.cut_scale`;
    the uncertainty scales with it). scale_to_cut=False keeps only the floor: for a cut that belongs
    to another map than ``density`` (the half maps' average read for a filtered deposit).
    find_cut: where no cut is given and a v3 model finds no noise reference, look for the cut in
    the map's spectrum (:mod:`cryores.cut_finding`) and use one found as if given
    (``Prediction.found_cut``); False reads such a map without it.

    Raises CryoResError for bad input (shape, NaN/Inf, constant map, bad voxel size, mask or
    lowpass_cut), a missing model, or a map too large for memory.
    """
    voxel = as_voxel_size(voxel_size)
    density = check_density(density)
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    nyquist = 2.0 * max(voxel)
    if nyquist >= loaded.max_resolution:
        raise CryoResError(f"voxel size {max(voxel):.3g} Å: Nyquist {nyquist:.3g} Å is beyond the "
                           f"model's range (up to {loaded.max_resolution:g} Å)")
    if lowpass_cut is not None:
        lowpass_cut = check_lowpass_cut(lowpass_cut, loaded.max_resolution)
    if loaded.spectral:
        return _predict_spectral(density, voxel, mask, loaded, device, progress, memory_limit, lowpass_cut,
                                 scale_to_cut, find_cut)
    grid = shape_for_voxel_size(density.shape, voxel, loaded.voxel_size)
    check_fits(density.size, int(np.prod(grid)), samples > 0, memory_limit)
    mask = automatic_mask(density, voxel) if mask is None else mask_from_array(mask, density.shape)

    resampled = grid != density.shape
    work = fourier_resample(density, grid) if resampled else density
    work_mask = linear_resample(mask, grid) >= 0.5 if resampled else mask
    if not work_mask.any():  # a mask thinner than a model voxel
        work_mask = linear_resample(mask, grid) > 0
    work = normalise(work, work_mask, loaded.card["normalisation"])
    pad_value = float(np.median(work[~work_mask])) if not work_mask.all() else 0.0

    with progress_reporter(progress, 0, "patch", "cryores") as bar, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        result = sliding_window_predict(
            work, loaded.network, patch_size=patch_size or loaded.patch_size,
            overlap=loaded.overlap if overlap is None else overlap, batch_size=batch_size, roi=work_mask,
            roi_margin=ROI_MARGIN_VOXELS,
            transform=loaded.to_angstrom, mc_samples=samples, pad_value=pad_value, device=device,
            on_total=(lambda n: bar.reset(total=n)) if bar is not None else None,
            progress=bar.update if bar is not None else None)
    del work

    resolution, std = result.mean, result.std
    if resampled:
        resolution = linear_resample(resolution, density.shape)
        std = linear_resample(std, density.shape) if std is not None else None
    return _prediction(resolution, std, mask, voxel, loaded, lowpass_cut)


def _prediction(resolution: np.ndarray, std: np.ndarray | None, mask: np.ndarray, voxel: tuple[float, float, float],
                loaded: LoadedModel, lowpass_cut: float | None, noise_reference: bool | None = None,
                scale_to_cut: bool = True, solvent_spread: float | None = None,
                found_cut: float | None = None) -> Prediction:
    """The last station of both model kinds: a map without a noise reference scaled to the
    low-pass cut given, or else found (:mod:`cryores.cut_scale`), the reading clipped to
    [Nyquist, or the cut if coarser; the model's upper end], both maps 0 outside the mask, the
    summary and cautions."""
    scale, refusal = None, None
    cut = lowpass_cut if lowpass_cut is not None else found_cut
    if cut is not None and noise_reference is False and scale_to_cut:
        scale, refusal = scale_for_cut(resolution, mask, cut, voxel)
        if scale is None and lowpass_cut is None:  # a found cut far finer than the reading: not its resolution
            cut, found_cut, refusal = None, None, None
        if scale is not None:
            resolution *= np.float32(scale)
            if std is not None:
                std *= np.float32(scale)  # the interval is relative: it scales with the reading
    np.clip(resolution, max(2.0 * max(voxel), cut or 0.0), loaded.max_resolution, out=resolution)
    resolution[~mask] = 0.0
    if std is not None:
        std[~mask] = 0.0
    cautions = prediction_cautions(resolution, mask, voxel, loaded.card, noise_reference,
                                   lowpass_cut_given=lowpass_cut is not None, scaled_to_cut=scale is not None,
                                   solvent_spread=solvent_spread, found_cut=found_cut)
    cautions += (refusal,) if refusal else ()
    return Prediction(resolution, mask, std, summarise(resolution, mask), str(loaded.card["name"]), voxel,
                      cautions, noise_reference, lowpass_cut, scale, solvent_spread, found_cut)


def check_lowpass_cut(lowpass_cut: float, max_resolution: float) -> float:
    """``lowpass_cut`` as a float after checking it is a resolution the model can read (Å).

    Raises CryoResError for a non-finite, non-positive or too coarse value; checked before any
    costly work (reading half maps, features)."""
    try:
        value = float(lowpass_cut)
    except (TypeError, ValueError):
        raise CryoResError(f"the low-pass cut must be a number of Å, got {lowpass_cut!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise CryoResError(f"the low-pass cut must be a finite positive number of Å, got {lowpass_cut}")
    if value >= max_resolution:
        raise CryoResError(f"low-pass cut {value:g} Å is beyond the model's range (up to {max_resolution:g} Å)")
    return value


def _predict_spectral(density: np.ndarray, voxel: tuple[float, float, float], mask: np.ndarray | None,
                      loaded: LoadedModel, device: str, progress: ProgressArg, memory_limit: int | None,
                      lowpass_cut: float | None, scale_to_cut: bool = True, find_cut: bool = True) -> Prediction:
    """v3 models: mask -> spectral features on the map's own grid -> network -> floor -> grid,
    then, for a map without a noise reference given no cut, the cut found in its spectrum.

    The uncertainty (from the predicted 5-95 % interval, calibrated) is always returned.
    """
    check_fits(density.size, math.prod(feature_grid(density.shape, voxel)[0]), False, memory_limit)
    if mask is None:
        mask = reference = automatic_mask(density, voxel)
    else:
        mask = mask_from_array(mask, density.shape)
        reference = reference_region(density, voxel, mask)  # sets the features' scale and solvent
    if read_past_faces(mask, reference):  # band powers taken on the map mirrored past its faces: a bigger box
        padded = [n + 2 * p for n, p in zip(density.shape, mirror_pads(density.shape, voxel))]
        check_fits(math.prod(padded), math.prod(feature_grid(tuple(padded), voxel)[0]), False, memory_limit)
    with progress_reporter(progress, 0, "voxel", "cryores") as bar:
        reported = [0]

        def on_progress(done: int, total: int) -> None:
            if bar is not None:
                if reported[0] == 0:
                    bar.reset(total=total)
                bar.update(done - reported[0])
                reported[0] = done

        resolution, std, has_reference, spread = spectral_predict(density, voxel, mask, loaded,
                                                                  resolve_device(device), on_progress, reference)
    looked = find_cut and scale_to_cut and lowpass_cut is None and not has_reference  # scale_to_cut: see predict
    found = find_lowpass_cut(density, voxel) if looked else None
    return _prediction(resolution, std, mask, voxel, loaded, lowpass_cut, has_reference, scale_to_cut, spread, found)


NO_REFERENCE_LABEL = "no noise reference"
NO_REFERENCE_LINE = f"cryores: {NO_REFERENCE_LABEL}"  # a line of its own: a long model name cannot cut it
LOWPASS_CUT_LABEL = "cryores low-pass cut"  # a label line: "cryores low-pass cut 3.2 A"
CUT_SCALE_LABEL = "cryores scaled to the cut by"  # when the cut set the scale: "... by 0.87"
FOUND_CUT_LABEL = "cryores found low-pass cut"  # a cut found in the map's spectrum: "... cut 3.21 A"
FAINT_SOLVENT_LABEL = "cryores: faint solvent, spread"  # when cautioned: "... spread 0.000653"


def resolution_label(result: Prediction) -> str:
    """The resolution map's MRC header labels (one per line, each at most 80 characters): what made
    it, whether the map had no noise reference, the low-pass cut it was given or found in its
    spectrum and the factor that cut scaled it by, and a faint solvent's spread where it was
    cautioned (so that a batch rerun that keeps the file can repeat its cautions, and does not
    keep a file read with another cut).
    Each fact has its own line, so that cutting the first line at 80 characters (a long model
    name) loses no other fact."""
    label = f"cryores local resolution (A), model {result.model_name}"
    if result.noise_reference is False:
        label += f"\n{NO_REFERENCE_LINE}"
    if result.lowpass_cut is not None:
        label += f"\n{LOWPASS_CUT_LABEL} {result.lowpass_cut!r} A"
    if result.found_cut is not None:
        label += f"\n{FOUND_CUT_LABEL} {result.found_cut:.6g} A"
    if result.cut_scale is not None:
        label += f"\n{CUT_SCALE_LABEL} {result.cut_scale:.6g}"
    if faint_solvent(result.noise_reference, result.solvent_spread):
        label += f"\n{FAINT_SOLVENT_LABEL} {float(result.solvent_spread)!r}"  # exact: a rerun compares it again
    return label


@dataclass(frozen=True)
class LabelFacts:
    """What a resolution map's labels (:func:`resolution_label`) say: the model that made it,
    whether its map had a noise reference (False: none; True: a faint solvent, whose spread they
    record; None when they do not say), the low-pass cut it was given (None: none), the factor
    that cut scaled it by (None: none), a faint solvent's spread (None: not faint, or not
    said) and the cut found in the map's spectrum (None: none found, or not looked for).
    ``garbled``: a line starts as one of cryores' facts but its value is not a number (an edited
    header): the other facts may then be wrong, so a batch rerun does not keep it."""

    model_name: str | None
    noise_reference: bool | None
    lowpass_cut: float | None
    cut_scale: float | None = None
    solvent_spread: float | None = None
    garbled: bool = False
    found_cut: float | None = None


_MODEL_LABEL = re.compile(r"cryores local resolution.*model ([^\s,]+)")
_NUMBER = r"([0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?)"
_CUT_LABEL = re.compile(re.escape(LOWPASS_CUT_LABEL) + " " + _NUMBER + " A$")
_CUT_SCALE_LABEL = re.compile(re.escape(CUT_SCALE_LABEL) + " " + _NUMBER + "$")
_FAINT_SOLVENT_LABEL = re.compile(re.escape(FAINT_SOLVENT_LABEL) + " " + _NUMBER + "$")
_FOUND_CUT_LABEL = re.compile(re.escape(FOUND_CUT_LABEL) + " " + _NUMBER + " A$")
# each numeric fact's line start and its pattern: a line that starts so but does not match is garbled
_NUMERIC_FACTS = ((LOWPASS_CUT_LABEL + " ", _CUT_LABEL), (CUT_SCALE_LABEL + " ", _CUT_SCALE_LABEL),
                  (FAINT_SOLVENT_LABEL + " ", _FAINT_SOLVENT_LABEL), (FOUND_CUT_LABEL + " ", _FOUND_CUT_LABEL))


def read_resolution_labels(labels: Sequence[str]) -> LabelFacts:
    """Read back :func:`resolution_label`'s lines from a file's labels (the last of each kind
    counts); labels written by other tools say nothing. A line that starts as one of cryores'
    numeric facts but does not parse says nothing either, and marks the facts ``garbled``."""
    garbled = any(label.startswith(prefix) and not pattern.search(label)
                  for label in labels for prefix, pattern in _NUMERIC_FACTS)
    models = [(m.group(1), label) for label in labels if (m := _MODEL_LABEL.search(label))]
    cuts = [float(m.group(1)) for m in map(_CUT_LABEL.search, labels) if m]
    scales = [float(m.group(1)) for m in map(_CUT_SCALE_LABEL.search, labels) if m]
    spreads = [float(m.group(1)) for m in map(_FAINT_SOLVENT_LABEL.search, labels) if m]
    found = [float(m.group(1)) for m in map(_FOUND_CUT_LABEL.search, labels) if m]
    model_name, model_label = models[-1] if models else (None, "")
    # files written before the flag had its own line carry it at the end of the model's line
    no_reference = NO_REFERENCE_LINE in labels or NO_REFERENCE_LABEL in model_label
    return LabelFacts(model_name, False if no_reference else True if spreads else None,
                      cuts[-1] if cuts else None, scales[-1] if scales else None,
                      spreads[-1] if spreads else None, garbled, found[-1] if found else None)


def default_output_path(map_path: str | os.PathLike, suffix: str = "_locres") -> Path:
    """``<map stem><suffix>.mrc`` beside the map (``.gz``/``.bz2`` stripped first)."""
    map_path = Path(map_path)
    name = map_path.name
    for compressed in (".gz", ".bz2"):
        if name.endswith(compressed):
            name = name[: -len(compressed)]
    return map_path.with_name(f"{Path(name).stem}{suffix}.mrc")


def predict_file(
    map_path: str | os.PathLike,
    output: str | os.PathLike | None = None,
    *,
    half_map2: str | os.PathLike | None = None,
    mask: str | os.PathLike | None = None,
    uncertainty: str | os.PathLike | None = None,
    samples: int | None = None,
    voxel_size: float | None = None,
    force: bool = False,
    report: str | os.PathLike | None = None,
    **options,
) -> tuple[Prediction, Path]:
    """Predict from an MRC file and write the resolution map (and uncertainty) beside it.

    output defaults to ``<map stem>_locres.mrc`` beside the map. half_map2: with it, ``map_path``
    is half map 1 and the map read is the two half maps' average
    (:func:`cryores.mrc_io.read_half_map_average`): unmasked half maps give a masked deposit
    the solvent noise it lacks; a ``lowpass_cut`` then only floors the reading (it is the
    deposit's, not the average's). uncertainty: path for the
    Monte-Carlo standard deviation map; it implies ``samples`` = 10 unless given. voxel_size
    overrides the header. report: path of a PNG report (needs matplotlib). Other options go to
    :func:`predict`. Outputs keep the input's voxel
    size, origin, nstart and axis order; they are checked before any work and written
    atomically. Returns the prediction and the output path.
    """
    map_path = Path(map_path)
    output = Path(output) if output is not None else default_output_path(map_path)
    protected = tuple(Path(p) for p in (map_path, half_map2, mask) if p is not None)
    check_output_path(output, force=force, protected=protected)
    if report is not None:
        check_output_path(report, force=force, role="report", protected=protected)
    if uncertainty is not None:
        check_output_path(uncertainty, force=force, role="uncertainty output", protected=protected)
        samples = DEFAULT_MC_SAMPLES if samples is None else samples
        if samples < 2:
            raise CryoResError("an uncertainty map needs --samples of at least 2")
    model = options.pop("model", None)
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    if options.get("lowpass_cut") is not None:  # before reading the map (or two half maps)
        check_lowpass_cut(options["lowpass_cut"], loaded.max_resolution)
    peek = peek_grid(map_path, voxel_size)
    if peek is not None:  # before reading: a map too large must not be read into swap first
        shape, voxel = peek
        check_fits(math.prod(shape), math.prod(shape_for_voxel_size(shape, voxel, loaded.voxel_size)),
                   bool(samples), options.get("memory_limit"))
    density_map: DensityMap = (read_map(map_path, voxel_size=voxel_size) if half_map2 is None
                               else read_half_map_average(map_path, half_map2, voxel_size=voxel_size))
    mask_array = read_mask(mask, density_map) if mask is not None else None
    if half_map2 is not None:  # the cut is the deposit's, not the average's: it only floors
        options["scale_to_cut"] = False
    result = predict(density_map.data, density_map.voxel_size, mask_array, model=loaded,
                     samples=samples or 0, **options)
    outputs = [(output, result.resolution, resolution_label(result))]
    if uncertainty is not None:
        outputs.append((uncertainty, result.uncertainty, "cryores uncertainty sigma of resolution (A)"))
    write_maps(outputs, density_map, force=force)
    if report is not None:
        from .report import write_report_png

        title = None if half_map2 is None else f"average of {map_path.name} and {Path(half_map2).name}"
        write_report_png(report, density_map, result, force=force, title=title)
    return result, output
