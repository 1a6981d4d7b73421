from __future__ import annotations

import pytest
import torch

from cryores.unet import UNet3D, count_parameters, enable_mc_dropout, fold_batchnorm


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
