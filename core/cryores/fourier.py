"""Spatial-frequency grids on the ``rfftn`` layout, shared by every Fourier-space filter."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def spatial_frequency(shape: Sequence[int], voxel_size: Sequence[float], dtype=np.float32) -> np.ndarray:
    """|s| in 1/Å of each ``rfftn`` coefficient of a ``shape`` array, for any voxel size per axis.

    Built from broadcast 1-D axes (no full-size coordinate arrays); ``dtype`` sets the precision
    (float32 halves the memory of the one full-size array for large maps).
    """
    freqs = [np.fft.fftfreq(shape[0], voxel_size[0]), np.fft.fftfreq(shape[1], voxel_size[1]),
             np.fft.rfftfreq(shape[2], voxel_size[2])]
    s0, s1, s2 = (f.astype(dtype) ** 2 for f in freqs)
    squared = s0[:, None, None] + s1[None, :, None]
    squared = squared + s2[None, None, :]
    return np.sqrt(squared, out=squared)


def shell_width(shape: Sequence[int], voxel_size: Sequence[float]) -> float:
    """Width (1/Å) of a Fourier shell one box frequency wide: 1 / the largest box edge in Å."""
    return 1.0 / max(n * v for n, v in zip(shape, voxel_size))


def shell_means(spectrum: np.ndarray, shape: Sequence[int], voxel_size: Sequence[float],
                last: int) -> tuple[np.ndarray, np.ndarray]:
    """(coefficients per shell, mean power per shell) of ``spectrum``, the ``rfftn`` of a ``shape``
    array, over shells 0..``last`` of :func:`shell_width` (coefficients beyond ``last`` are left
    out; a shell with no coefficient has mean 0)."""
    shell = np.rint(spatial_frequency(shape, voxel_size) / np.float32(shell_width(shape, voxel_size)))
    shell = shell.astype(np.int64).ravel()
    power = np.square(np.abs(spectrum)).ravel()
    keep = shell <= last
    counts = np.bincount(shell[keep], minlength=last + 1)
    mean = np.bincount(shell[keep], weights=power[keep], minlength=last + 1) / np.maximum(counts, 1)
    return counts, mean
