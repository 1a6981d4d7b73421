"""Fail early when a map would not fit in memory, instead of swapping for an hour."""

from __future__ import annotations

import os

from .errors import CryoResError

# float32 arrays alive at the peak of predict(), per voxel of each grid, measured with the
# 512^3 benchmark: on the input grid the density, mask and output; on the model grid the
# resampled and normalised density, its complex spectrum (~2 floats), the patch-selection
# mask and the two accumulators (three with Monte-Carlo dropout).
BYTES_PER_INPUT_VOXEL = 4 * 4
BYTES_PER_MODEL_VOXEL = 4 * 6


def available_memory() -> int | None:
    """Physical memory in bytes, or None where the OS does not tell."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def estimated_peak(input_voxels: int, model_voxels: int, mc_dropout: bool) -> int:
    model_bytes = BYTES_PER_MODEL_VOXEL + (4 if mc_dropout else 0)
    return input_voxels * BYTES_PER_INPUT_VOXEL + model_voxels * model_bytes


def check_fits(input_voxels: int, model_voxels: int, mc_dropout: bool,
               limit: int | None = None) -> None:
    """Raise CryoResError if the estimated peak exceeds ``limit`` bytes (default: 90 % of RAM)."""
    if limit is None:
        physical = available_memory()
        if physical is None:
            return
        limit = int(0.9 * physical)
    need = estimated_peak(input_voxels, model_voxels, mc_dropout)
    if need > limit:
        raise CryoResError(
            f"this map needs about {need / 2**30:.1f} GiB of memory, more than the "
            f"{limit / 2**30:.1f} GiB available; crop the box or bin the map first")
