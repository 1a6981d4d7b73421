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
