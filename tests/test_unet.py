from __future__ import annotations

import math

import pytest
import torch

from cryores.model_card import load_model, save_model
from cryores.unet import SpectralFrontEnd, UNet3D, count_parameters, enable_mc_dropout, fold_batchnorm


@pytest.mark.parametrize("output_stride", [1, 2, 4])
def test_output_has_input_shape(output_stride):
    net = UNet3D((4, 8, 16), dropout=0.1, output_stride=output_stride).eval()
    assert net(torch.zeros(2, 1, 16, 24, 32)).shape == (2, 1, 16, 24, 32)


def test_bad_output_stride_is_refused():
    with pytest.raises(ValueError):
        UNet3D((4, 8, 16), output_stride=3)
    with pytest.raises(ValueError):
        UNet3D((4, 8, 16), output_stride=4 * 2)


def test_eval_is_deterministic_and_mc_dropout_is_not():
    torch.manual_seed(0)
    net = UNet3D((4, 8, 16), dropout=0.3).eval()
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        assert torch.equal(net(x), net(x))
        enable_mc_dropout(net)
        assert not torch.equal(net(x), net(x))
        assert not any(m.training for m in net.modules() if isinstance(m, torch.nn.BatchNorm3d))


def test_default_model_is_small_for_cpu():
    assert count_parameters(UNet3D()) < 1_000_000


def test_folding_batchnorm_keeps_the_outputs():
    torch.manual_seed(0)
    net = UNet3D((4, 8, 16), dropout=0.2)
    with torch.no_grad():  # give the norms non-trivial statistics, as after training
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    net.eval()
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        expected = net(x)
        folded = fold_batchnorm(net)
        assert not any(isinstance(m, torch.nn.BatchNorm3d) for m in folded.modules())
        torch.testing.assert_close(folded(x), expected, rtol=1e-4, atol=1e-5)


def test_spectral_frontend_band_power_follows_the_wavelength():
    """Plane waves: the strongest band and the coarse/fine power ratio move with the period."""
    frontend = SpectralFrontEnd(resolutions=(2.5, 3.5, 5.0, 7.0, 10.0), smoothing=3.0)
    z = torch.arange(48, dtype=torch.float32)
    strongest, ratios = [], []
    for period in (3.0, 4.0, 6.0, 8.0):
        wave = torch.cos(2 * math.pi * z / period).view(1, 1, 48, 1, 1).expand(1, 1, 48, 48, 48).contiguous()
        out = frontend(wave)
        assert out.shape == (1, 6, 48, 48, 48)
        torch.testing.assert_close(out[:, :1], wave)
        centre = out[0, 1:, 24, 24, 24]  # log power: > 2.5 Å, 2.5-3.5, 3.5-5, 5-7, 7-10 Å
        strongest.append(int(torch.argmax(centre)))
        ratios.append(float(centre[4] - centre[0]))
    assert strongest[0] == 0 and strongest[-1] == 4 and strongest == sorted(strongest)
    assert ratios == sorted(ratios) and ratios[-1] - ratios[0] > 5


def test_network_with_frontend_keeps_shapes_and_survives_the_card(tmp_path):
    torch.manual_seed(0)
    net = UNet3D((4, 8, 16), dropout=0.1, output_stride=2, frontend={"resolutions": [3.0, 6.0], "smoothing": 2.0})
    assert net.encoders[0][0].in_channels == 3
    card = {"name": "t", "voxel_size": 1.0, "patch_size": 32, "normalisation": "masked-zscore",
            "target": {"transform": "log", "mean": 1.6, "std": 0.3}, "resolution_range": [2.0, 15.0]}
    loaded = load_model(save_model(net.eval(), card, tmp_path / "card.json"))
    assert loaded.card["architecture"]["frontend"] == {"resolutions": [3.0, 6.0], "smoothing": 2.0}
    x = torch.randn(1, 1, 16, 24, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.network(x), net(x), rtol=1e-4, atol=1e-5)


def test_gaussian_blur_is_a_separable_filter_with_replicated_edges():
    """Against scipy's 1-D correlation with mode='nearest' (edge replication) along each axis."""
    import numpy as np
    from scipy import ndimage

    from cryores.unet import gaussian_blur, gaussian_kernel

    rng = np.random.default_rng(0)
    volume = rng.standard_normal((2, 3, 12, 17, 9)).astype(np.float32)
    sigma = 1.7
    taps = gaussian_kernel(sigma).numpy()
    expected = volume
    for axis in (2, 3, 4):
        expected = ndimage.correlate1d(expected, taps, axis=axis, mode="nearest")
    got = gaussian_blur(torch.from_numpy(volume), sigma).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
