"""Half-map local resolution: FSC = 0.143 in a soft spherical window around sampled centres.

The classic estimator (as in Bsoft's blocres) for users who have two independent half maps,
and the label source for training. What makes it read true in low-resolution regions:

* **Pre-whitening** (spectral flattening) of both half maps by one radial filter: the strong
  low-frequency signal would otherwise leak, through the window's own spectrum, into the
  high-frequency shells and make blurred regions look far too good. A filter applied to both
  halves leaves the true per-shell FSC unchanged and only removes the leakage. The default
  flattens by the half maps' mean power (signal + noise); ``whiten="noise"`` uses the noise
  power from ``half1 - half2`` alone. Measured on 96^3 half maps with a designed per-shell SNR
  crossing FSC 0.143 at 3/5/8/12 Å (30 Å window): mean power gives 2.97/4.82/7.81/13.2 Å,
  noise power 2.95/4.58/7.03/9.42 Å (too good at low resolution, where the signal keeps
  dominating the noise-flattened spectrum), no flattening is worse still.
* **De-meaning** each window before tapering it, for the same reason (the DC term leaks too).

Windows are cut in batches from a strided view of the maps (no copies of the whole map),
Fourier transformed together, and the per-shell sums are one sparse matrix product. Centres lie
on a regular grid every ``step`` Å inside the (dilated) mask; the result is interpolated
trilinearly back to the full grid, clipped to [Nyquist, ``max_resolution``] inside the mask
and exactly 0 outside, like :func:`cryores.predict`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import scipy.fft
import scipy.sparse
from scipy import ndimage

from .errors import CryoResError
from .masking import automatic_mask, dilate, mask_from_array
from .mrc_io import check_output_path, read_half_maps, read_mask, write_maps
from .predict import Prediction, default_output_path
from .progress import ProgressArg, progress_reporter
from .summary import summarise
from .validation import as_voxel_size, check_density

FSC_THRESHOLD = 0.143
DEFAULT_WINDOW_A = 30.0
DEFAULT_MAX_RESOLUTION_A = 30.0
MIN_WINDOW_VOXELS = 12


WHITENING = ("halves", "noise", "none")


def whitening_filter(half1: np.ndarray, half2: np.ndarray, source: str = "halves") -> np.ndarray:
    """rfft-shaped filter 1/sqrt(power per radial shell), normalised to mean 1.

    source "halves": the mean power of the two half maps; "noise": the power of half1 - half2.
    Empty shells borrow the nearest filled one so the filter is finite everywhere.
    """
    shape = half1.shape
    if source == "noise":
        power_map = np.abs(scipy.fft.rfftn(half1 - half2, workers=-1)) ** 2
    else:
        power_map = np.abs(scipy.fft.rfftn(half1, workers=-1)) ** 2
        power_map += np.abs(scipy.fft.rfftn(half2, workers=-1)) ** 2
    radius = _radius_index(shape)
    n_shells = int(radius.max()) + 1
    power = np.bincount(radius.ravel(), weights=power_map.ravel(), minlength=n_shells)
    counts = np.bincount(radius.ravel(), minlength=n_shells)
    power = power / np.maximum(counts, 1)
    filled = power > 0
    power[~filled] = np.interp(np.flatnonzero(~filled), np.flatnonzero(filled), power[filled])
    gain = 1.0 / np.sqrt(power)
    gain /= gain[radius].mean()
    return gain[radius].astype(np.float32)


def _radius_index(shape: tuple[int, ...]) -> np.ndarray:
    """Integer radial frequency index (in units of the first axis' spacing) on an rfft grid."""
    freqs = [np.fft.fftfreq(n) * shape[0] for n in shape[:-1]] + [np.fft.rfftfreq(shape[-1]) * shape[0]]
    grids = np.meshgrid(*freqs, indexing="ij", sparse=True)
    return np.rint(np.sqrt(sum(g ** 2 for g in grids))).astype(np.int64)


def _whiten(volume: np.ndarray, gain: np.ndarray) -> np.ndarray:
    spectrum = scipy.fft.rfftn(volume, workers=-1)
    spectrum *= gain
    return scipy.fft.irfftn(spectrum, s=volume.shape, workers=-1).astype(np.float32)


def spherical_window(size: int, radius: float, edge: float) -> np.ndarray:
    """Cube of side ``size`` holding 1 inside ``radius - edge``, a cosine fall-off to 0 at ``radius``."""
    centre = (size - 1) / 2.0
    grid = np.indices((size,) * 3, dtype=np.float32) - centre
    r = np.sqrt((grid ** 2).sum(axis=0))
    inner = radius - edge
    window = np.clip((radius - r) / max(edge, 1e-6), 0.0, 1.0)
    window = np.where(r <= inner, 1.0, 0.5 - 0.5 * np.cos(np.pi * window))
    return window.astype(np.float32)


def _shell_matrix(size: int, voxel_size: tuple[float, float, float]) -> tuple[scipy.sparse.csr_matrix, np.ndarray]:
    """Sparse (rfft coefficients x shells) indicator matrix and each shell's frequency in 1/Å.

    Shells are 1/(size * mean voxel) wide; anisotropic voxels are handled by measuring each
    coefficient's frequency in physical units. Shell 0 (the mean) is left out.
    """
    freqs = [np.fft.fftfreq(size, d=voxel_size[0]), np.fft.fftfreq(size, d=voxel_size[1]),
             np.fft.rfftfreq(size, d=voxel_size[2])]
    grids = np.meshgrid(*freqs, indexing="ij")
    physical = np.sqrt(sum(g ** 2 for g in grids)).ravel()
    spacing = 1.0 / (size * float(np.mean(voxel_size)))
    shell = np.rint(physical / spacing).astype(np.int64)
    n_shells = size // 2 + 1
    keep = (shell >= 1) & (shell < n_shells)
    matrix = scipy.sparse.csr_matrix((np.ones(int(keep.sum()), np.float32), (np.flatnonzero(keep), shell[keep])),
                                     shape=(physical.size, n_shells))
    return matrix, np.arange(n_shells) * spacing


def fsc_crossing(fsc: np.ndarray, shell_freq: np.ndarray, threshold: float = FSC_THRESHOLD) -> np.ndarray:
    """Frequency (1/Å) where each row of ``fsc`` (batch x shells) first falls below ``threshold``.

    Linear interpolation between the last shell above and the first below. Rows that never
    fall return the last shell's frequency (resolved to Nyquist); rows below already at shell 1
    return 0 (nothing resolved).
    """
    below = fsc[:, 1:] < threshold
    first = np.where(below.any(axis=1), below.argmax(axis=1) + 1, fsc.shape[1])
    result = np.empty(len(fsc), dtype=np.float64)
    never = first >= fsc.shape[1]
    result[never] = shell_freq[-1]
    at_start = first == 1
    result[at_start] = 0.0
    mid = ~never & ~at_start
    rows = np.flatnonzero(mid)
    s = first[mid]
    hi, lo = fsc[rows, s - 1], fsc[rows, s]
    fraction = np.clip((hi - threshold) / np.maximum(hi - lo, 1e-12), 0.0, 1.0)
    result[mid] = shell_freq[s - 1] + fraction * (shell_freq[s] - shell_freq[s - 1])
    return result


def local_fsc(
    half1: np.ndarray,
    half2: np.ndarray,
    voxel_size: float | Sequence[float],
    mask: np.ndarray | None = None,
    *,
    window: float = DEFAULT_WINDOW_A,
    step: float | None = None,
    threshold: float = FSC_THRESHOLD,
    whiten: str = "halves",
    max_resolution: float = DEFAULT_MAX_RESOLUTION_A,
    batch_size: int = 512,
    progress: ProgressArg = False,
) -> Prediction:
    """Local resolution (Å) from two half maps by windowed FSC.

    window: diameter of the soft spherical window in Å (at least 12 voxels). step: spacing of
    the window centres in Å (default window / 5). mask: > 0.5 inside; None computes the
    automatic mask of the half-map average. whiten: "halves" (default), "noise" or "none"
    (see the module docstring). Raises CryoResError if the half maps differ in
    shape, are not valid maps, are identical, or the window does not fit the box.
    """
    voxel = as_voxel_size(voxel_size)
    half1 = check_density(half1, "half map 1")
    half2 = check_density(half2, "half map 2")
    if half1.shape != half2.shape:
        raise CryoResError(f"half maps differ in shape: {half1.shape} and {half2.shape}")
    if not window > 0:
        raise CryoResError(f"window must be a positive number of Å, got {window}")
    size = max(MIN_WINDOW_VOXELS, int(np.ceil(window / min(voxel))))
    size += size % 2
    if size > min(half1.shape):
        raise CryoResError(f"a {window:g} Å window ({size} voxels) does not fit in a box of {half1.shape}")
    step_voxels = max(1, int(round((step or window / 5.0) / float(np.mean(voxel)))))
    average = 0.5 * (half1 + half2)
    mask = automatic_mask(average, voxel) if mask is None else mask_from_array(mask, half1.shape)
    del average

    if whiten not in WHITENING:
        raise CryoResError(f"whiten must be one of {', '.join(WHITENING)}, got {whiten!r}")
    if not np.any(half1 != half2):
        raise CryoResError("the two half maps are identical: no noise to estimate resolution from")
    if whiten != "none":
        gain = whitening_filter(half1, half2, whiten)
        half1, half2 = _whiten(half1, gain), _whiten(half2, gain)
        del gain

    coarse_shape = tuple(int(np.ceil(n / step_voxels)) for n in half1.shape)
    offset = [(n - 1 - (c - 1) * step_voxels) // 2 for n, c in zip(half1.shape, coarse_shape)]
    wanted = dilate(mask, (step_voxels,) * 3)
    grid = [off + step_voxels * np.arange(c) for off, c in zip(offset, coarse_shape)]
    centres = np.stack(np.meshgrid(*grid, indexing="ij"), axis=-1).reshape(-1, 3)
    selected = wanted[tuple(centres.T)]
    centres = centres[selected]
    if len(centres) == 0:
        raise CryoResError("the mask selects no window centre")

    half = size // 2
    pad = [(half, half)] * 3
    views = [np.lib.stride_tricks.sliding_window_view(np.pad(h, pad, mode="constant"), (size,) * 3)
             for h in (half1, half2)]
    taper = spherical_window(size, size / 2.0, max(2.0, 0.15 * size))
    taper_sum = float(taper.sum())
    shells, shell_freq = _shell_matrix(size, voxel)

    freqs = np.empty(len(centres))
    with progress_reporter(progress, len(centres), "window", "local FSC") as bar:
        for start in range(0, len(centres), batch_size):
            idx = tuple(centres[start:start + batch_size].T)
            spectra = []
            for view in views:
                cubes = view[idx].astype(np.float32)  # corner = centre - half in the padded map
                means = (cubes * taper).sum(axis=(1, 2, 3)) / taper_sum
                cubes -= means[:, None, None, None]
                cubes *= taper
                spectra.append(scipy.fft.rfftn(cubes, axes=(1, 2, 3), workers=-1).reshape(len(cubes), -1))
            f1, f2 = spectra
            cross = (f1 * f2.conj()).real @ shells
            power1 = (np.abs(f1) ** 2) @ shells
            power2 = (np.abs(f2) ** 2) @ shells
            fsc = cross / np.sqrt(np.maximum(power1 * power2, 1e-30))
            freqs[start:start + len(cubes)] = fsc_crossing(np.asarray(fsc), shell_freq, threshold)
            if bar is not None:
                bar.update(len(cubes))

    nyquist = 2.0 * max(voxel)
    with np.errstate(divide="ignore"):
        values = np.where(freqs > 0, 1.0 / np.maximum(freqs, 1e-12), max_resolution)
    coarse = np.full(coarse_shape, np.nan, dtype=np.float32)
    coarse.ravel()[np.flatnonzero(selected)] = values
    missing = np.isnan(coarse)
    if missing.any():  # nearest computed centre, so interpolation near the mask edge is sound
        nearest = ndimage.distance_transform_edt(missing, return_distances=False, return_indices=True)
        coarse = coarse[tuple(nearest)]
    resolution = ndimage.affine_transform(coarse, [1.0 / step_voxels] * 3,
                                          offset=[-o / step_voxels for o in offset],
                                          output_shape=half1.shape, order=1, mode="nearest")
    np.clip(resolution, nyquist, max_resolution, out=resolution)
    resolution[~mask] = 0.0
    return Prediction(resolution.astype(np.float32), mask, None, summarise(resolution, mask),
                      f"local FSC {threshold:g}, {window:g} Å window", voxel)


def local_fsc_file(
    half1_path: str | os.PathLike,
    half2_path: str | os.PathLike,
    output: str | os.PathLike | None = None,
    *,
    mask: str | os.PathLike | None = None,
    voxel_size: float | None = None,
    force: bool = False,
    **options,
) -> tuple[Prediction, Path]:
    """Local FSC from two MRC half maps, written on half map 1's grid.

    output defaults to ``<half1 stem>_localfsc.mrc`` beside half map 1. Other options go to
    :func:`local_fsc`. Same guarantees as :func:`cryores.predict_file`: outputs checked before
    any work, written atomically, inputs never overwritten. Raises CryoResError for bad files,
    half maps not on one grid (shape, voxel size, axis order, placement), and a mask of another shape.
    """
    half1_path = Path(half1_path)
    output = Path(output) if output is not None else default_output_path(half1_path, "_localfsc")
    protected = tuple(Path(p) for p in (half1_path, half2_path, mask) if p is not None)
    check_output_path(output, force=force, protected=protected)
    first, second = read_half_maps(half1_path, half2_path, voxel_size=voxel_size)
    mask_array = read_mask(mask, first) if mask is not None else None
    result = local_fsc(first.data, second.data, first.voxel_size, mask_array, **options)
    write_maps([(output, result.resolution, f"cryores local FSC resolution (A), {result.model_name}")],
               first, force=force)
    return result, output
