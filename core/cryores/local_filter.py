"""Local low-pass filtering: every region of a map filtered at its own local resolution.

Method (a bank of low-pass filters blended voxel by voxel):

1. Local resolution -> spatial frequency f = 1/d (1/Å) per voxel, clipped to Nyquist. Voxels
   without a value (outside the mask, or locres <= 0 / NaN) get the *worst* (largest) resolution
   found inside: solvent is smoothed as much as the least resolved part of the molecule, so no
   high-frequency noise is left around it. The frequency map is then smoothed with a Gaussian
   (sigma ``smooth`` Å, default 1) so neighbouring regions, and the mask edge, blend smoothly.
2. A ladder of low-pass filters evenly spaced in frequency (``step`` 1/Å apart, default 0.01,
   e.g. 3.00, 3.09, 3.19 ... Å) spans the range found. Each passes everything up to its
   cutoff f_c and falls with a raised cosine to 0 at ``f_c + edge`` (default edge = 2 steps),
   so neighbours overlap and a linear blend of two is again a soft low-pass in between.
3. Each voxel takes the linear interpolation (in frequency) of the two ladder maps nearest its
   own frequency. Levels are computed one at a time from one spectrum and added into the
   output where they are used, so memory holds one level, not the stack: about 40 bytes per
   voxel in all (5 GiB at 512^3).

Optional global sharpening: amplitudes times ``exp(-B s^2 / 4)`` (s in 1/Å), the structure-factor
B convention of RELION's ``--adhoc_bfac``: **B < 0 sharpens, B > 0 blurs**. It is applied with
the low-pass, so it never boosts frequencies beyond the local resolution.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.fft
from scipy import ndimage

from .errors import CryoResError
from .fourier import spatial_frequency
from .masking import mask_from_array
from .memory import check_bytes
from .mrc_io import check_output_path, check_same_grid, peek_grid, read_map, read_mask, write_maps
from .predict import default_output_path
from .progress import ProgressArg, progress_reporter
from .validation import as_voxel_size, check_density

DEFAULT_STEP = 0.01  # 1/Å between ladder levels
DEFAULT_SMOOTH_A = 1.0  # Gaussian sigma (Å) applied to the local frequency map
EDGE_STEPS = 2.0  # raised-cosine edge width, in ladder steps
MAX_LEVELS = 64
SLAB = 8  # planes blended at a time
MAX_GAIN = 1e20  # a B-factor boosting more than this overflows float32 spectra
# per voxel: spectrum + work buffer (2 x 4), filter gain and |s| on the rfft grid (2 x 2), density,
# output, level, position (4 x 4), level index (2), FFT scratch; 256^3 measured 36 with the input
BYTES_PER_VOXEL = 40


@dataclass
class FilteredMap:
    """Result of :func:`filter_map`.

    density: the locally filtered (and optionally sharpened) map, float32, input grid.
    mask: voxels that had a local resolution (the others were filtered at the worst one).
    levels: resolutions (Å) of the filter ladder, best first. bfactor: the B applied, or None.
    """

    density: np.ndarray
    mask: np.ndarray
    levels: np.ndarray
    bfactor: float | None

    def line(self) -> str:
        sharpen = f", B-factor {self.bfactor:g} Å²" if self.bfactor else ""
        return (f"locally filtered at {self.levels[0]:.2f}-{self.levels[-1]:.2f} Å "
                f"({len(self.levels)} levels{sharpen})")


def raised_cosine(frequency: np.ndarray, cutoff: float, edge: float, out: np.ndarray | None = None) -> np.ndarray:
    """Low-pass gain: 1 up to ``cutoff``, a raised-cosine fall to 0 at ``cutoff + edge`` (1/Å).

    The edge lies beyond the cutoff, as in RELION's low-pass filter: a region resolved to d Å
    keeps all of its signal up to 1/d.
    """
    out = np.subtract(frequency, cutoff, out=out, dtype=np.float32)
    out /= np.float32(max(edge, 1e-9))
    np.clip(out, 0.0, 1.0, out=out)
    out *= np.float32(np.pi)
    np.cos(out, out=out)
    out *= np.float32(0.5)
    out += np.float32(0.5)
    return out


def _check_locres(locres: np.ndarray, shape: tuple[int, ...], mask: np.ndarray | None) -> np.ndarray:
    """Boolean map of voxels with a usable local resolution (inside ``mask`` when given)."""
    locres = np.asarray(locres)
    if locres.shape != tuple(shape):
        raise CryoResError(f"local-resolution map has shape {locres.shape} but the map has {tuple(shape)}")
    if not np.issubdtype(locres.dtype, np.number) or np.iscomplexobj(locres):
        raise CryoResError(f"local-resolution map must hold real numbers, got {locres.dtype}")
    valid = np.isfinite(locres) & (locres > 0)
    if mask is not None:
        valid &= mask_from_array(mask, shape)
    if not valid.any():
        where = " inside the mask" if mask is not None else ""
        raise CryoResError(f"the local-resolution map has no value above 0{where}")
    return valid


def _ladder(f_low: float, f_high: float, step: float) -> np.ndarray:
    """Frequencies (1/Å) from ``f_low`` to ``f_high`` at most ``step`` apart (MAX_LEVELS at most)."""
    intervals = max(0, math.ceil((f_high - f_low) / step - 1e-9))
    intervals = min(intervals, MAX_LEVELS - 1)
    return np.linspace(f_low, f_high, intervals + 1) if intervals else np.array([f_high])


def local_frequency(locres: np.ndarray, valid: np.ndarray, voxel_size: tuple[float, float, float],
                    smooth: float) -> tuple[np.ndarray, float, float]:
    """Smoothed 1/resolution per voxel (worst resolution where invalid), and its (min, max)."""
    nyquist = 2.0 * max(voxel_size)
    inside = np.maximum(np.asarray(locres, dtype=np.float32)[valid], np.float32(nyquist))
    f_low, f_high = 1.0 / float(inside.max()), 1.0 / float(inside.min())
    frequency = np.full(valid.shape, f_low, dtype=np.float32)
    frequency[valid] = 1.0 / inside
    del inside
    if smooth > 0:
        frequency = ndimage.gaussian_filter(frequency, [smooth / v for v in voxel_size], mode="nearest")
    np.clip(frequency, f_low, f_high, out=frequency)
    return frequency, f_low, f_high


def _sharpening(s: np.ndarray, bfactor: float, s_max: float) -> np.ndarray:
    """exp(-B s^2 / 4) on the rfft grid, frozen beyond ``s_max`` (where every level is 0 anyway)."""
    if -bfactor * s_max ** 2 / 4.0 > math.log(MAX_GAIN):
        raise CryoResError(f"B-factor {bfactor:g} Å² boosts {1 / s_max:.2f} Å by more than {MAX_GAIN:g}; "
                           "use a smaller sharpening")
    clipped = np.minimum(s, np.float32(s_max))
    clipped *= clipped
    clipped *= np.float32(-bfactor / 4.0)
    return np.exp(clipped, out=clipped)


def _blend(output: np.ndarray, level: np.ndarray, i: int, lower: np.ndarray, frac: np.ndarray) -> None:
    """Add ladder level ``i`` where it is a voxel's lower (weight 1 - frac) or upper (frac) neighbour.

    Slab by slab, so the temporaries of the selections stay small whatever the box size.
    """
    for z in range(0, len(output), SLAB):
        part = slice(z, z + SLAB)
        out, values, fraction, index = output[part], level[part], frac[part], lower[part]
        above, below = index == i, index == i - 1
        out[above] += (1.0 - fraction[above]) * values[above]
        out[below] += fraction[below] * values[below]


def filter_map(
    density: np.ndarray,
    locres: np.ndarray,
    voxel_size: float | Sequence[float],
    mask: np.ndarray | None = None,
    bfactor: float | None = None,
    *,
    step: float = DEFAULT_STEP,
    edge: float | None = None,
    smooth: float = DEFAULT_SMOOTH_A,
    progress: ProgressArg = False,
    memory_limit: int | None = None,
) -> FilteredMap:
    """Low-pass filter each region of ``density`` at its local resolution (Å) in ``locres``.

    locres: same shape, Å; values <= 0 or NaN mean "no estimate" (cryores writes 0 outside
    its mask). mask: optional, > 0.5 inside; only locres values inside it are used. Voxels
    without a usable value are filtered at the worst resolution found. bfactor: global B (Å²)
    applied as exp(-B s^2/4): negative sharpens. step: ladder spacing (1/Å); edge: width of the
    raised-cosine edge (1/Å, default 2 steps); smooth: Gaussian sigma (Å) applied to the local
    frequency map. See the module docstring for the method.

    Raises CryoResError for bad maps (see :func:`cryores.predict`), a locres map of another
    shape or with no value > 0, a bad mask, bad knobs, an overflowing B-factor or a map too
    large for memory.
    """
    voxel = as_voxel_size(voxel_size)
    density = check_density(density)
    for name, value in (("step", step), ("edge", edge)):
        if value is not None and not (np.isfinite(value) and value > 0):
            raise CryoResError(f"{name} must be a positive number of 1/Å, got {value}")
    if not (np.isfinite(smooth) and smooth >= 0):
        raise CryoResError(f"smooth must be a number of Å >= 0, got {smooth}")
    if bfactor is not None and not np.isfinite(bfactor):
        raise CryoResError(f"B-factor must be a finite number of Å², got {bfactor}")
    check_bytes(density.size * BYTES_PER_VOXEL, memory_limit)
    valid = _check_locres(locres, density.shape, mask)
    frequency, f_low, f_high = local_frequency(locres, valid, voxel, smooth)
    levels = _ladder(f_low, f_high, step)
    spacing = float(levels[1] - levels[0]) if len(levels) > 1 else step
    edge = EDGE_STEPS * spacing if edge is None else edge

    spectrum = scipy.fft.rfftn(density, workers=-1)
    s = spatial_frequency(density.shape, voxel)
    if bfactor:
        spectrum *= _sharpening(s, bfactor, float(levels[-1]) + edge)

    # Each voxel lies between ladder levels `lower` and `lower + 1`, `frac` of the way up.
    position = frequency
    position -= np.float32(levels[0])
    position /= np.float32(spacing)
    np.clip(position, 0, len(levels) - 1, out=position)
    lower = np.minimum(position.astype(np.int16), max(len(levels) - 2, 0)).astype(np.int16, copy=False)
    frac = position
    frac -= lower
    counts = sum(np.bincount(lower[z:z + SLAB].ravel(), minlength=len(levels)) for z in range(0, len(lower), SLAB))
    needed = counts + np.concatenate([[0], counts[:-1]])  # as the lower or as the upper neighbour

    output = np.zeros(density.shape, dtype=np.float32)
    gain = np.empty(s.shape, dtype=np.float32)
    work = np.empty(spectrum.shape, dtype=spectrum.dtype)
    with progress_reporter(progress, len(levels), "level", "local filter") as bar:
        for i, cutoff in enumerate(levels):
            if needed[i]:
                raised_cosine(s, float(cutoff), edge, out=gain)
                np.multiply(spectrum, gain, out=work)
                level = scipy.fft.irfftn(work, s=density.shape, workers=-1, overwrite_x=True)
                _blend(output, level, i, lower, frac)
                del level
            if bar is not None:
                bar.update(1)
    return FilteredMap(output, valid, (1.0 / levels[::-1]).astype(np.float32), float(bfactor) if bfactor else None)


def filter_file(
    map_path: str | os.PathLike,
    locres_path: str | os.PathLike,
    output: str | os.PathLike | None = None,
    *,
    mask: str | os.PathLike | None = None,
    voxel_size: float | None = None,
    force: bool = False,
    **options,
) -> tuple[FilteredMap, Path]:
    """Locally filter an MRC map with an MRC local-resolution map; write it beside the map.

    output defaults to ``<map stem>_locfilt.mrc``. voxel_size overrides both headers. Other
    options go to :func:`filter_map`. Same guarantees as :func:`cryores.predict_file`: the output
    is checked before any work, written atomically with the map's voxel size, origin, nstart,
    axis order and cell, and inputs are never overwritten. Raises CryoResError for bad files,
    a locres map of another shape or voxel size, or a mask of another shape.
    """
    map_path, locres_path = Path(map_path), Path(locres_path)
    output = Path(output) if output is not None else default_output_path(map_path, "_locfilt")
    protected = tuple(Path(p) for p in (map_path, locres_path, mask) if p is not None)
    check_output_path(output, force=force, protected=protected)
    peek = peek_grid(map_path, voxel_size)
    if peek is not None:  # before reading: refuse a map too large for memory without loading it
        check_bytes(math.prod(peek[0]) * BYTES_PER_VOXEL, options.get("memory_limit"))
    density = read_map(map_path, voxel_size=voxel_size)
    locres = read_map(locres_path, role="local-resolution map", voxel_size=voxel_size)
    check_same_grid(locres, density, locres_path)
    mask_array = read_mask(mask, density) if mask is not None else None
    result = filter_map(density.data, locres.data, density.voxel_size, mask_array, **options)
    label = f"cryores local filter {result.levels[0]:.2f}-{result.levels[-1]:.2f} A"
    if result.bfactor:
        label += f", B {result.bfactor:g}"
    write_maps([(output, result.density, label)], density, force=force)
    return result, output
