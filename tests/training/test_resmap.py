"""The ResMap-style labeler on synthetic maps whose resolution is known by construction.

Maps are random densities inside a soft sphere, low-passed with a sharp spherical filter at a
designed cutoff, normalised to unit standard deviation inside the mask, plus white noise at a
fixed real-space SNR. Tolerances were set from measured values (docs/resmap_labeler.md).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft
from scipy import stats

from cryores.errors import CryoResError
from cryores_train.resmap import (
    _covariance_weights,
    benjamini_hochberg,
    likelihood_ratio,
    noise_power,
    resmap_local_resolution,
    sinusoid_filters,
    solvent_weight,
)

SHAPE = (48, 48, 48)


def _lowpass(volume: np.ndarray, cutoff: float) -> np.ndarray:
    """Sharp spherical low-pass at ``cutoff`` Å (1 Å voxels)."""
    f = [np.fft.fftfreq(n) for n in volume.shape[:2]] + [np.fft.rfftfreq(volume.shape[2])]
    radius2 = f[0][:, None, None] ** 2 + f[1][None, :, None] ** 2 + f[2][None, None, :] ** 2
    spectrum = scipy.fft.rfftn(volume) * (radius2 <= 1.0 / cutoff ** 2)
    return scipy.fft.irfftn(spectrum, s=volume.shape).astype(np.float32)


def _envelope(shape=SHAPE, radius_fraction=0.33) -> np.ndarray:
    c = [np.arange(n) - n / 2 for n in shape]
    d = np.sqrt(c[0][:, None, None] ** 2 + c[1][None, :, None] ** 2 + c[2][None, None, :] ** 2)
    return (0.5 * (1 - np.tanh((d - radius_fraction * min(shape)) / 2.0))).astype(np.float32)


def _with_noise(signal: np.ndarray, mask: np.ndarray, snr: float, rng) -> tuple[np.ndarray, tuple]:
    """Full map and two half maps whose average has noise of std (signal std in the mask) / snr."""
    signal = signal / signal[mask].std()
    sigma = np.sqrt(2.0) / snr
    halves = tuple(signal + rng.normal(0, sigma, signal.shape).astype(np.float32) for _ in range(2))
    return 0.5 * (halves[0] + halves[1]), halves


def band_limited(cutoff: float, snr: float = 1.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    envelope = _envelope()
    mask = envelope > 0.5
    signal = _lowpass(envelope * rng.standard_normal(SHAPE).astype(np.float32), cutoff)
    full, halves = _with_noise(signal, mask, snr, rng)
    return full, mask, halves


def two_regions(seed: int = 0, snr: float = 1.0):
    """Left half (array axis 0) low-passed at 3.5 Å, right half at 7 Å, joined over about 4 Å."""
    rng = np.random.default_rng(seed)
    envelope = _envelope(radius_fraction=0.38)
    mask = envelope > 0.5
    white = envelope * rng.standard_normal(SHAPE).astype(np.float32)
    x = np.arange(SHAPE[0]) - SHAPE[0] / 2
    blend = (0.5 * (1 + np.tanh(x / 2.0)))[:, None, None].astype(np.float32)
    signal = (1 - blend) * _lowpass(white, 3.5) + blend * _lowpass(white, 7.0)
    full, halves = _with_noise(signal, mask, snr, rng)
    sharp = mask & (x[:, None, None] < -4)
    blurred = mask & (x[:, None, None] > 4)
    return full, mask, halves, sharp, blurred


def test_filters_are_blind_to_quadratic_density():
    kernels, offsets = sinusoid_filters(4.0, (1.0, 1.0, 1.0), SHAPE, 0.7)
    grids = np.meshgrid(*offsets, indexing="ij")
    for density in (np.ones_like(grids[0]), grids[0], grids[1] * grids[2], grids[2] ** 2):
        responses = np.tensordot(kernels, density, axes=3)
        assert np.abs(responses).max() < 1e-6 * np.abs(kernels).sum(axis=(1, 2, 3)).max()


def test_benjamini_hochberg_step_up():
    p = np.array([0.001, 0.008, 0.039, 0.041, 0.042, 0.06, 0.074, 0.205, 0.212, 0.216])
    assert benjamini_hochberg(p, 0.05).tolist() == [True, True] + [False] * 8
    assert not benjamini_hochberg(np.full(100, 0.5), 0.05).any()


@pytest.mark.parametrize("mode", ["half", "single"])
def test_statistic_is_chi_square_on_pure_noise(mode):
    rng = np.random.default_rng(3)
    h1, h2 = (rng.standard_normal(SHAPE).astype(np.float32) for _ in range(2))
    mask = _envelope() > 0.5
    average = 0.5 * (h1 + h2)
    if mode == "half":
        power = noise_power(0.5 * (h1 - h2), mask.astype(np.float32), (1.0,) * 3)
    else:
        power = noise_power(average, solvent_weight(mask, (1.0,) * 3), (1.0,) * 3)
    statistic, dof = likelihood_ratio(scipy.fft.rfftn(average), _covariance_weights(power, SHAPE), 3.0,
                                      (1.0,) * 3, SHAPE, np.flatnonzero(mask.ravel()), 0.7)
    assert dof == 12
    assert 0.85 < statistic.mean() / dof < 1.15  # measured 0.97 (half), 0.99 (single)
    assert (stats.chi2.sf(statistic, dof) < 0.01).mean() < 0.03  # nominal 0.01


@pytest.mark.parametrize("mode", ["half", "single"])
def test_pure_noise_is_almost_never_called(mode):
    rng = np.random.default_rng(1)
    h1, h2 = (rng.standard_normal(SHAPE).astype(np.float32) for _ in range(2))
    mask = _envelope() > 0.5
    halves = (h1, h2) if mode == "half" else None
    result = resmap_local_resolution(0.5 * (h1 + h2), 1.0, mask, half_maps=halves, max_resolution=10.0)
    assert (result[mask] > 0).mean() <= 0.10  # alpha 0.05 per trial resolution; measured 0-0.4 %
    assert np.all(result[~mask] == 0)


def test_band_limited_maps_read_near_their_cutoff_and_rank():
    medians = {}
    for cutoff in (4.0, 8.0):
        full, mask, _ = band_limited(cutoff, snr=1.0, seed=2)
        result = resmap_local_resolution(full, 1.0, mask, max_resolution=11.0)
        assert result.dtype == np.float32 and result.shape == full.shape
        assert np.all(result[~mask] == 0)
        assert (result[mask] > 0).mean() > 0.95
        medians[cutoff] = float(np.median(result[mask]))
        assert abs(medians[cutoff] - cutoff) <= 1.0, medians  # measured 4.5 and 7.5 (8.0 -> 6.0 without pre-whitening)
    assert medians[4.0] + 2.5 < medians[8.0]


def test_sharp_region_reads_finer_than_blurred_region():
    full, mask, _, sharp, blurred = two_regions()
    result = resmap_local_resolution(full, 1.0, mask, max_resolution=11.0)
    assert np.median(result[sharp]) <= 4.5  # measured 3.5
    assert np.median(result[blurred]) >= np.median(result[sharp]) + 1.5  # measured 6.0 vs 3.5


def test_half_map_mode_agrees_in_ordering():
    full, mask, halves, sharp, blurred = two_regions(seed=4)
    result = resmap_local_resolution(full, 1.0, mask, half_maps=halves, max_resolution=11.0)
    single = resmap_local_resolution(full, 1.0, mask, max_resolution=11.0)
    assert np.median(result[blurred]) >= np.median(result[sharp]) + 1.5
    assert abs(np.median(result[mask]) - np.median(single[mask])) <= 1.0


def test_automatic_mask_when_none_is_given():
    full, mask, _ = band_limited(4.0, snr=2.0, seed=5)
    full = full * _envelope(radius_fraction=0.36)  # solvent well below the molecule for the automatic mask
    result = resmap_local_resolution(full, 1.0, resolutions=[2.0, 3.0, 4.0, 5.0, 6.0])
    assert 0.2 < (result > 0).mean() < 0.9
    assert set(np.unique(result)) <= {0.0, 2.0, 3.0, 4.0, 5.0, 6.0}


@pytest.mark.parametrize("call, message", [
    (lambda m, k: resmap_local_resolution(m[0], 1.0, k), "3-D"),
    (lambda m, k: resmap_local_resolution(np.where(k, np.nan, m), 1.0, k), "NaN"),
    (lambda m, k: resmap_local_resolution(m, 1.0, k[:-1]), "shape"),
    (lambda m, k: resmap_local_resolution(m, 1.0, k, half_maps=(m, m[:-1])), "shape"),
    (lambda m, k: resmap_local_resolution(m, 1.0, k, half_maps=(m, m)), "identical"),
    (lambda m, k: resmap_local_resolution(m, 1.0, np.zeros_like(k)), "no voxel"),
    (lambda m, k: resmap_local_resolution(m, 0.0, k), "voxel size"),
    (lambda m, k: resmap_local_resolution(m, -1.0, k), "voxel size"),
    (lambda m, k: resmap_local_resolution(m, 1.0, k, alpha=0.0), "alpha"),
    (lambda m, k: resmap_local_resolution(m, 1.0, k, resolutions=[1.0, 3.0]), "Nyquist"),
])
def test_bad_input_raises_one_line_error(call, message):
    full, mask, _ = band_limited(4.0)
    with pytest.raises(CryoResError, match=message) as excinfo:
        call(full, mask)
    assert "\n" not in str(excinfo.value)
