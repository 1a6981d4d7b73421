"""Changing a map's voxel size so the network sees every map at the scale it was trained on.

Density is resampled by Fourier cropping (coarser grid: an ideal anti-aliasing low-pass) or
zero padding (finer grid: band-limited interpolation), which keeps every Fourier component the
new grid can hold and adds none. Smooth per-voxel fields (masks, resolution maps) go back with
trilinear interpolation, which needs no temporary coordinate arrays.

Both use one grid convention: sample j of an axis resampled from n to m voxels lies at input
coordinate j * n / m (first voxels coincide, the box length in Å is kept).

Own code rather than ``scipy.signal.resample``: that routine transforms one axis at a time in
complex128 (16 bytes a voxel, three passes); ``rfftn`` in complex64 does all axes at once with
a quarter of the memory, which decides whether a 512^3 map fits the memory target.
"""

from __future__ import annotations

import numpy as np
import scipy.fft
from scipy import ndimage


def shape_for_voxel_size(shape: tuple[int, ...], voxel_size: tuple[float, ...],
                         target_voxel_size: float) -> tuple[int, ...]:
    """Grid shape that keeps the box length when the voxel size becomes ``target_voxel_size``."""
    return tuple(max(1, int(round(n * v / target_voxel_size))) for n, v in zip(shape, voxel_size))


def _axis_slices(n_from: int, n_to: int, half: bool) -> tuple[list[slice], list[slice]]:
    """Matching source/destination slices for the frequencies both axis lengths can hold.

    For full (not half) axes the kept frequencies are 0..k-1 at the start and -k'..-1 at the
    end of the unshifted spectrum, where k, k' split the smaller length.
    """
    n_keep = min(n_from, n_to)
    if half:  # rfft axis: only non-negative frequencies are stored
        keep = n_keep // 2 + 1
        return [slice(0, keep)], [slice(0, keep)]
    positive = (n_keep + 1) // 2
    negative = n_keep // 2
    src = [slice(0, positive)]
    dst = [slice(0, positive)]
    if negative:
        src.append(slice(n_from - negative, n_from))
        dst.append(slice(n_to - negative, n_to))
    return src, dst


def resize_spectrum(spectrum: np.ndarray, shape_from: tuple[int, ...], shape_to: tuple[int, ...]) -> np.ndarray:
    """The ``rfftn`` spectrum of a ``shape_from`` array as that of a ``shape_to`` array (complex64):
    the frequencies both grids hold are copied, the others dropped (crop) or zero (pad)."""
    out = np.zeros(tuple(shape_to[:2]) + (shape_to[2] // 2 + 1,), dtype=np.complex64)
    src0, dst0 = _axis_slices(shape_from[0], shape_to[0], half=False)
    src1, dst1 = _axis_slices(shape_from[1], shape_to[1], half=False)
    src2, dst2 = _axis_slices(shape_from[2], shape_to[2], half=True)
    for s0, d0 in zip(src0, dst0):
        for s1, d1 in zip(src1, dst1):
            out[d0, d1, dst2[0]] = spectrum[s0, s1, src2[0]]
    return out


def fourier_resample(volume: np.ndarray, shape: tuple[int, int, int], workers: int = -1) -> np.ndarray:
    """Resample a real 3-D array to ``shape`` by cropping or zero-padding its spectrum.

    Values are scaled so that the mean (and so any constant offset) is preserved. The result
    is float32.
    """
    volume = np.asarray(volume, dtype=np.float32)
    shape = tuple(int(s) for s in shape)
    if shape == volume.shape:
        return volume.copy()
    out_spectrum = resize_spectrum(scipy.fft.rfftn(volume, workers=workers), volume.shape, shape)
    result = scipy.fft.irfftn(out_spectrum, s=shape, workers=workers)
    result *= np.prod(shape) / np.prod(volume.shape)
    return result.astype(np.float32, copy=False)


def linear_resample(volume: np.ndarray, shape: tuple[int, int, int], order: int = 1,
                    box: tuple[slice, ...] | None = None) -> np.ndarray:
    """Resample a smooth field to ``shape`` by interpolation (trilinear by default), float32.

    Uses the same grid convention as :func:`fourier_resample`; points past the last input voxel
    take the edge value. ``box`` (slices of the output grid, trilinear only): compute just that
    part of the output, with the same values as the whole, from the input voxels it needs.
    """
    volume = np.asarray(volume, dtype=np.float32)
    shape = tuple(int(s) for s in shape)
    if box is None and shape == volume.shape:
        return volume.copy()
    step = [n_in / n_out for n_in, n_out in zip(volume.shape, shape)]
    if order != 1:
        if box is not None:
            raise ValueError("linear_resample: a box needs order 1")
        return ndimage.affine_transform(volume, step, output_shape=shape, order=order,
                                        mode="nearest", prefilter=False).astype(np.float32, copy=False)
    ranges = [(0, n) for n in shape] if box is None else [b.indices(n)[:2] for b, n in zip(box, shape)]
    for axis, ((start, stop), n_in, n_out) in enumerate(zip(ranges, volume.shape, shape)):  # one axis at a time
        if n_in != n_out or (start, stop) != (0, n_out):
            volume = _linear_along(volume, axis, n_in, n_out, start, stop)
    return volume


def _linear_along(volume: np.ndarray, axis: int, n_in: int, n_out: int, start: int, stop: int) -> np.ndarray:
    """Linear interpolation along one axis: output j (``start`` <= j < ``stop``) at input coordinate
    j * n_in / n_out, edge values beyond the last voxel. Two gathers and a blend, 10x faster than
    affine_transform."""
    position = np.arange(start, stop, dtype=np.float64) * (n_in / n_out)
    low = np.minimum(np.floor(position).astype(np.int64), n_in - 1)
    high = np.minimum(low + 1, n_in - 1)
    weight = np.clip(position - low, 0.0, 1.0).astype(np.float32)
    view = [1] * volume.ndim
    view[axis] = position.size
    weight = weight.reshape(view)
    a = np.take(volume, low, axis=axis)
    a *= 1.0 - weight
    a += np.take(volume, high, axis=axis) * weight
    return a
