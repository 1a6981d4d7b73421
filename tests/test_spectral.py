"""Spectral evidence (cryores.spectral) and the v3 network around it."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft
import torch

from conftest import cropped_deposit, synthetic_map
from cryores.fourier import spatial_frequency
from cryores.masking import automatic_mask
from cryores.model_card import load_model, save_model
from cryores.predict import predict
from cryores.spectral import (
    ABSENT,
    BANDS_A,
    FEATURE_VOXEL_A,
    N_BANDS,
    N_FEATURES,
    N_INPUTS,
    RATIO,
    WINDOW_FACTOR,
    WINDOW_MIN_A,
    _log_steps,
    band_weight,
    bands_present,
    compute_features,
    content_edge,
    evidence_floor,
    feature_grid,
    local_band_power,
    map_spectrum,
)
from cryores.spectral_inference import _fill_outside
from cryores.spectral_net import CROSSING_SNR, SpectralEnsemble, SpectralNet, pinball_loss, snr_crossings


@pytest.fixture(scope="module")
def molecule() -> tuple[np.ndarray, np.ndarray]:
    density = synthetic_map(shape=(56, 56, 56), n_atoms=900, noise=0.05, seed=2)
    return density, automatic_mask(density, (1.0, 1.0, 1.0))


def lowpass(density: np.ndarray, voxel: float, resolution: float) -> np.ndarray:
    keep = spatial_frequency(density.shape, (voxel,) * 3) <= 1.0 / resolution
    return scipy.fft.irfftn(scipy.fft.rfftn(density) * keep, s=density.shape).astype(np.float32)


def test_bands_add_up_to_one_between_the_first_and_last_centre():
    s = np.linspace(1.0 / BANDS_A[-1], 1.0 / BANDS_A[0], 500).astype(np.float32)
    total = sum(band_weight(s, d) for d in BANDS_A)
    np.testing.assert_allclose(total, 1.0, atol=3e-3)
    assert band_weight(np.float32([1.0 / 10.0]), 10.0)[0] == pytest.approx(1.0, abs=1e-4)


def test_bands_finer_than_nyquist_do_not_exist():
    present = bands_present((3.0, 3.0, 3.0))
    assert not present[np.array(BANDS_A) < 6.3].any() and present[np.array(BANDS_A) >= 6.3].all()
    assert bands_present((0.5, 0.5, 0.5)).all()
    density = synthetic_map(shape=(32, 32, 32), n_atoms=200, seed=1)
    features = compute_features(density, (3.0, 3.0, 3.0), automatic_mask(density, (3.0, 3.0, 3.0)))
    absent = ~features.present
    assert (features.features[:N_BANDS][absent] == ABSENT).all()  # marked absent, never interpolated
    assert (features.features[2 * N_BANDS:3 * N_BANDS][absent] == 0).all()


@pytest.mark.parametrize("voxel", [(1.0, 1.0, 1.0), (1.3, 1.7, 1.1)])
def test_local_band_power_matches_the_plain_computation_on_the_whole_grid(voxel):
    """Band-passed on the map's whole grid, squared, averaged with the Gaussian window and cropped
    onto the feature grid in one go: the cropped and padded grids must give the same numbers."""
    density = synthetic_map(shape=(48, 44, 40), n_atoms=500, noise=0.1, seed=4)
    grid, _ = feature_grid(density.shape, voxel)
    power, present = local_band_power(density, voxel, grid)
    spectrum = scipy.fft.rfftn(density.astype(np.float64))
    spectrum[0, 0, 0] = 0.0
    frequency = spatial_frequency(density.shape, voxel, dtype=np.float64)
    for j, centre in enumerate(BANDS_A):
        if not present[j]:
            assert not power[j].any()
            continue
        weight = band_weight(frequency.astype(np.float32), centre, _log_steps(frequency.astype(np.float32)))
        square = scipy.fft.irfftn(spectrum * weight, s=density.shape) ** 2
        sigma = max(WINDOW_MIN_A, WINDOW_FACTOR * centre)
        smoothed = scipy.fft.rfftn(square) * np.exp(-2.0 * np.pi ** 2 * sigma ** 2 * frequency ** 2)
        expected = np.maximum(fourier_resample_spectrum(smoothed, density.shape, grid), 0.0)
        scale = float(expected.max())
        np.testing.assert_allclose(power[j], expected, atol=2e-4 * scale, err_msg=f"band {centre} Å")


def fourier_resample_spectrum(spectrum: np.ndarray, shape: tuple[int, ...], grid: tuple[int, ...]) -> np.ndarray:
    """The real array of ``grid`` whose spectrum is ``spectrum`` (of a ``shape`` array) cropped."""
    from cryores.resample import resize_spectrum

    cropped = resize_spectrum(spectrum.astype(np.complex64), shape, grid)
    return scipy.fft.irfftn(cropped, s=grid) * (np.prod(grid) / np.prod(shape))


def test_filling_outside_the_region_takes_the_nearest_inside_value():
    rng = np.random.default_rng(5)
    region = np.zeros((30, 26, 22), bool)
    region[8:15, 6:20, 5:9] = True
    region[12:20, 10:12, 9:16] = True
    values = rng.normal(size=region.shape).astype(np.float32)
    filled, twice = _fill_outside(region, values, 2 * values)
    distance = ndimage_nearest(region)
    box = tuple(slice(a.min(), a.max() + 1) for a in np.nonzero(region))
    np.testing.assert_array_equal(filled[region], values[region])
    np.testing.assert_array_equal(filled[box], values[distance][box])  # exact within the region's box
    np.testing.assert_array_equal(twice, 2 * filled)
    assert filled[0, 0, 0] == filled[box[0].start, box[1].start, box[2].start]  # beyond it: the box's face


def ndimage_nearest(region: np.ndarray) -> tuple[np.ndarray, ...]:
    from scipy import ndimage

    return tuple(ndimage.distance_transform_edt(~region, return_indices=True)[1])


def test_feature_grid_is_the_maps_own_grid_when_coarse_and_about_2_A_when_fine():
    assert feature_grid((40, 50, 60), (3.0, 3.0, 3.0)) == ((40, 50, 60), (3.0, 3.0, 3.0))
    shape, voxel = feature_grid((100, 100, 100), (1.0, 1.0, 1.0))
    assert shape == (50, 50, 50) and voxel == pytest.approx((FEATURE_VOXEL_A,) * 3)


def test_features_are_invariant_to_scale_and_offset(molecule):
    density, mask = molecule
    a = compute_features(density, (1.0,) * 3, mask).features
    b = compute_features(37.0 * density - 4.0, (1.0,) * 3, mask).features
    np.testing.assert_allclose(a, b, atol=2e-3)


def test_a_low_passed_map_has_no_evidence_beyond_its_cut_off(molecule):
    density, mask = molecule
    for cut in (6.0, 10.0):
        features = compute_features(lowpass(density, 1.0, cut), (1.0,) * 3, mask)
        floor = evidence_floor(features.features)[features.mask]
        finer = np.array(BANDS_A) < cut / 1.25
        assert (features.features[:N_BANDS][finer][:, features.mask] < -4).all()
        assert np.median(floor) >= cut / 1.25


def test_the_content_edge_finds_a_low_pass_cut_to_one_shell_and_nyquist_on_a_raw_map(molecule):
    density, _ = molecule
    shell = 1.0 / 56.0  # 1 / box edge in Å: the shells' width
    assert content_edge(map_spectrum(density), density.shape, (1.0,) * 3) == 2.0  # noise to Nyquist
    for cut in (4.0, 7.0, 12.0):
        edge = content_edge(map_spectrum(lowpass(density, 1.0, cut)), density.shape, (1.0,) * 3)
        assert abs(1.0 / edge - 1.0 / cut) <= 0.5 * shell + 1e-9, (cut, edge)
    coarse = (1.0, 1.0, 2.5)  # the coarsest axis sets Nyquist
    assert content_edge(map_spectrum(density), density.shape, coarse) == pytest.approx(5.0)


def test_the_evidence_floor_never_goes_finer_than_the_content_edge(molecule):
    density, mask = molecule
    features = compute_features(lowpass(density, 1.0, 9.0), (1.0,) * 3, mask)
    assert 8.5 <= features.content_edge <= 9.5
    bands_only = evidence_floor(features.features)[features.mask]
    with_edge = evidence_floor(features.features, features.content_edge)[features.mask]
    assert bands_only.min() < features.content_edge  # the bands alone let some voxels through
    assert with_edge.min() >= np.float32(features.content_edge)
    assert (with_edge == np.maximum(bands_only, np.float32(features.content_edge))).all()


def test_noise_reference_only_where_the_solvent_holds_noise(molecule):
    density, mask = molecule
    raw = compute_features(density, (1.0,) * 3, mask)
    masked = compute_features(np.where(mask, density, 0.0), (1.0,) * 3, mask)
    assert raw.has_reference and raw.noise is not None and (raw.features[3 * N_BANDS] == 1).all()
    assert not masked.has_reference and (masked.features[N_BANDS:2 * N_BANDS] == 0).all()


def test_a_soft_masked_map_resampled_in_fourier_space_has_a_faint_solvent(molecule):
    """A deposit-like map (low-passed at 6 Å, soft-masked) Fourier-cropped by 1.5 is no longer one
    constant outside its mask: its solvent is read as a reference, but it spreads far less than
    the solvent of the same map unmasked (cryores.cautions.FAINT_SOLVENT)."""
    from cryores.cautions import FAINT_SOLVENT

    density, mask = molecule
    ringing, size = cropped_deposit()
    unmasked, _ = cropped_deposit(masked=False)
    voxel = (size,) * 3
    faint = compute_features(ringing, voxel, automatic_mask(ringing, voxel))
    noisy = compute_features(unmasked, voxel, automatic_mask(unmasked, voxel))
    assert faint.has_reference and faint.solvent_spread < FAINT_SOLVENT
    assert noisy.has_reference and noisy.solvent_spread > 10 * FAINT_SOLVENT
    # unchanged by the map's scale and offset, as every feature is (within float32's rounding of
    # values about 1e-5 of the offset)
    shifted = compute_features(3.0 * ringing + 2.0, voxel, automatic_mask(ringing, voxel))
    assert shifted.solvent_spread == pytest.approx(faint.solvent_spread, rel=0.1)
    masked = compute_features(np.where(mask, density, 0.0), (1.0,) * 3, mask)
    assert masked.solvent_spread is None  # no reference, nothing to measure


def test_quantiles_are_ordered_and_bounds_cost_only_below():
    torch.manual_seed(0)
    network = SpectralNet(N_FEATURES, (16,))
    q = network(torch.randn(200, N_FEATURES) * 3)
    assert (q[:, 0] < q[:, 1]).all() and (q[:, 1] < q[:, 2]).all()
    prediction = torch.tensor([[1.0, 2.0, 3.0]])
    bound = torch.tensor([True])
    assert float(pinball_loss(prediction, torch.tensor([0.5]), bound)) == 0.0  # all above the bound
    assert float(pinball_loss(prediction, torch.tensor([2.5]), bound)) > 0.0
    assert float(pinball_loss(prediction, torch.tensor([0.5]), torch.tensor([False]))) > 0.0


def test_a_network_may_read_the_context_only_of_maps_without_a_noise_reference(tmp_path):
    torch.manual_seed(0)
    network = SpectralNet(N_INPUTS, (16,), context_without_reference=True).eval()
    rows = torch.randn(6, N_INPUTS)
    rows[:3, 3 * N_BANDS] = 1.0  # these three maps have a noise reference
    rows[3:, 3 * N_BANDS] = 0.0
    other = rows.clone()
    other[:, N_FEATURES:] += 5.0  # another map-wide profile
    same = network(rows) == network(other)
    assert same[:3].all() and not same[3:].any()  # ignored with a reference, read without one
    card = {"name": "gated-v3", "voxel_size": FEATURE_VOXEL_A, "patch_size": 0, "normalisation": "spectral",
            "target": {"transform": "log", "mean": 0.0, "std": 1.0}, "resolution_range": [1.0, 30.0]}
    loaded = load_model(save_model(network, card, tmp_path / "card.json"))
    assert loaded.card["architecture"]["context_without_reference"] is True
    torch.testing.assert_close(loaded.network(other), network(other))
    with pytest.raises(ValueError, match="needs the map's context"):
        SpectralNet(N_FEATURES, (16,), context_without_reference=True)


def test_an_ensemble_averages_its_members_medians_and_widens_where_they_disagree(tmp_path, molecule):
    torch.manual_seed(3)
    members = [SpectralNet(N_FEATURES, (8,)).eval() for _ in range(2)]
    ensemble = SpectralEnsemble(members).eval()
    rows = torch.randn(50, N_FEATURES)
    each = torch.stack([member(rows) for member in members])
    joined = ensemble(rows)
    torch.testing.assert_close(joined[:, 1], each[:, :, 1].mean(dim=0))
    assert (joined[:, 0] < joined[:, 1]).all() and (joined[:, 1] < joined[:, 2]).all()
    # each side at least the members' root-mean-square side, and more where the medians part
    rms_high = ((each[:, :, 2] - each[:, :, 1]) ** 2).mean(dim=0).sqrt()
    assert (joined[:, 2] - joined[:, 1] >= rms_high - 1e-6).all()
    parted = (each[0, :, 1] - each[1, :, 1]).abs() > 0.05
    assert parted.any() and (joined[parted, 2] - joined[parted, 1] > rms_high[parted] + 1e-4).all()
    twins = SpectralEnsemble([members[0], members[0]]).eval()  # no disagreement: one member's quantiles
    torch.testing.assert_close(twins(rows), members[0](rows))
    card = {"name": "ensemble-v3", "voxel_size": FEATURE_VOXEL_A, "patch_size": 0, "normalisation": "spectral",
            "target": {"transform": "log", "mean": 0.0, "std": 1.0}, "resolution_range": [1.0, 30.0]}
    loaded = load_model(save_model(ensemble, card, tmp_path / "card.json"))
    assert loaded.spectral and loaded.card["architecture"]["members"] == 2
    torch.testing.assert_close(loaded.network(rows), joined)
    density, mask = molecule
    result = predict(density, 1.0, mask, model=loaded)
    assert result.resolution.shape == density.shape and np.isfinite(result.resolution[mask]).all()
    with pytest.raises(ValueError, match="share one architecture"):
        SpectralEnsemble([members[0], SpectralNet(N_FEATURES, (16,))])
    with pytest.raises(ValueError, match="at least two"):
        SpectralEnsemble([members[0]])


def test_snr_crossings_find_where_the_snr_ends_walking_from_coarse_to_fine(tmp_path):
    rows = torch.zeros(4, N_INPUTS)
    rows[:, 2 * N_BANDS:3 * N_BANDS] = 1.0  # every band present
    rows[:, 3 * N_BANDS] = 1.0  # with a noise reference
    levels = torch.tensor([0.0, 0.0, 0.0, 0.02, 0.05, 0.1, 0.2, 0.4, 0.8, 1.2, 1.5, 1.8, 2.0])  # log10 P/N, fine first
    rows[:, N_BANDS:2 * N_BANDS] = levels
    rows[1, N_BANDS + 1] = 1.0  # a lone noisy fine band: ignored, the walk from coarse stops before it
    rows[2, N_BANDS:2 * N_BANDS] = levels + 0.5  # more signal everywhere: every crossing finer
    rows[3, 3 * N_BANDS] = 0.0  # no noise reference: no crossing
    crossings = torch.exp(snr_crossings(rows))
    # T = 1.15 (log10 0.061) lies between 4.4 Å (0.05) and 5.5 Å (0.1), 0.786 of a band step from 5.5 Å
    assert float(crossings[0, 0]) == pytest.approx(BANDS_A[0] * RATIO ** (5 - 0.786), rel=1e-3)
    torch.testing.assert_close(crossings[1], crossings[0])
    assert (crossings[2] < crossings[0]).all() and (crossings[0, :-1] < crossings[0, 1:]).all()
    assert torch.allclose(crossings[3], torch.tensor(BANDS_A[0] * RATIO ** N_BANDS), rtol=1e-4)
    network = SpectralNet(N_INPUTS, (8,), snr_crossings=True)
    assert network.feature_mean.shape == (N_INPUTS + len(CROSSING_SNR),) and network(rows).shape == (4, 3)
    card = {"name": "crossing-v3", "voxel_size": FEATURE_VOXEL_A, "patch_size": 0, "normalisation": "spectral",
            "target": {"transform": "log", "mean": 0.0, "std": 1.0}, "resolution_range": [1.0, 30.0]}
    loaded = load_model(save_model(network, card, tmp_path / "card.json"))
    torch.testing.assert_close(loaded.network(rows), network.eval()(rows))


def test_spectral_model_predicts_on_the_input_grid_never_finer_than_evidence(tmp_path, molecule):
    torch.manual_seed(1)
    network = SpectralNet(N_FEATURES, (8,))
    network.target_mean.fill_(float(np.log(1.0)))  # a network that wants 1 Å everywhere
    card = {"name": "random-v3", "voxel_size": FEATURE_VOXEL_A, "patch_size": 0, "normalisation": "spectral",
            "target": {"transform": "log", "mean": 0.0, "std": 1.0}, "resolution_range": [1.0, 30.0]}
    model = load_model(save_model(network, card, tmp_path / "card.json"))
    assert model.spectral and model.card["architecture"]["type"] == "SpectralNet"
    density, mask = molecule
    cut = lowpass(density, 1.0, 10.0)
    result = predict(cut, 1.0, mask, model=model)
    assert result.resolution.shape == density.shape and result.uncertainty is not None
    inside = result.resolution[mask]
    assert (result.resolution[~mask] == 0).all() and inside.min() >= 2.0
    assert np.median(inside) >= 10.0 / 1.25 * 0.95  # the evidence floor, whatever the network says


def test_the_calibrated_median_shift_scales_the_network_median_but_never_the_floor(tmp_path, molecule):
    """A card's median_log_shift divides the network's median (and interval) by exp(shift);
    the evidence floor still holds wherever the shifted median would go below it."""
    torch.manual_seed(2)
    network = SpectralNet(N_FEATURES, (8,))
    network.target_mean.fill_(float(np.log(20.0)))  # coarse enough that the floor rarely binds
    card = {"name": "shifted-v3", "voxel_size": FEATURE_VOXEL_A, "patch_size": 0, "normalisation": "spectral",
            "target": {"transform": "log", "mean": 0.0, "std": 1.0}, "resolution_range": [1.0, 60.0]}
    density, mask = molecule
    plain = predict(density, 1.0, mask, model=load_model(save_model(network, card, tmp_path / "a.json")))
    card["calibration"] = {"median_log_shift": float(np.log(1.5))}
    shifted_model = load_model(save_model(network, card, tmp_path / "b.json"))
    assert shifted_model.median_shift == pytest.approx(np.log(1.5))
    shifted = predict(density, 1.0, mask, model=shifted_model)
    ratio = shifted.resolution[mask] / plain.resolution[mask]
    assert np.median(ratio) == pytest.approx(1 / 1.5, rel=0.02)
    assert (ratio <= 1.0 + 1e-5).all()
    assert shifted.resolution[mask].min() >= 2.0  # never finer than Nyquist after the shift
    assert np.median(shifted.uncertainty[mask] / plain.uncertainty[mask]) == pytest.approx(1 / 1.5, rel=0.02)
    # a card with a shift per path applies the one of the map's path (this map's solvent holds noise)
    assert shifted.noise_reference is True
    for own, other in ((np.log(1.5), 0.0), (0.0, np.log(1.5))):
        by_reference = {"with": own, "without": other}
        card["calibration"] = {"median_log_shift": 0.3, "median_log_shift_by_reference": by_reference}
        by_path = load_model(save_model(network, card, tmp_path / "c.json"))
        assert by_path.median_shift_for(True) == own and by_path.median_shift_for(False) == other
        expected = shifted if own else plain
        got = predict(density, 1.0, mask, model=by_path).resolution
        np.testing.assert_allclose(got, expected.resolution, rtol=1e-6)
    assert shifted_model.median_shift_for(False) == shifted_model.median_shift  # one shift: both paths


def test_adaptive_smoothing_keeps_fine_detail_and_evens_out_coarse_scatter():
    from cryores.spectral_inference import adaptive_smooth

    rng = np.random.default_rng(0)
    shape = (48, 48, 48)
    fine = (np.log(3.0) + 0.1 * rng.standard_normal(shape)).astype(np.float32)  # a 3 Å map, scatter ±10 %
    coarse = (np.log(15.0) + 0.1 * rng.standard_normal(shape)).astype(np.float32)
    region = np.ones(shape, bool)
    voxel = (2.0, 2.0, 2.0)
    fine_out = adaptive_smooth(fine, region, voxel)
    coarse_out = adaptive_smooth(coarse, region, voxel)
    inner = (slice(12, 36),) * 3
    # sigma grows with d: 3 Å keeps more scatter than 15 Å, and the level is kept
    assert coarse_out[inner].std() < 0.3 * fine_out[inner].std()
    assert abs(float(np.exp(np.median(coarse_out))) - 15.0) < 0.5
    assert abs(float(np.exp(np.median(fine_out))) - 3.0) < 0.1
    # a step from 3 to 15 Å stays a step: the fine side is not pulled toward the coarse one
    step = np.where(np.arange(48)[:, None, None] < 24, np.log(3.0), np.log(15.0)).astype(np.float32)
    out = np.exp(adaptive_smooth(np.broadcast_to(step, shape).copy(), region, voxel))
    assert out[:18].max() < 3.5 and out[30:].min() > 9.0
    # the bounding-box crop and skipped levels change nothing: the same as every level on the whole array
    from cryores.spectral_inference import SMOOTH_FRACTION, SMOOTH_SIGMAS_A, _masked_smooth

    values = (np.log(6.0) + 0.4 * rng.standard_normal(shape)).astype(np.float32)
    for box, spacing in ((np.s_[5:30, 10:40, 0:20], (1.3, 2.0, 3.1)), (np.s_[10:38, 12:36, 8:40], voxel)):
        region = np.zeros(shape, bool)
        region[box] = True  # touches an array face in the first case, none in the second
        full = [_masked_smooth(values, region, tuple(s / v for v in spacing)) for s in SMOOTH_SIGMAS_A]
        position = np.log2(np.clip(SMOOTH_FRACTION * np.exp(full[0]), 2.0, 16.0) / 2.0)
        lower = np.minimum(np.floor(position).astype(int), 2)
        stack = np.stack(full)
        expected = ((1 - (position - lower)) * np.take_along_axis(stack, lower[None], 0)[0]
                    + (position - lower) * np.take_along_axis(stack, lower[None] + 1, 0)[0])
        np.testing.assert_allclose(adaptive_smooth(values, region, spacing)[region], expected[region], rtol=1e-5)
    # outside the region nothing changes
    region = np.ones(shape, bool)
    region[:, :, :8] = False
    kept = adaptive_smooth(coarse, region, voxel)
    assert np.array_equal(kept[:, :, :8], coarse[:, :, :8])


def test_network_inputs_are_the_voxels_features_then_the_maps_context(molecule):
    from cryores.spectral import N_CONTEXT, N_INPUTS, network_inputs

    density, mask = molecule
    features = compute_features(density, (1.0, 1.0, 1.0), mask)
    inside = features.mask.ravel()
    rows = network_inputs(features, inside)
    assert rows.shape == (int(inside.sum()), N_INPUTS) and rows.dtype == np.float32
    np.testing.assert_array_equal(rows[:, :N_FEATURES], features.features.reshape(N_FEATURES, -1)[:, inside].T)
    np.testing.assert_allclose(rows[0, N_FEATURES:], np.median(rows[:, :N_CONTEXT], axis=0), rtol=1e-5)
    assert (rows[:, N_FEATURES:] == rows[0, N_FEATURES:]).all()
    # the context is the map's, over the automatic mask: a user's zone of the molecule does not move it
    zone = mask & (np.arange(mask.shape[0]) < mask.shape[0] // 2)[:, None, None]
    np.testing.assert_array_equal(compute_features(density, (1.0, 1.0, 1.0), zone, reference=mask).context,
                                  features.context)
    assert network_inputs(features, np.flatnonzero(inside)[:5], "features").shape == (5, N_FEATURES)
    # the context follows the map: the same map low-passed at 8 Å has a lower fine-band profile
    cut = compute_features(lowpass(density, 1.0, 8.0), (1.0, 1.0, 1.0), mask)
    assert cut.context[4] < features.context[4] - 1.0  # the 4.4 Å band's log10 relative power


def test_neighbourhood_inputs_follow_the_context_and_are_the_gap_to_the_strongest_nearby(molecule):
    from cryores.spectral import N_INPUTS, N_INPUTS_NEIGHBOURHOOD, NEIGHBOURHOOD_A, neighbourhood_gap, network_inputs

    density, mask = molecule
    features = compute_features(density, (1.0, 1.0, 1.0), mask)
    where = np.flatnonzero(features.mask)
    rows = network_inputs(features, where, "neighbourhood")
    assert rows.shape == (where.size, N_INPUTS_NEIGHBOURHOOD)
    np.testing.assert_array_equal(rows[:, :N_INPUTS], network_inputs(features, where))
    np.testing.assert_array_equal(rows[:, N_INPUTS:], neighbourhood_gap(features, where))
    # against a direct maximum over the voxel's block of 2 (a 1.87 Å feature grid binned to 3.7 Å)
    # and the blocks within NEIGHBOURHOOD_A of it (ceil(8 / 3.73) = 3 either side)
    relative, grid = features.features[:N_BANDS], features.features.shape[1:]
    assert features.voxel_size[0] == pytest.approx(1.867, abs=1e-3) and NEIGHBOURHOOD_A == 8.0
    for i in where[:: max(1, where.size // 25)]:
        block = [c // 2 for c in np.unravel_index(i, grid)]
        box = tuple(slice(max(0, 2 * (b - 3)), 2 * (b + 4)) for b in block)
        expected = relative[(slice(None),) + box].max(axis=(1, 2, 3)) - relative.reshape(N_BANDS, -1)[:, i]
        expected[~features.present] = 0.0
        np.testing.assert_allclose(neighbourhood_gap(features, np.array([i]))[0], expected, atol=1e-6)
    assert (rows[:, N_INPUTS:] >= 0).all()


def test_percentile_inputs_follow_the_neighbourhood_and_are_the_maps_band_percentiles(molecule):
    from cryores.spectral import N_INPUTS_NEIGHBOURHOOD, N_INPUTS_PERCENTILES, band_percentiles, network_inputs

    density, mask = molecule
    features = compute_features(density, (1.0, 1.0, 1.0), mask)
    where = np.flatnonzero(features.mask)[::7]
    rows = network_inputs(features, where, "percentiles")
    assert rows.shape == (where.size, N_INPUTS_PERCENTILES)
    np.testing.assert_array_equal(rows[:, :N_INPUTS_NEIGHBOURHOOD], network_inputs(features, where, "neighbourhood"))
    assert features.has_reference  # a raw map: its solvent's noise sets the floor, the percentiles read 0
    assert (rows[:, N_INPUTS_NEIGHBOURHOOD:] == 0).all()
    masked = compute_features(np.where(mask, density, 0.0).astype(np.float32), (1.0, 1.0, 1.0), mask, reference=mask)
    assert not masked.has_reference
    rows = network_inputs(masked, where, "percentiles")
    # the same for every voxel: the map's, over its reference region (here the mask), not over the voxels asked for
    reference = masked.features[:N_BANDS, masked.mask].T
    np.testing.assert_allclose(rows[:, N_INPUTS_NEIGHBOURHOOD:], np.broadcast_to(band_percentiles(reference),
                               (where.size, N_INPUTS_PERCENTILES - N_INPUTS_NEIGHBOURHOOD)), rtol=1e-6)
    assert (rows[:, N_INPUTS_NEIGHBOURHOOD:] != 0).any()


def test_the_neighbourhood_gap_tells_power_leaked_from_a_better_resolved_neighbour():
    from scipy import ndimage

    from cryores.spectral import neighbourhood_gap

    # a field of detail everywhere (no solvent), with a slab (z 16-48 Å) that holds nothing finer than 9 Å
    rng = np.random.default_rng(5)
    density = ndimage.gaussian_filter(rng.normal(size=(64, 64, 64)).astype(np.float32), 0.5, mode="wrap")
    slab = ((np.arange(64) >= 16) & (np.arange(64) < 48))[:, None, None]
    stepped = np.where(slab, lowpass(density, 1.0, 9.0), density).astype(np.float32)
    features = compute_features(stepped, (1.0, 1.0, 1.0), np.ones(stepped.shape, bool))
    assert features.voxel_size == (2.0, 2.0, 2.0)
    band = BANDS_A.index(2.812)
    gap = neighbourhood_gap(features, np.arange(features.mask.size))[:, band].reshape(features.mask.shape)
    relative = features.features[band]
    coarse = np.s_[10:22]  # 4 Å and more inside the slab
    fine = np.r_[0:4, 28:32]  # 8 Å and more from it (the map is periodic)
    # the slab's 2.8 Å power is a leak: far above nothing, yet decades below its source nearby
    assert np.median(relative[coarse]) > -4.0 and np.median(gap[coarse]) > 1.0
    assert np.median(gap[fine]) < 0.2


def test_the_wide_neighbourhood_sees_detail_beyond_the_near_reach():
    from scipy import ndimage

    from cryores.spectral import (
        N_INPUTS_NEIGHBOURHOOD,
        N_INPUTS_WIDE,
        WIDE_NEIGHBOURHOOD_A,
        WIDE_NEIGHBOURHOOD_BIN_A,
        neighbourhood_gap,
        network_inputs,
    )

    # the same detail everywhere, a decade weaker in power inside a slab (z 16-48 Å): the slab's centre
    # lies 16 Å from the stronger detail, beyond the near reach (8 Å) and within the wide one (16 Å)
    rng = np.random.default_rng(5)
    density = ndimage.gaussian_filter(rng.normal(size=(64, 64, 64)).astype(np.float32), 0.5, mode="wrap")
    slab = ((np.arange(64) >= 16) & (np.arange(64) < 48))[:, None, None]
    stepped = np.where(slab, 0.3 * density, density).astype(np.float32)
    features = compute_features(stepped, (1.0, 1.0, 1.0), np.ones(stepped.shape, bool))
    where = np.arange(features.mask.size)
    rows = network_inputs(features, where, "wide_neighbourhood")
    assert rows.shape == (where.size, N_INPUTS_WIDE)
    np.testing.assert_array_equal(rows[:, :N_INPUTS_NEIGHBOURHOOD], network_inputs(features, where, "neighbourhood"))
    wide = rows[:, N_INPUTS_NEIGHBOURHOOD:]
    reach = (WIDE_NEIGHBOURHOOD_A, WIDE_NEIGHBOURHOOD_BIN_A)
    np.testing.assert_array_equal(wide, neighbourhood_gap(features, where, *reach))
    near = rows[:, N_INPUTS_NEIGHBOURHOOD - N_BANDS:N_INPUTS_NEIGHBOURHOOD]
    assert (wide >= near - 1e-6).all()  # the wide reach holds the near one
    band = BANDS_A.index(2.812)
    near_gap, wide_gap = (g[:, band].reshape(features.mask.shape) for g in (near, wide))
    centre, far = 16, np.s_[0:3]  # the slab's centre (32 Å); the stronger side, 10 Å and more from the slab
    assert np.median(near_gap[centre]) < 0.5 and np.median(wide_gap[centre]) > 1.0
    assert np.median(near_gap[far]) < 0.15 and np.median(wide_gap[far]) < 0.15


def test_band_percentiles_read_the_core_voxels_in_ascending_order():
    from cryores.spectral import MIN_CORE_VOXELS, N_PERCENTILES, PERCENTILES, SCALE_BANDS_FROM_A, band_percentiles

    rng = np.random.default_rng(0)
    coarse = np.array(BANDS_A) >= SCALE_BANDS_FROM_A
    core = rng.normal(-3.0, 1.0, size=(400, N_BANDS)).astype(np.float32)
    core[:, coarse] = 0.0  # each coarse band holds E: well inside the molecule
    shell = np.full((100, N_BANDS), -9.0, np.float32)  # a mask's solvent shell: little power in any band
    got = band_percentiles(np.concatenate([core, shell]))
    assert got.shape == (N_PERCENTILES,)
    np.testing.assert_allclose(got, np.percentile(core, PERCENTILES, axis=0).ravel(), rtol=1e-6)
    assert (np.diff(got.reshape(len(PERCENTILES), N_BANDS), axis=0) >= 0).all()
    # too few core voxels to read: all the voxels count
    few = np.concatenate([core[:MIN_CORE_VOXELS - 1], shell])
    np.testing.assert_allclose(band_percentiles(few), np.percentile(few, PERCENTILES, axis=0).ravel(), rtol=1e-6)


def test_a_masked_maps_low_percentiles_measure_the_noise_inside_the_molecule(molecule):
    from cryores.spectral import PERCENTILES

    density, mask = molecule
    noise = np.random.default_rng(1).normal(size=density.shape).astype(np.float32)
    finest = int(np.argmax(bands_present((1.0, 1.0, 1.0))))
    lowest = []
    for level in (0.05, 0.8):  # noise inside the mask only, the solvent flattened to 0: no noise reference
        masked = np.where(mask, density + level * density[mask].std() * noise, 0.0).astype(np.float32)
        features = compute_features(masked, (1.0, 1.0, 1.0), mask)
        assert not features.has_reference
        lowest.append(features.percentiles.reshape(len(PERCENTILES), N_BANDS)[0, finest])
    assert lowest[1] > lowest[0] + 0.5  # 16x the noise power: the floor of the finest band rises


def test_input_layouts_are_named_by_their_width():
    from cryores.errors import CryoResError
    from cryores.spectral import (
        N_INPUTS,
        N_INPUTS_NEIGHBOURHOOD,
        N_INPUTS_PERCENTILES,
        N_INPUTS_WIDE,
        input_layout,
        network_inputs,
    )

    widths = (N_FEATURES, N_INPUTS, N_INPUTS_NEIGHBOURHOOD, N_INPUTS_WIDE, N_INPUTS_PERCENTILES)
    assert [input_layout(n, "m") for n in widths] == \
        ["features", "context", "neighbourhood", "wide_neighbourhood", "percentiles"]
    with pytest.raises(CryoResError, match=f"^m: {N_INPUTS + 1} inputs per voxel; this cryores gives {N_FEATURES}"):
        input_layout(N_INPUTS + 1, "m")
    with pytest.raises(CryoResError, match="input layout 'wide'"):
        network_inputs(None, np.arange(3), "wide")


@pytest.mark.parametrize("layout", ["context", "neighbourhood", "wide_neighbourhood", "percentiles"])
def test_a_model_with_context_runs_through_predict(tmp_path, molecule, layout):
    from cryores.spectral import LAYOUTS

    torch.manual_seed(3)
    network = SpectralNet(LAYOUTS[layout], (8,))
    network.target_mean.fill_(float(np.log(6.0)))
    card = {"name": "context-v3", "voxel_size": FEATURE_VOXEL_A, "patch_size": 0, "normalisation": "spectral",
            "target": {"transform": "log", "mean": 0.0, "std": 1.0}, "resolution_range": [1.0, 30.0]}
    density, mask = molecule
    result = predict(density, 1.0, mask, model=load_model(save_model(network, card, tmp_path / "card.json")))
    inside = result.resolution[mask]
    assert np.isfinite(inside).all() and inside.min() >= 2.0 and (result.resolution[~mask] == 0).all()


def test_a_model_of_another_input_width_is_refused_in_one_line(tmp_path, molecule):
    from cryores.errors import CryoResError

    network = SpectralNet(N_FEATURES + 1, (8,))
    card = {"name": "odd-v3", "voxel_size": FEATURE_VOXEL_A, "patch_size": 0, "normalisation": "spectral",
            "target": {"transform": "log", "mean": 0.0, "std": 1.0}, "resolution_range": [1.0, 30.0]}
    density, mask = molecule
    with pytest.raises(CryoResError, match=f"model odd-v3: {N_FEATURES + 1} inputs per voxel"):
        predict(density, 1.0, mask, model=load_model(save_model(network, card, tmp_path / "card.json")))
