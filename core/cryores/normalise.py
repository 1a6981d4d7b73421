"""Intensity normalisation that does not care about a map's arbitrary scale and offset.

Reconstruction packages write density in arbitrary units with arbitrary offsets, so the network
must see the same input for ``a * map + b`` (a > 0). Min-max scaling (the original research
code's choice) is not robust: one hot voxel changes every value. We standardise with the mean
and standard deviation of the voxels inside the molecular mask instead: both move exactly with
``a`` and ``b``, and the solvent fraction of the box no longer changes the scale.
"""

from __future__ import annotations

import numpy as np

from .errors import CryoResError

METHOD = "masked-zscore"


def masked_statistics(volume: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation of ``volume`` over ``mask`` voxels (float64 accumulation).

    Raises CryoResError if the mask is empty or the density inside it is constant.
    """
    inside = np.asarray(volume, dtype=np.float32)[np.asarray(mask, dtype=bool)]
    if inside.size == 0:
        raise CryoResError("the mask contains no voxel")
    mean = float(inside.mean(dtype=np.float64))
    std = float(inside.std(dtype=np.float64))
    if not np.isfinite(std) or std <= 1e-12 * max(1.0, abs(mean)):
        raise CryoResError("the density inside the mask is constant; nothing to estimate")
    return mean, std


def masked_zscore(volume: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Return ``(volume - mean) / std`` with mean and std taken over ``mask`` voxels (float32).

    Raises CryoResError if the mask is empty or the density inside it is constant.
    """
    mean, std = masked_statistics(volume, mask)
    out = np.asarray(volume, dtype=np.float32) - np.float32(mean)
    out /= np.float32(std)
    return out


NORMALISERS = {METHOD: masked_zscore}


def normalise(volume: np.ndarray, mask: np.ndarray, method: str = METHOD) -> np.ndarray:
    """Apply the normalisation named in a model card. Raises CryoResError for unknown names."""
    try:
        return NORMALISERS[method](volume, mask)
    except KeyError:
        raise CryoResError(f"model card asks for unknown normalisation {method!r}") from None
