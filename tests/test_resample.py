"""Fourier resampling keeps what the coarser grid can hold and the box length in Å."""

from __future__ import annotations

import numpy as np
import pytest

from cryores.resample import fourier_resample, linear_resample, shape_for_voxel_size


def band_limited(shape, max_freq_fraction, seed=0):
    """Random real field whose spectrum is zero beyond ``max_freq_fraction`` of Nyquist."""
    rng = np.random.default_rng(seed)
    spectrum = np.fft.rfftn(rng.normal(size=shape))
    freqs = np.meshgrid(*[np.fft.fftfreq(n) for n in shape[:2]], np.fft.rfftfreq(shape[2]), indexing="ij")
    radius = np.sqrt(sum(f ** 2 for f in freqs)) / 0.5
    spectrum[radius > max_freq_fraction] = 0
    return np.fft.irfftn(spectrum, s=shape, axes=(0, 1, 2)).astype(np.float32)


def test_shape_for_voxel_size_keeps_box_length():
    assert shape_for_voxel_size((100, 100, 100), (1.742,) * 3, 1.0) == (174, 174, 174)
    assert shape_for_voxel_size((64, 50, 40), (0.5, 1.0, 2.0), 1.0) == (32, 50, 80)


@pytest.mark.parametrize("shape_in, shape_out", [((32, 32, 32), (48, 40, 36)), ((33, 31, 30), (45, 47, 41))])
def test_upsample_then_downsample_is_identity_for_band_limited_maps(shape_in, shape_out):
    field = band_limited(shape_in, 0.8)
    back = fourier_resample(fourier_resample(field, shape_out), shape_in)
    np.testing.assert_allclose(back, field, atol=1e-4 * np.abs(field).max())


def test_upsampling_interpolates_on_the_shared_grid_convention():
    field = band_limited((32, 32, 32), 0.5)
    fine = fourier_resample(field, (64, 64, 64))
    np.testing.assert_allclose(fine[::2, ::2, ::2], field, atol=1e-4 * np.abs(field).max())


def test_mean_and_offset_are_preserved():
    field = band_limited((30, 30, 30), 0.6) + 7.0
    assert fourier_resample(field, (20, 24, 18)).mean() == pytest.approx(field.mean(), rel=1e-5)


def test_downsampling_removes_frequencies_the_new_grid_cannot_hold():
    n = 64
    x = np.arange(n)
    high = np.cos(2 * np.pi * 28 / n * x)  # 0.44 cycles/voxel: above the Nyquist of a 2x coarser grid
    field = np.broadcast_to(high[None, None, :], (n, n, n)).astype(np.float32)
    coarse = fourier_resample(field, (32, 32, 32))
    assert np.abs(coarse).max() < 1e-3  # no alias at 0.1 cycles/voxel


def test_linear_resample_of_constant_and_ramp():
    ramp = np.broadcast_to(np.arange(20, dtype=np.float32)[None, None, :], (10, 10, 20))
    up = linear_resample(ramp, (10, 10, 40))
    np.testing.assert_allclose(up[0, 0, :38:2], np.arange(19), atol=1e-5)
    assert linear_resample(np.full((8, 8, 8), 3.0), (5, 6, 7)).max() == pytest.approx(3.0)


@pytest.mark.parametrize("shape_out", [(40, 30, 17), (10, 30, 50)])
def test_linear_resample_of_a_box_gives_the_same_values_as_the_whole(shape_out):
    field = np.random.default_rng(3).normal(size=(20, 30, 25)).astype(np.float32)
    box = (slice(3, 9), slice(0, 30), slice(shape_out[2] - 5, shape_out[2]))  # one axis whole, one at the far edge
    whole = linear_resample(field, shape_out)
    np.testing.assert_array_equal(linear_resample(field, shape_out, box=box), whole[box])
    with pytest.raises(ValueError):
        linear_resample(field, shape_out, order=3, box=box)
