"""The patch engine: one function runs a network over a whole volume in overlapping patches.

Like MONAI's ``sliding_window_inference``, :func:`sliding_window_predict` owns every knob
explicitly (patch size, overlap, batch size, blending, device, Monte-Carlo samples) so that the
callers stay short. Design:

* Overlapping patches blended with a Gaussian weight (highest in the patch centre, where the
  network sees the most context), so there are no seams; patch starts stay on the network's
  pooling grid so overlapping patches agree.
* Patches with no voxel of ``roi`` are never run (solvent costs nothing).
* Patches are cut, batched and accumulated on the fly: memory is the output accumulators plus
  one batch, never all patches.
* With ``mc_samples`` >= 2, every batch runs that many times with dropout on; the per-patch
  mean and variance (after ``transform``, so in output units) are blended like the mean.
* On the CPU the network runs in the channels-last memory layout, which oneDNN's 3-D
  convolutions and pooling prefer: predict() at 256^3 with the v1 architecture took 11.8 s
  instead of 18.5 s on 2 threads (1.57x), outputs equal to 3e-6 Å
  (``benchmarks/profile_predict.py`` measures it side by side).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from .errors import CryoResError
from .unet import enable_mc_dropout

# Switch for benchmarks/profile_predict.py, which measures the layout against the plain one.
CHANNELS_LAST_ON_CPU = True


@dataclass
class PatchResult:
    """Blended mean (and std with MC dropout) on the input grid; ``covered`` marks voxels
    that at least one patch predicted."""

    mean: np.ndarray
    std: np.ndarray | None
    covered: np.ndarray


def resolve_device(device: str) -> torch.device:
    """'auto' picks CUDA when available. Raises CryoResError for unknown or unavailable devices."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise CryoResError("device cuda requested but PyTorch sees no CUDA GPU; use --device cpu")
        return torch.device(device)
    raise CryoResError(f"unknown device {device!r}; use auto, cpu or cuda")


def patch_stride(patch: int, overlap: float, multiple: int = 1) -> int:
    """Step between patches: ``patch*(1-overlap)`` rounded to a multiple of ``multiple``.

    Keeping every patch start on the network's pooling grid (a multiple of 2**(levels-1)) makes
    all patches see a voxel with the same pooling phase. Without it a U-Net gives a voxel
    different answers from patches shifted by a non-multiple, which shows up as seams.
    """
    return multiple * max(1, int(round(patch * (1.0 - overlap) / multiple)))


def tiled_length(length: int, patch: int, stride: int) -> int:
    """Smallest padded length >= ``length`` that patches of this stride tile exactly."""
    if length <= patch:
        return patch
    return patch + -(-(length - patch) // stride) * stride


def gaussian_weight(patch: int, sigma_scale: float) -> np.ndarray:
    """Separable Gaussian importance map of side ``patch``, max 1, floored to stay positive."""
    centre = (patch - 1) / 2.0
    axis = np.exp(-0.5 * ((np.arange(patch) - centre) / (sigma_scale * patch)) ** 2)
    weight = axis[:, None, None] * axis[None, :, None] * axis[None, None, :]
    weight /= weight.max()
    return np.maximum(weight, 1e-3).astype(np.float32)


Region = tuple[slice, ...]


def _clipped(corner: tuple[int, ...], patch: int, shape: tuple[int, ...]) -> tuple[Region, Region]:
    """The part of a patch inside the volume: (slices in the volume, slices in the patch)."""
    inside = tuple(slice(s, min(s + patch, n)) for s, n in zip(corner, shape))
    local = tuple(slice(0, min(s + patch, n) - s) for s, n in zip(corner, shape))
    return inside, local


def _touches(roi: np.ndarray, corner: tuple[int, ...], patch: int, margin: int) -> bool:
    """Whether the patch, grown by ``margin`` voxels on every side, holds an roi voxel."""
    region = tuple(slice(max(0, s - margin), min(s + patch + margin, n)) for s, n in zip(corner, roi.shape))
    return bool(roi[region].any())


def _batches(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def sliding_window_predict(
    volume: np.ndarray,
    network: torch.nn.Module,
    *,
    patch_size: int,
    overlap: float = 0.5,
    batch_size: int = 4,
    roi: np.ndarray | None = None,
    roi_margin: int = 0,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    mc_samples: int = 0,
    sigma_scale: float = 0.125,
    pad_value: float = 0.0,
    device: str = "cpu",
    progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
) -> PatchResult:
    """Predict a whole volume with ``network`` in overlapping, Gaussian-blended patches.

    volume: 3-D float array (already normalised). roi: boolean array of the same shape; patches
    with no roi voxel within ``roi_margin`` voxels of them are skipped (None runs every patch),
    so every voxel within the margin of the roi gets a prediction. transform maps network output to
    the unit statistics are taken in. Patches reaching past the far end of the volume are
    filled with ``pad_value``, so that patches on a stride that is a multiple of the network's
    ``size_multiple`` tile it exactly. ``on_total`` receives the number of patches before the first runs and
    ``progress`` the number finished after each batch. Raises CryoResError for bad knobs.
    """
    if volume.ndim != 3:
        raise CryoResError(f"expected a 3-D volume, got shape {volume.shape}")
    if not 0.0 <= overlap < 1.0:
        raise CryoResError(f"overlap must be in [0, 1), got {overlap}")
    if patch_size < 1 or batch_size < 1:
        raise CryoResError("patch size and batch size must be positive")
    multiple = getattr(network, "size_multiple", 1)
    if patch_size % multiple:
        raise CryoResError(f"patch size {patch_size} must be a multiple of {multiple} for this network")
    if mc_samples == 1 or mc_samples < 0:
        raise CryoResError("Monte-Carlo dropout needs at least 2 samples (or 0 for none)")
    torch_device = resolve_device(device)
    transform = transform or (lambda t: t)

    shape = volume.shape
    stride = patch_stride(patch_size, overlap, multiple)
    # Patches tile a box padded at the far end, so every start stays on the pooling grid. The
    # padding is never allocated: each patch is cut from the volume and filled with pad_value.
    tiled = tuple(tiled_length(n, patch_size, stride) for n in shape)
    starts = [range(0, n - patch_size + 1, stride) for n in tiled]
    corners = [c for c in itertools.product(*starts)
               if roi is None or _touches(roi, c, patch_size, roi_margin)]
    if on_total:
        on_total(len(corners))

    weight = gaussian_weight(patch_size, sigma_scale)
    weight_t = torch.from_numpy(weight).to(torch_device)
    mean_sum = np.zeros(shape, dtype=np.float32)
    weight_sum = np.zeros(shape, dtype=np.float32)
    var_sum = np.zeros(shape, dtype=np.float32) if mc_samples else None

    was_training = network.training
    layout = (torch.channels_last_3d if CHANNELS_LAST_ON_CPU and torch_device.type == "cpu"
              else torch.contiguous_format)
    network.to(torch_device, memory_format=layout)
    if mc_samples:
        enable_mc_dropout(network)
    else:
        network.eval()
    try:
        with torch.inference_mode():
            for batch in _batches(corners, batch_size):
                regions = [_clipped(c, patch_size, shape) for c in batch]
                patches = np.full((len(batch), 1) + (patch_size,) * 3, pad_value, dtype=np.float32)
                for patch, (inside, local) in zip(patches, regions):
                    patch[0][local] = volume[inside]
                x = torch.from_numpy(patches).to(torch_device).contiguous(memory_format=layout)
                if mc_samples:
                    samples = torch.stack([transform(network(x)) for _ in range(mc_samples)])
                    mean, var = samples.mean(0), samples.var(0, unbiased=True)
                else:
                    mean, var = transform(network(x)), None
                mean = (mean[:, 0] * weight_t).cpu().numpy()
                var = (var[:, 0] * weight_t).cpu().numpy() if var is not None else None
                for i, (inside, local) in enumerate(regions):
                    mean_sum[inside] += mean[i][local]
                    weight_sum[inside] += weight[local]
                    if var is not None:
                        var_sum[inside] += var[i][local]
                if progress:
                    progress(len(batch))
    finally:
        network.train(was_training)
        network.to(memory_format=torch.contiguous_format)  # hand the network back as it came

    covered = weight_sum > 0
    np.divide(mean_sum, weight_sum, out=mean_sum, where=covered)
    mean_sum[~covered] = 0.0
    std = None
    if var_sum is not None:
        np.divide(var_sum, weight_sum, out=var_sum, where=covered)
        var_sum[~covered] = 0.0
        std = np.sqrt(np.maximum(var_sum, 0.0), out=var_sum)
    return PatchResult(mean_sum, std, covered)
