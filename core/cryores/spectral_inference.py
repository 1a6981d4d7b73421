"""Running a v3 (spectral) model over a map: features -> network -> floor -> back to the grid.

Features are computed once per map (:func:`cryores.spectral.compute_features`), the network
runs on the feature-grid voxels in and around the mask (two feature voxels beyond it) in
chunks, its median is smoothed over those same voxels in ln Å over a window that grows with the
resolution it reads (:func:`adaptive_smooth`: sigma ``SMOOTH_FRACTION`` x d, as a resolution d
is only measurable over a window of about d),
corrected by the model's calibrated median shift and never allowed finer than the evidence floor
(:func:`cryores.spectral.evidence_floor`, with the map-wide content edge); then both the
resolution and the uncertainty go back to the input grid by trilinear interpolation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from .masking import dilate
from .model_card import LoadedModel
from .resample import linear_resample
from .spectral import compute_features, evidence_floor, input_layout, network_inputs
from .spectral_net import Z90

SMOOTH_SIGMAS_A = (2.0, 4.0, 8.0, 16.0)  # the smoothing stack: sigma doubles per level (adaptive_smooth needs it)
SMOOTH_FRACTION = 0.75  # sigma / local resolution; chosen on validation maps (README, "Models and model cards")
CHUNK = 65536


def _masked_smooth(values: np.ndarray, mask: np.ndarray, sigma_voxels: tuple[float, ...]) -> np.ndarray:
    """Gaussian smoothing that averages only voxels inside ``mask`` (normalised convolution)."""
    weight = ndimage.gaussian_filter(mask.astype(np.float32), sigma_voxels, mode="constant")
    total = ndimage.gaussian_filter(np.where(mask, values, 0.0).astype(np.float32), sigma_voxels, mode="constant")
    return np.where(mask, total / np.maximum(weight, 1e-6), values)


def adaptive_smooth(log_resolution: np.ndarray, region: np.ndarray, voxel_size: tuple[float, ...],
                    fraction: float = SMOOTH_FRACTION) -> np.ndarray:
    """Smooth ln-resolution inside ``region`` with a Gaussian whose sigma is ``fraction`` x the
    resolution read at each voxel (the first level's reading, before the calibrated shift, which
    moves it by a few %), within SMOOTH_SIGMAS_A.

    Fine regions keep their detail and coarse ones, whose evidence comes from a few wide waves,
    lose their voxel-to-voxel scatter. Done as a stack of smoothings at SMOOTH_SIGMAS_A,
    interpolated per voxel in log2(sigma): a handful of Gaussian filters instead of one per voxel,
    on the region's bounding box only (outside voxels weigh nothing), and no wider than needed.
    """
    out = log_resolution.astype(np.float32, copy=True)
    if not region.any():
        return out
    box = bounding_box(region)
    values, inside = log_resolution[box], region[box]
    levels = [_masked_smooth(values, inside, tuple(SMOOTH_SIGMAS_A[0] / v for v in voxel_size))]
    wanted = np.clip(fraction * np.exp(levels[0]), SMOOTH_SIGMAS_A[0], SMOOTH_SIGMAS_A[-1])
    widest = float(wanted[inside].max())
    for sigma in SMOOTH_SIGMAS_A[1:]:
        if sigma / 2.0 >= widest:  # no voxel wants this level (nor the one below it to blend toward)
            break
        levels.append(_masked_smooth(values, inside, tuple(sigma / v for v in voxel_size)))
    if len(levels) == 1:
        out[box] = np.where(inside, levels[0], values)
        return out
    position = np.log2(wanted / SMOOTH_SIGMAS_A[0]).astype(np.float32)
    lower = np.clip(np.floor(position).astype(np.int64), 0, len(levels) - 2)
    weight = np.clip(position - lower, 0.0, 1.0).astype(np.float32)
    stack = np.stack(levels)
    below = np.take_along_axis(stack, lower[None], 0)[0]
    above = np.take_along_axis(stack, lower[None] + 1, 0)[0]
    out[box] = np.where(inside, (1.0 - weight) * below + weight * above, values)
    return out


def bounding_box(region: np.ndarray) -> tuple[slice, ...]:
    """Slices of the smallest box holding ``region`` (which must not be empty)."""
    return ndimage.find_objects(region.astype(np.int8))[0]


def pad_to(values: np.ndarray, box: tuple[slice, ...], shape: tuple[int, ...]) -> np.ndarray:
    """``values`` (the contents of ``box``) placed in an array of ``shape``, each voxel outside the
    box taking the value of the nearest voxel on the box's faces."""
    widths = [(b.start, n - b.stop) for b, n in zip(box, shape)]
    return np.pad(values, widths, mode="edge") if any(w != (0, 0) for w in widths) else values


def _fill_outside(region: np.ndarray, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """Each array with its values outside ``region`` replaced by the nearest inside value, so
    interpolation at the mask's edge blends with neighbours instead of with zeros.

    One distance transform for all the arrays, on the region's bounding box (where the nearest
    inside voxel is exact); beyond the box, the value on the box's nearest face.
    """
    if region.all() or not region.any():
        return arrays
    box = bounding_box(region)
    _, index = ndimage.distance_transform_edt(~region[box], return_indices=True)
    index = tuple(index)
    return tuple(pad_to(values[box][index], box, values.shape) for values in arrays)


@dataclass
class SpectralParts:
    """What the network and the evidence say on the feature grid, before any calibration.

    ``log_median`` (ln Å, smoothed inside ``region`` by :func:`adaptive_smooth`),
    ``log_low``/``log_high`` (ln Å, the 5 and 95 % quantiles), ``floor`` (Å,
    :func:`cryores.spectral.evidence_floor` with the content edge), ``region`` (the feature-grid
    voxels the network ran on), ``has_reference`` (whether the solvent gave a noise spectrum),
    ``solvent_spread`` (:attr:`cryores.spectral.SpectralFeatures.solvent_spread`).
    Kept apart so that training can calibrate the shift and interval against the floor without
    running the network again.
    """

    log_median: np.ndarray
    log_low: np.ndarray
    log_high: np.ndarray
    floor: np.ndarray
    region: np.ndarray
    has_reference: bool = True
    solvent_spread: float | None = None

    def calibrated(self, shift: float, interval_scale: float, floored: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(resolution Å, std Å) on the feature grid: the median divided by exp(shift), never finer
        than the floor (unless ``floored`` is False); the 90 % half-width scaled by
        ``interval_scale``. Outside ``region`` each takes the nearest inside value."""
        factor = np.float32(np.exp(-shift))
        resolution = np.exp(self.log_median) * factor
        if floored:
            resolution = np.maximum(resolution, self.floor)
        half_width = 0.5 * (np.exp(self.log_high) - np.exp(self.log_low)) * factor * np.float32(interval_scale)
        return _fill_outside(self.region, resolution.astype(np.float32), (half_width / Z90).astype(np.float32))

    def filled_floor(self) -> np.ndarray:
        """The floor, outside ``region`` taking the nearest inside value (as the results do)."""
        return _fill_outside(self.region, self.floor.astype(np.float32))[0]


@torch.no_grad()
def spectral_parts(density: np.ndarray, voxel_size: tuple[float, float, float], mask: np.ndarray,
                   loaded: LoadedModel, device: torch.device,
                   on_progress: Callable[[int, int], None] | None = None,
                   reference: np.ndarray | None = None, mirror_cut_faces: bool = True) -> SpectralParts:
    """Features once per map, then the network over the feature-grid voxels in and around the mask
    (in chunks), and the evidence floor. ``reference``: the automatic mask if the caller has it;
    ``mirror_cut_faces``: see :func:`cryores.spectral.compute_features`."""
    # the card's input layout (older v3 cards read less); checked before the costly features
    layout = input_layout(loaded.network.n_features, f"model {loaded.card.get('name', '?')}")
    features = compute_features(density, voxel_size, mask, reference, mirror_cut_faces)
    region = dilate(features.mask, (2.0, 2.0, 2.0))  # two feature voxels of margin
    network = loaded.network.to(device)
    where = np.flatnonzero(region)
    outputs = []
    total = where.size
    for start in range(0, total, CHUNK):  # rows chunk by chunk: a map's percentiles make them wide
        rows = torch.from_numpy(network_inputs(features, where[start:start + CHUNK], layout))
        outputs.append(network(rows.to(device)).cpu())
        if on_progress is not None:
            on_progress(min(start + CHUNK, total), total)
    quantiles = torch.cat(outputs).numpy() if outputs else np.zeros((0, 3), np.float32)
    grid_shape = features.mask.shape
    log_median = np.zeros(grid_shape, np.float32)
    log_low = np.zeros(grid_shape, np.float32)
    log_high = np.zeros(grid_shape, np.float32)
    log_low[region], log_median[region], log_high[region] = quantiles.T
    log_median = adaptive_smooth(log_median, region, features.voxel_size)
    floor = evidence_floor(features.features, features.content_edge)
    return SpectralParts(log_median, log_low, log_high, floor, region, bool(features.has_reference),
                         features.solvent_spread)


def spectral_predict(density: np.ndarray, voxel_size: tuple[float, float, float], mask: np.ndarray,
                     loaded: LoadedModel, device: torch.device,
                     on_progress: Callable[[int, int], None] | None = None,
                     reference: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray, bool, float | None]:
    """(resolution Å, uncertainty Å, whether the map's solvent gave a noise reference, how far its
    values spread (:attr:`SpectralParts.solvent_spread`)) on the input grid, before clipping and
    zeroing outside (outside the mask's bounding box each is the value on the box's nearest face).

    ``reference``: the automatic mask when the caller has it already (else computed here).
    """
    parts = spectral_parts(density, voxel_size, mask, loaded, device, on_progress, reference)
    resolution, std = parts.calibrated(loaded.median_shift_for(parts.has_reference), loaded.interval_scale)
    if resolution.shape != density.shape:
        # interpolated over the mask's bounding box only; beyond it, the box's nearest face
        box = bounding_box(mask) if mask.any() else tuple(slice(0, n) for n in density.shape)
        resolution = pad_to(linear_resample(resolution, density.shape, box=box), box, density.shape)
        std = pad_to(linear_resample(std, density.shape, box=box), box, density.shape)
    return resolution.astype(np.float32), std.astype(np.float32), parts.has_reference, parts.solvent_spread
