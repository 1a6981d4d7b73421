"""Running a v3 (spectral) model over a map: features -> network -> floor -> back to the grid.

Features are computed once per map (:func:`cryores.spectral.compute_features`), the network
runs on the feature-grid voxels in and around the mask in chunks, its median is smoothed a
little (sigma ``SMOOTH_A``, inside the mask only, in ln Å), corrected by the model's calibrated
median shift and never allowed finer than the evidence floor
(:func:`cryores.spectral.evidence_floor`); then both the resolution and the uncertainty go back
to the input grid by trilinear interpolation.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from scipy import ndimage

from .masking import dilate
from .model_card import LoadedModel
from .resample import linear_resample
from .spectral import compute_features, evidence_floor

SMOOTH_A = 2.0
CHUNK = 65536
Z90 = 1.6449


def _masked_smooth(values: np.ndarray, mask: np.ndarray, sigma_voxels: tuple[float, ...]) -> np.ndarray:
    """Gaussian smoothing that averages only voxels inside ``mask`` (normalised convolution)."""
    weight = ndimage.gaussian_filter(mask.astype(np.float32), sigma_voxels, mode="nearest")
    total = ndimage.gaussian_filter(np.where(mask, values, 0.0).astype(np.float32), sigma_voxels, mode="nearest")
    return np.where(mask, total / np.maximum(weight, 1e-6), values)


def _fill_outside(values: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Values outside ``region`` take the nearest inside value, so interpolation at the mask's
    edge blends with neighbours instead of with zeros."""
    if region.all():
        return values
    _, index = ndimage.distance_transform_edt(~region, return_indices=True)
    return values[tuple(index)]


@torch.no_grad()
def spectral_predict(density: np.ndarray, voxel_size: tuple[float, float, float], mask: np.ndarray,
                     loaded: LoadedModel, device: torch.device,
                     on_progress: Callable[[int, int], None] | None = None,
                     reference: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(resolution Å, uncertainty Å) on the input grid, before clipping and zeroing outside.

    ``reference``: the automatic mask when the caller has it already (else computed here).
    """
    features = compute_features(density, voxel_size, mask, reference)
    grid_voxel = features.voxel_size
    region = dilate(features.mask, (2.0, 2.0, 2.0))  # two feature voxels of margin
    rows = torch.from_numpy(np.ascontiguousarray(features.features[:, region].T))
    network = loaded.network.to(device)
    outputs = []
    total = rows.shape[0]
    for start in range(0, total, CHUNK):
        outputs.append(network(rows[start:start + CHUNK].to(device)).cpu())
        if on_progress is not None:
            on_progress(min(start + CHUNK, total), total)
    quantiles = torch.cat(outputs).numpy() if outputs else np.zeros((0, 3), np.float32)
    grid_shape = features.mask.shape
    log_median = np.zeros(grid_shape, np.float32)
    log_low = np.zeros(grid_shape, np.float32)
    log_high = np.zeros(grid_shape, np.float32)
    log_low[region], log_median[region], log_high[region] = quantiles.T
    sigma = tuple(SMOOTH_A / v for v in grid_voxel)
    log_median = _masked_smooth(log_median, region, sigma)
    shift = np.float32(loaded.median_shift)
    floor = evidence_floor(features.features)
    resolution = np.maximum(np.exp(log_median - shift), floor)
    half_width = 0.5 * (np.exp(log_high - shift) - np.exp(log_low - shift)) * loaded.interval_scale
    std = (half_width / Z90).astype(np.float32)
    resolution = _fill_outside(resolution.astype(np.float32), region)
    std = _fill_outside(std, region)
    if grid_shape != density.shape:
        resolution = linear_resample(resolution, density.shape)
        std = linear_resample(std, density.shape)
    return resolution.astype(np.float32), std.astype(np.float32)
