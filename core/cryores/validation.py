"""Checks on density arrays and voxel sizes, shared by every entry point."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import CryoResError

MIN_SIDE = 8


def as_voxel_size(voxel_size: float | Sequence[float]) -> tuple[float, float, float]:
    """A positive voxel size per array axis (Å) from a number or a 3-sequence.

    Raises CryoResError for zero, negative, non-finite or wrongly sized values.
    """
    values = np.atleast_1d(np.asarray(voxel_size, dtype=np.float64))
    if values.size == 1:
        values = np.repeat(values, 3)
    if values.size != 3 or not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise CryoResError(f"voxel size must be a positive number of Å (or three), got {voxel_size}")
    return tuple(float(v) for v in values)


def check_density(density: np.ndarray, role: str = "map") -> np.ndarray:
    """The density as float32 after checking it is a usable 3-D map.

    Raises CryoResError for non-3-D arrays, sides below 8 voxels, NaN/Inf or a constant map.
    """
    density = np.asarray(density)
    if density.ndim != 3:
        raise CryoResError(f"{role} must be a 3-D array, got shape {density.shape}")
    if min(density.shape) < MIN_SIDE:
        raise CryoResError(f"{role} of shape {density.shape} is too small (each side needs >= {MIN_SIDE} voxels)")
    if not np.issubdtype(density.dtype, np.number) or np.iscomplexobj(density):
        raise CryoResError(f"{role} must hold real numbers, got {density.dtype}")
    density = density.astype(np.float32, copy=False)
    finite = np.isfinite(density)
    if not finite.all():
        raise CryoResError(f"{role} contains {density.size - int(finite.sum())} NaN or infinite values")
    if float(density.max()) == float(density.min()):
        raise CryoResError(f"{role} is constant ({float(density.min())}); nothing to estimate")
    return density
