"""The patch engine: blending, skipping, padding, batching, MC statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cryores.errors import CryoResError
from cryores.inference import gaussian_weight, patch_stride, sliding_window_predict, tiled_length


class CountingIdentity(torch.nn.Module):
    """Returns its input and counts the patches it saw (a stand-in network for engine tests)."""

    size_multiple = 1

    def __init__(self):
        super().__init__()
        self.patches = 0

    def forward(self, x):
        self.patches += x.shape[0]
        return x.clone()


def test_stride_stays_on_the_pooling_grid_and_tiling_covers_the_axis():
    assert patch_stride(32, 0.25, 1) == 24
    assert patch_stride(48, 0.7, 4) == 16  # 14.4 rounded to the pooling multiple
    assert patch_stride(16, 0.99, 8) == 8  # never 0
    assert tiled_length(20, 32, 16) == 32
    for length in (33, 64, 97):
        padded = tiled_length(length, 32, 12)
        assert padded >= length and (padded - 32) % 12 == 0 and padded - 12 < length


def test_gaussian_weight_peaks_in_the_centre_and_stays_positive():
    w = gaussian_weight(16, 0.125)
    assert w.max() == pytest.approx(1.0, abs=0.02) and w.min() > 0
    assert w[8, 8, 8] > w[0, 8, 8]


def test_identity_network_reproduces_the_volume_seamlessly():
    volume = np.random.default_rng(0).normal(size=(37, 41, 29)).astype(np.float32)
    result = sliding_window_predict(volume, CountingIdentity(), patch_size=16, overlap=0.5, batch_size=3)
    np.testing.assert_allclose(result.mean, volume, atol=1e-5)
    assert result.covered.all() and result.std is None


def test_patches_without_roi_are_skipped():
    volume = np.zeros((64, 64, 64), np.float32)
    roi = np.zeros_like(volume, dtype=bool)
    roi[5:10, 5:10, 5:10] = True
    net = CountingIdentity()
    totals = []
    result = sliding_window_predict(volume, net, patch_size=32, overlap=0.0, roi=roi, on_total=totals.append)
    assert net.patches == 1 == totals[0]
    assert result.covered[:32, :32, :32].all() and not result.covered[32:].any()


def test_small_volume_is_padded_and_cropped_back():
    volume = np.arange(10 * 12 * 14, dtype=np.float32).reshape(10, 12, 14)
    result = sliding_window_predict(volume, CountingIdentity(), patch_size=16, pad_value=-1.0)
    assert result.mean.shape == volume.shape
    np.testing.assert_allclose(result.mean, volume, atol=1e-4)


def test_mc_samples_give_mean_and_std(model):
    volume = np.random.default_rng(0).normal(size=(32, 32, 32)).astype(np.float32)
    torch.manual_seed(0)
    result = sliding_window_predict(volume, model.network, patch_size=32, mc_samples=8, transform=model.to_angstrom)
    assert result.std.shape == volume.shape and result.std.min() >= 0 and result.std.mean() > 0
    plain = sliding_window_predict(volume, model.network, patch_size=32, transform=model.to_angstrom)
    assert np.abs(result.mean - plain.mean).mean() < 0.5 * plain.mean.std() + 0.5
    assert not model.network.training  # the caller's mode is restored


@pytest.mark.parametrize("kwargs, match", [
    (dict(overlap=1.0), "overlap"), (dict(mc_samples=1), "at least 2"), (dict(patch_size=30), "multiple"),
    (dict(device="tpu"), "unknown device"),
])
def test_bad_knobs_are_refused(model, kwargs, match):
    options = dict(patch_size=32) | kwargs
    with pytest.raises(CryoResError, match=match):
        sliding_window_predict(np.zeros((32, 32, 32), np.float32), model.network, **options)


def test_cuda_without_gpu_is_a_clear_error(model):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(CryoResError, match="no CUDA GPU"):
        sliding_window_predict(np.zeros((32, 32, 32), np.float32), model.network, patch_size=32, device="cuda")


def test_roi_margin_runs_patches_next_to_the_roi():
    volume = np.zeros((64, 64, 64), np.float32)
    roi = np.zeros_like(volume, dtype=bool)
    roi[31, 10, 10] = True  # last voxel of the first patch along axis 0
    plain, grown = CountingIdentity(), CountingIdentity()
    sliding_window_predict(volume, plain, patch_size=32, overlap=0.0, roi=roi)
    result = sliding_window_predict(volume, grown, patch_size=32, overlap=0.0, roi=roi, roi_margin=2)
    assert plain.patches == 1 and grown.patches == 2
    assert result.covered[33, 10, 10]
