"""The low-pass cut found in a masked map's own spectrum (cryores.cut_finding).

Why it exists: a map without a noise reference reads least well as a whole, and its low-pass
cut, where the map shows one, sets its scale as a cut the user gives does (cryores.cut_scale).
The mask's edge spreads power past the cut, so what is looked for is the knee where the
spectrum's slope turns down; it must find the cut of a masked deposit and none in a map that
was never low-passed, noisy or masked.
"""

from __future__ import annotations

import mrcfile
import numpy as np
import pytest
import scipy.fft
from scipy import ndimage

from conftest import write_mrc
from cryores import cli, predict
from cryores.batch import _found_cut_matches
from cryores.cautions import NO_REFERENCE
from cryores.cut_finding import HALF_WIDTH, MIN_SHELLS, find_lowpass_cut, shell_power, spectrum_knee
from cryores.fourier import spatial_frequency
from cryores.local_filter import raised_cosine
from cryores.mrc_io import header_labels, read_map
from cryores.predict import read_resolution_labels, resolution_label

N = 112


def _molecule(seed: int = 0, bfactor: float = 60.0, n: int = N, voxel: float = 1.0,
              radius: float = 30.0) -> tuple[np.ndarray, np.ndarray]:
    """(map, soft mask): textured density inside an ellipsoid of ``radius`` Å on n³ voxels of
    ``voxel`` Å, its amplitudes falling as a B-factor does, and a deposit's soft mask around it
    (extended 5 Å, 2 Å edge)."""
    rng = np.random.default_rng(seed)
    frequency = spatial_frequency((n,) * 3, (voxel,) * 3)
    texture = scipy.fft.irfftn(scipy.fft.rfftn(rng.standard_normal((n,) * 3)) * np.exp(-bfactor * frequency ** 2 / 4),
                               s=(n,) * 3)
    z, y, x = (np.indices((n,) * 3) - n / 2) * voxel
    inside = x ** 2 + y ** 2 + (z / 1.3) ** 2 < radius ** 2
    density = texture * ndimage.gaussian_filter(inside.astype(float), 2.0 / voxel)
    grown = ndimage.binary_dilation(inside, iterations=max(1, round(5.0 / voxel)))
    mask = ndimage.gaussian_filter(grown.astype(float), 2.0 / voxel)
    return density.astype(np.float32), mask.astype(np.float32)


def _lowpass(density: np.ndarray, cut: float, voxel: float = 1.0) -> np.ndarray:
    """Low-passed at ``cut`` Å as deposits are: gain 1 up to 1/cut, a raised cosine to 0 at 1.05/cut."""
    frequency = spatial_frequency(density.shape, (voxel,) * 3)
    gain = raised_cosine(frequency, 1.0 / cut, 0.05 / cut)
    return scipy.fft.irfftn(scipy.fft.rfftn(density) * gain, s=density.shape).astype(np.float32)


def masked_deposit(cut: float, seed: int = 0) -> np.ndarray:
    density, mask = _molecule(seed)
    return _lowpass(density, cut) * mask


@pytest.mark.parametrize("cut", [3.5, 5.0])
def test_the_cut_of_a_masked_deposit_is_found_within_5_percent(cut):
    found = find_lowpass_cut(masked_deposit(cut), (1.0,) * 3)
    assert found == pytest.approx(cut, rel=0.05)


def test_a_cut_is_found_whatever_the_map_scale_and_offset():
    deposit = masked_deposit(5.0)
    found = find_lowpass_cut(deposit, (1.0,) * 3)
    assert find_lowpass_cut(deposit * 250.0 - 3.0, (1.0,) * 3) == pytest.approx(found, rel=1e-3)


def _coarse_deposit(n: int, voxel: float, cut: float | None) -> np.ndarray:
    """A strongly blurred, soft-masked molecule (radius 28 Å) on n³ voxels of ``voxel`` Å, low-passed
    at ``cut`` Å (None: never): a coarse deposit in a small box, where a cut lies near shell 10."""
    density, mask = _molecule(bfactor=150.0, n=n, voxel=voxel, radius=28.0)
    return (density if cut is None else _lowpass(density, cut, voxel)) * mask


@pytest.mark.parametrize("n, voxel, cut", [(40, 2.5, 10.0), (48, 2.0, 9.0)])
def test_a_coarse_cut_in_a_small_box_is_found_within_5_percent(n, voxel, cut):
    # there 12 % of the cut's frequency spans about one shell: the lines are fitted over 4 shells
    deposit = _coarse_deposit(n, voxel, cut)
    frequency, _ = shell_power(deposit, (voxel,) * 3)
    width = frequency[1] - frequency[0]
    assert np.log1p(MIN_SHELLS * width * cut) > HALF_WIDTH
    assert find_lowpass_cut(deposit, (voxel,) * 3) == pytest.approx(cut, rel=0.05)
    assert find_lowpass_cut(_coarse_deposit(n, voxel, None), (voxel,) * 3) is None  # never low-passed


def test_no_cut_is_found_in_maps_never_low_passed():
    density, mask = _molecule(1)
    noisy = density + np.random.default_rng(5).normal(0, 0.3 * density.std(), density.shape).astype(np.float32)
    assert find_lowpass_cut(noisy, (1.0,) * 3) is None  # a raw map: noise up to Nyquist
    assert find_lowpass_cut(density * mask, (1.0,) * 3) is None  # masked, its spectrum falling smoothly
    assert find_lowpass_cut(_molecule(2, bfactor=300.0)[0], (1.0,) * 3) is None  # strongly blurred


def test_a_map_too_small_for_a_knee_has_none():
    frequency, power = shell_power(masked_deposit(5.0)[:6, :6, :6], (1.0,) * 3)
    assert spectrum_knee(frequency, power, 2.0) == (None, 0.0)
    assert spectrum_knee(frequency[:1], power[:1], 2.0) == (None, 0.0)


def test_a_knee_at_nyquist_is_not_a_cut():
    # low-passed at 2.1 voxels, within NYQUIST_MARGIN of Nyquist: resampled maps roll off there too
    assert find_lowpass_cut(masked_deposit(2.1), (1.0,) * 3) is None


def test_the_shells_are_those_of_the_whole_spectrum():
    deposit = masked_deposit(5.0)
    frequency, power = shell_power(deposit, (1.0,) * 3)
    assert np.all(np.diff(frequency) > 0) and np.all(power > 0)
    spectrum = np.abs(np.fft.rfftn(deposit - deposit.mean())) ** 2
    shell = np.rint(spatial_frequency(deposit.shape, (1.0,) * 3) * N).astype(int)
    k = int(np.rint(frequency[10] * N))
    assert power[10] == pytest.approx(spectrum[shell == k].mean(), rel=1e-3)


def test_predict_scales_a_masked_deposit_to_the_cut_it_finds(spectral_model_card):
    deposit = masked_deposit(5.0)
    found = predict(deposit, 1.0, model=spectral_model_card)
    assert found.noise_reference is False
    assert found.found_cut == pytest.approx(5.0, rel=0.05)
    assert found.lowpass_cut is None  # none given
    given = predict(deposit, 1.0, model=spectral_model_card, lowpass_cut=found.found_cut)
    np.testing.assert_allclose(found.resolution, given.resolution, rtol=1e-6)  # read as if given
    assert found.cut_scale == pytest.approx(given.cut_scale)
    values = found.resolution[found.mask]
    assert values.min() >= found.found_cut * (1 - 1e-6)
    assert np.percentile(values, 20) == pytest.approx(found.found_cut, rel=0.02)
    assert any(f"{found.found_cut:.2f} Å" in caution for caution in found.cautions)
    assert NO_REFERENCE not in found.cautions

    off = predict(deposit, 1.0, model=spectral_model_card, find_cut=False)
    assert off.found_cut is None and off.cut_scale is None
    assert NO_REFERENCE in off.cautions
    assert not np.allclose(off.resolution[off.mask], values)


def test_a_given_cut_wins_and_maps_with_a_noise_reference_are_not_searched(spectral_model_card, density):
    deposit = masked_deposit(5.0)
    given = predict(deposit, 1.0, model=spectral_model_card, lowpass_cut=6.0)
    assert given.found_cut is None and given.lowpass_cut == 6.0
    raw = predict(density, 1.0, model=spectral_model_card)  # conftest's map: noisy solvent
    assert raw.noise_reference is True and raw.found_cut is None


def test_the_found_cut_goes_into_the_labels_and_comes_back(spectral_model_card):
    result = predict(masked_deposit(5.0), 1.0, model=spectral_model_card)
    facts = read_resolution_labels(resolution_label(result).split("\n"))
    assert facts.found_cut == pytest.approx(result.found_cut, rel=1e-5)
    assert facts.lowpass_cut is None and not facts.garbled
    assert facts.cut_scale == pytest.approx(result.cut_scale, rel=1e-5)


def test_the_cli_finds_the_cut_unless_told_not_to(tmp_path, spectral_model_card, capsys):
    path = tmp_path / "deposit.mrc"
    write_mrc(path, masked_deposit(5.0))
    assert cli.main(["predict", str(path), "-o", str(tmp_path / "found.mrc"), "--model",
                     str(spectral_model_card), "--quiet"]) == 0
    assert "found in its spectrum" in capsys.readouterr().err
    assert cli.main(["predict", str(path), "-o", str(tmp_path / "plain.mrc"), "--model",
                     str(spectral_model_card), "--quiet", "--no-cut-finding"]) == 0
    facts = {}
    for name in ("found", "plain"):
        with mrcfile.open(tmp_path / f"{name}.mrc", header_only=True) as mrc:
            facts[name] = read_resolution_labels(header_labels(mrc.header))
    assert facts["found"].found_cut == pytest.approx(5.0, rel=0.05)
    assert facts["plain"].found_cut is None and facts["plain"].cut_scale is None

    # a batch rerun keeps a file only if it was read with the search the rerun asks for
    source = read_map(path)
    for name, find_cut, kept in (("found", True, True), ("found", False, False), ("plain", False, True),
                                 ("plain", True, False)):
        result = read_map(tmp_path / f"{name}.mrc")
        inside = result.data > 0
        assert _found_cut_matches(facts[name].found_cut, path, result, inside, None, find_cut) is kept, (name, find_cut)
    assert source.data.shape == (N,) * 3
