"""The public API on arrays and files, with small random-weight models (engine, not accuracy)."""

from __future__ import annotations

import mrcfile
import numpy as np
import pytest
import torch

from conftest import synthetic_map, write_mrc
from cryores import CryoResError, predict, predict_file
from cryores.resample import fourier_resample, linear_resample


@pytest.fixture(scope="module")
def big_density():
    return synthetic_map(shape=(64, 64, 64), n_atoms=600, seed=4)


@pytest.fixture(scope="module")
def reference(big_density, model):
    return predict(big_density, 1.0, model=model)


def test_output_conventions(reference, model):
    res, mask = reference.resolution, reference.mask
    assert res.shape == mask.shape == (64, 64, 64) and res.dtype == np.float32
    assert np.all(res[~mask] == 0)
    assert res[mask].min() >= 2.0 and res[mask].max() <= model.max_resolution
    assert res[mask].std() > 0.5  # the random model's output does vary (else the tests below prove nothing)
    s = reference.summary
    assert s.p5 <= s.median <= s.p95 and s.n_voxels == mask.sum()
    assert s.median == pytest.approx(float(np.median(res[mask])))
    assert reference.uncertainty is None


def test_invariant_to_scale_and_offset(big_density, reference, model):
    shifted = predict(0.01 * big_density - 3.0, 1.0, model=model)
    assert (shifted.mask == reference.mask).all()
    np.testing.assert_allclose(shifted.resolution, reference.resolution, atol=2e-3)


@pytest.mark.parametrize("patch_size, overlap", [(64, 0.5), (56, 0.5), (48, 0.7)])
def test_independent_of_patch_size_and_overlap(big_density, reference, model, patch_size, overlap):
    """Reference: the card's 48^3 patches at 0.5 overlap. A random network reacts strongly to
    patch borders, so this is a pessimistic check of the blending."""
    other = predict(big_density, 1.0, reference.mask, model=model, patch_size=patch_size, overlap=overlap)
    diff = np.abs(other.resolution - reference.resolution)[reference.mask]
    spread = reference.resolution[reference.mask].std()
    assert np.median(diff) < 0.05 * spread
    assert np.percentile(diff, 95) < 0.15 * spread


def test_same_map_at_another_voxel_size_gives_the_same_angstrom_map(big_density, reference, model):
    """Resample the map to 0.8 Å/px (as if collected finer) and compare on the common grid."""
    fine_shape = (80, 80, 80)
    fine_mask = linear_resample(reference.mask, fine_shape) >= 0.5
    fine = predict(fourier_resample(big_density, fine_shape), 0.8, fine_mask, model=model)
    back = linear_resample(fine.resolution, big_density.shape)
    interior = reference.mask & (linear_resample(fine_mask, big_density.shape) > 0.99)
    diff = np.abs(back - reference.resolution)[interior]
    spread = reference.resolution[reference.mask].std()
    assert np.median(diff) < 0.1 * spread
    assert abs(fine.summary.median - reference.summary.median) < 0.1 * spread


def test_user_mask_is_used(big_density, model):
    mask = np.zeros(big_density.shape, np.float32)
    mask[20:40, 20:40, 20:40] = 1.0
    result = predict(big_density, 1.0, mask, model=model)
    assert (result.mask == (mask > 0.5)).all()
    assert (result.resolution[mask == 0] == 0).all() and (result.resolution[mask == 1] > 0).all()


def test_deterministic_and_seeded_mc_dropout(big_density, reference, model):
    again = predict(big_density, 1.0, model=model)
    assert np.array_equal(again.resolution, reference.resolution)
    state = torch.random.get_rng_state()
    a = predict(big_density, 1.0, reference.mask, model=model, samples=4, seed=1)
    assert torch.equal(state, torch.random.get_rng_state())  # the caller's random state is untouched
    b = predict(big_density, 1.0, reference.mask, model=model, samples=4, seed=1)
    c = predict(big_density, 1.0, reference.mask, model=model, samples=4, seed=2)
    assert np.array_equal(a.resolution, b.resolution) and np.array_equal(a.uncertainty, b.uncertainty)
    assert not np.array_equal(a.uncertainty, c.uncertainty)
    assert a.uncertainty.shape == big_density.shape
    assert (a.uncertainty[~reference.mask] == 0).all() and a.uncertainty[reference.mask].mean() > 0
    assert np.corrcoef(a.resolution[reference.mask], reference.resolution[reference.mask])[0, 1] > 0.8


@pytest.mark.parametrize("density, voxel, match", [
    (np.ones((16, 16)), 1.0, "3-D"),
    (np.ones((16, 16, 16)), 1.0, "constant"),
    (np.full((16, 16, 16), np.nan), 1.0, "NaN"),
    (np.ones((4, 16, 16)), 1.0, "too small"),
    (synthetic_map(), 0.0, "voxel size"),
    (synthetic_map(), -1.0, "voxel size"),
    (synthetic_map(), 11.0, "Nyquist"),
])
def test_bad_arrays_fail_clearly(model, density, voxel, match):
    with pytest.raises(CryoResError, match=match):
        predict(density, voxel, model=model)


def test_mask_of_another_shape_and_huge_map_fail_clearly(density, model):
    with pytest.raises(CryoResError, match="shape"):
        predict(density, 1.0, np.ones((8, 8, 8)), model=model)
    with pytest.raises(CryoResError, match="memory"):
        predict(density, 1.0, model=model, memory_limit=1000)


def test_predict_file_writes_on_the_input_grid(map_file, model_card):
    result, out = predict_file(map_file, model=model_card, uncertainty=map_file.with_name("std.mrc"), samples=3)
    assert out == map_file.with_name("map_locres.mrc")
    with mrcfile.open(map_file) as src, mrcfile.open(out) as dst, mrcfile.open(map_file.with_name("std.mrc")) as std:
        assert dst.data.shape == src.data.shape
        np.testing.assert_array_equal(dst.data, result.resolution)
        np.testing.assert_array_equal(std.data, result.uncertainty)
        for field in ("nxstart", "nystart", "nzstart", "mapc", "mapr", "maps"):
            assert int(dst.header[field]) == int(src.header[field])
        assert dst.header.origin.tolist() == pytest.approx(src.header.origin.tolist())
        assert dst.voxel_size.tolist() == pytest.approx(src.voxel_size.tolist())


def test_predict_file_refuses_to_overwrite_and_to_touch_inputs(map_file, model_card):
    out = map_file.with_name("map_locres.mrc")
    out.write_bytes(b"keep me")
    with pytest.raises(CryoResError, match="--force"):
        predict_file(map_file, model=model_card)
    assert out.read_bytes() == b"keep me"
    with pytest.raises(CryoResError, match="input files"):
        predict_file(map_file, map_file, model=model_card, force=True)
    predict_file(map_file, model=model_card, force=True)
    assert out.stat().st_size > 1024


def test_predict_file_with_mask_file(tmp_path, map_file, model_card, density):
    mask = np.zeros(density.shape, np.float32)
    mask[10:30, 10:30, 10:30] = 1
    mask_path = write_mrc(tmp_path / "mask.mrc", mask)
    result, _ = predict_file(map_file, tmp_path / "o.mrc", mask=mask_path, model=model_card)
    assert result.mask.sum() == 20 ** 3
    bad = write_mrc(tmp_path / "small.mrc", mask[:-2])
    with pytest.raises(CryoResError, match="shape"):
        predict_file(map_file, tmp_path / "o2.mrc", mask=bad, model=model_card)
    assert not (tmp_path / "o2.mrc").exists()


def test_progress_callback_sees_every_patch(big_density, model):
    calls = []
    predict(big_density, 1.0, model=model, progress=lambda done, total: calls.append((done, total)))
    assert calls[0][0] == 0 and calls[-1][0] == calls[-1][1] > 0
    assert all(b[0] > a[0] for a, b in zip(calls[1:], calls[2:]))
