"""Molecular masks: where in the box a local resolution means something.

A user's mask always wins (voxels with value > 0.5 are inside, so soft RELION-style masks work).
Without one, :func:`automatic_mask` applies this documented rule:

1. Low-pass the map with a Gaussian of sigma 2 Å (noise averages out, protein stays).
2. Estimate the solvent level and noise from the outer 10 % of the box on every side (box edges
   are solvent in a reconstruction): median ``m`` and robust sigma ``s`` = 1.4826 x MAD.
3. Threshold at ``m + max(4 s, 0.1 (p - m))`` where ``p`` is the 99.9th percentile of the
   low-passed map: clearly above noise, and for nearly noise-free maps not lower than 10 % of
   the strongest density, which keeps faint halos out.
4. Drop connected pieces smaller than 2 % of the largest one (noise specks), fill enclosed holes.
   If the largest piece is under 2000 Å^3 (less than a 2 kDa peptide's volume) there is no
   molecule, only noise: refuse and ask for a mask.
5. Dilate by 3 Å so that the surface of the molecule is inside.

Maps with voxels of 1 Å or finer are binned to about 2 Å first and the mask is interpolated
back: same rule, 8x fewer voxels.

Every step moves with ``a * map + b`` (a > 0), so the mask is invariant to scale and offset.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .errors import CryoResError

LOWPASS_SIGMA_A = 2.0
EDGE_FRACTION = 0.10
NOISE_SIGMAS = 4.0
PEAK_FRACTION = 0.10
MIN_PIECE_FRACTION = 0.02
DILATION_A = 3.0
MIN_MOLECULE_A3 = 2000.0
BIN_TO_A = 2.0


def _edge_shell(volume: np.ndarray, fraction: float) -> np.ndarray:
    """Values in the outer ``fraction`` of the box on each side (at least one voxel)."""
    widths = [max(1, int(round(n * fraction))) for n in volume.shape]
    inner = tuple(slice(w, n - w) for w, n in zip(widths, volume.shape))
    shell = np.ones(volume.shape, dtype=bool)
    shell[inner] = False
    return volume[shell]


def dilate(mask: np.ndarray, radius_voxels: tuple[float, ...]) -> np.ndarray:
    """Dilate a boolean mask by about ``radius`` voxels per axis.

    Thresholds a Gaussian-blurred copy at the value a flat edge reaches at distance ``radius``
    (2 sigma, so about 0.023): close to an exact Euclidean dilation for molecular surfaces, in
    one float32 array. scipy's distance transform needs ~7 bytes of int32/float64 per voxel
    more, too much for large boxes.
    """
    sigma = [max(r, 0.0) / 2.0 for r in radius_voxels]
    if max(sigma) == 0:
        return mask.copy()
    blurred = ndimage.gaussian_filter(mask.astype(np.float32), sigma=sigma, mode="constant")
    return blurred > 0.0228


def _bin(volume: np.ndarray, factor: int) -> np.ndarray:
    """Block means of ``factor``^3 voxels (the far edges padded by replication)."""
    padded_shape = [-(-n // factor) * factor for n in volume.shape]
    pad = [(0, p - n) for p, n in zip(padded_shape, volume.shape)]
    padded = np.pad(np.asarray(volume, dtype=np.float32), pad, mode="edge")
    blocks = padded.reshape(padded_shape[0] // factor, factor, padded_shape[1] // factor, factor,
                            padded_shape[2] // factor, factor)
    return blocks.mean(axis=(1, 3, 5), dtype=np.float32)


def _unbin(mask: np.ndarray, factor: int, shape: tuple[int, ...]) -> np.ndarray:
    """A mask from :func:`_bin`'s grid back on the original one: each block takes its value.

    Block replication rather than interpolation: 10x faster at 256^3, and the 1-voxel (2 Å)
    steps it leaves are far below the mask's 3 Å dilation.
    """
    fine = mask.repeat(factor, axis=0).repeat(factor, axis=1).repeat(factor, axis=2)
    return fine[tuple(slice(0, n) for n in shape)]


def automatic_mask(volume: np.ndarray, voxel_size: tuple[float, float, float]) -> np.ndarray:
    """Boolean molecular mask of a density map by the rule in this module's docstring.

    Maps finer than 1 Å are first binned to about 2 Å voxels: the rule works at 2-3 Å scales
    anyway, and it makes the mask 8x cheaper (1.6 s of 2.6 s at 256^3 went to filtering).
    Raises CryoResError if nothing stands out of the solvent.
    """
    factor = max(1, int(BIN_TO_A / max(voxel_size)))
    if factor > 1:
        coarse = automatic_mask(_bin(volume, factor), tuple(v * factor for v in voxel_size))
        return _unbin(coarse, factor, volume.shape)
    sigma = [LOWPASS_SIGMA_A / v for v in voxel_size]
    smooth = ndimage.gaussian_filter(np.asarray(volume, dtype=np.float32), sigma=sigma, mode="nearest")
    edge = _edge_shell(smooth, EDGE_FRACTION)
    solvent = float(np.median(edge))
    noise = 1.4826 * float(np.median(np.abs(edge - solvent)))
    peak = float(np.percentile(smooth, 99.9))
    if not peak > solvent:
        raise CryoResError("automatic mask: no density stands out of the solvent; give a mask with --mask")
    threshold = solvent + max(NOISE_SIGMAS * noise, PEAK_FRACTION * (peak - solvent))
    binary = smooth > threshold
    del smooth
    labels, n_pieces = ndimage.label(binary)
    if n_pieces == 0:
        raise CryoResError("automatic mask: no density stands out of the solvent; give a mask with --mask")
    sizes = np.bincount(labels.ravel())[1:]
    if sizes.max() * float(np.prod(voxel_size)) < MIN_MOLECULE_A3:
        raise CryoResError("automatic mask: only noise-sized specks stand out of the solvent; give a mask with --mask")
    keep = np.flatnonzero(sizes >= MIN_PIECE_FRACTION * sizes.max()) + 1
    binary = np.isin(labels, keep)
    del labels
    binary = ndimage.binary_fill_holes(binary)
    return dilate(binary, tuple(DILATION_A / v for v in voxel_size))


def mask_from_array(mask: np.ndarray, shape: tuple[int, ...], role: str = "mask") -> np.ndarray:
    """Boolean mask (> 0.5 is inside) from a user array. Raises CryoResError on bad shape/values."""
    mask = np.asarray(mask)
    if mask.shape != tuple(shape):
        raise CryoResError(f"{role} has shape {mask.shape} but the map has {tuple(shape)}")
    if mask.dtype != bool:
        if not np.all(np.isfinite(mask)):
            raise CryoResError(f"{role} contains NaN or infinite values")
        mask = mask > 0.5
    if not mask.any():
        raise CryoResError(f"{role} contains no voxel above 0.5")
    return mask
