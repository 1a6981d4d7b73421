"""cryores-v3 training data and training: variants, rows, split, fit, resume, export."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from cryores.errors import CryoResError
from cryores.model_card import load_model
from cryores.predict import predict
from cryores.spectral import (
    HAS_REFERENCE,
    N_BANDS,
    N_FEATURES,
    N_INPUTS,
    N_INPUTS_NEIGHBOURHOOD,
    N_INPUTS_PERCENTILES,
    N_INPUTS_WIDE,
    N_PERCENTILES,
    band_percentiles,
)
from cryores_train.fit import load_config
from cryores_train.fit_spectral import jitter_percentiles, train, trained_ranges, with_percentiles
from cryores_train.rows import (
    FAMILIES,
    ROWS_PER_VARIANT,
    build_sample,
    load_rows,
    make_sample,
    row_variants,
    sample_parameters,
    simulate_sample,
    split_of,
)
from cryores_train.simulate import (
    CLIFF_STEP,
    V3_COARSE_RESOLUTION_A,
    V3_COARSE_VOXEL_A,
    V3_RESOLUTION_A,
    V3_VOXEL_A,
    draw_parameters_v3,
    quantised_levels,
    simulate_regional_lowpass,
)
from cryores_train.structures import discover
from cryores_train.structures import load_model as load_structure
from cryores_train.variants import (
    CROP_MAX_VOXEL_A,
    CROP_MIN_FACTOR,
    NYQUIST_MARGIN,
    Variant,
    crop_size,
    cropped_variant,
    make_variants,
    processing_variants,
)


@pytest.fixture(scope="module")
def small_structure(shared):
    groups = discover(shared / "data" / "structures" / "bm5")
    sid = min(groups, key=lambda s: sum(p.stat().st_size for p in groups[s]))  # the smallest complex
    return sid, groups[sid]


def test_split_is_stable_and_disjoint():
    ids = [f"{i:04d}" for i in range(300)]
    splits = [split_of(s) for s in ids]
    assert splits == [split_of(s) for s in ids]
    assert {"train", "val", "test"} == set(splits) and splits.count("train") > 200


def test_variants_carry_the_right_labels(small_structure):
    sid, paths = small_structure
    params = draw_parameters_v3(np.random.default_rng(3), "lowpass")
    arrays = simulate_regional_lowpass(load_structure(sid, paths), params, 4)
    truth, mask = arrays["truth"], arrays["mask"] > 0.5
    inside = truth > 0
    assert inside.any() and truth[inside].min() >= 1.8 and truth[inside].max() <= 20.0
    noise = 0.5 * (arrays["half1"] - arrays["half2"])
    variants = {v.kind: v for v in make_variants(arrays["map"], truth, mask, params["voxel_size"],
                                                 np.random.default_rng(0), signal=arrays["signal"], noise=noise)}
    assert set(variants) == {"raw", "deposit", "lowpass", "noisier", "sharp"}
    deposit, cut = variants["deposit"], variants["lowpass"]
    assert (deposit.label[inside] >= truth[inside] - 1e-5).all()
    assert np.allclose(deposit.label[inside].min(), max(deposit.note["lowpass"], truth[inside].min()), atol=1e-4)
    assert (cut.label[inside] >= cut.note["lowpass"] - 1e-4).all()
    values, counts = np.unique(deposit.density, return_counts=True)
    if deposit.note["masked"]:  # a masked deposit's solvent is one constant
        assert counts.max() > 0.3 * deposit.density.size
    else:  # an unmasked one keeps its solvent noise
        assert counts.max() < 0.01 * deposit.density.size
    assert deposit.note["bfactor"] <= 0.0
    assert variants["noisier"].lower_bound and not variants["raw"].lower_bound
    sharp = variants["sharp"]
    x = sharp.note["lowpass"]
    labelled = sharp.label > 0  # exactly where the design is at least as fine as the cut, labelled X
    assert labelled.any() and np.array_equal(labelled, inside & (truth <= x)) and np.allclose(sharp.label[labelled], x)
    assert 0.1 <= sharp.note["noise"] <= 1.0


def test_processing_variants_vary_cut_and_sharpening_apart_from_the_resolution(small_structure):
    """Extra deposits of one map: the label is max(d, X) whatever the processing, and over a few
    draws the cut (relative to the map's median d) and the sharpening (relative to its Guinier
    B) spread far wider than plain deposits', which follow the map's resolution."""
    from cryores_train.variants import guinier_b

    sid, paths = small_structure
    params = draw_parameters_v3(np.random.default_rng(3), "lowpass")
    arrays = simulate_regional_lowpass(load_structure(sid, paths), params, 4)
    truth, mask, voxel = arrays["truth"], arrays["mask"] > 0.5, params["voxel_size"]
    inside = truth > 0
    extra = processing_variants(arrays["map"], truth, mask, voxel, np.random.default_rng(2), 12)
    plain = [make_variants(arrays["map"], truth, mask, voxel, np.random.default_rng(seed))[1] for seed in range(12)]
    assert len(extra) == 12 and {v.kind for v in extra} == {"deposit"}
    for variant in extra:
        x = variant.note["lowpass"]
        np.testing.assert_allclose(variant.label[inside], np.maximum(truth[inside], x), rtol=1e-6)
        assert (variant.label[~inside] == 0).all() and variant.note["bfactor"] <= 0.0

    def spread(variants):
        values = [v.note["bfactor"] / guinier_b(arrays["map"], voxel, v.note["lowpass"]) for v in variants]
        return max(values) - min(values)

    d = np.sort(truth[inside])
    ranks = [[np.searchsorted(d, v.note["lowpass"]) / d.size for v in variants] for variants in (extra, plain)]
    cut = [max(r) - min(r) for r in ranks]  # where the cut falls among the map's resolutions
    boost = spread(extra), spread(plain)
    assert cut[0] > 1.5 * cut[1] and boost[0] > 1.5 * boost[1]  # 0.80 / 0.43 and 1.9 / 0.94 here
    assert sum(v.note["masked"] for v in extra) >= 6  # mostly without a noise reference


def test_deposits_are_sharpened_by_their_own_guinier_b(small_structure):
    """Sharpening a map by its fitted B leaves no slope: the fit and the filter agree on B's sign
    and scale, so a factor of 0.3-1.3 leaves deposits from still falling to over-sharpened."""
    from cryores_train.variants import guinier_b, sharpen

    sid, paths = small_structure
    params = draw_parameters_v3(np.random.default_rng(3), "bfactor")
    arrays = simulate_regional_lowpass(load_structure(sid, paths), params, 4)
    voxel = params["voxel_size"]
    finest = 3.0 * voxel
    b = guinier_b(arrays["signal"], voxel, finest)
    assert b > 20.0  # a density with B-factors falls off
    assert guinier_b(sharpen(arrays["signal"], voxel, -b), voxel, finest) < 0.02 * b
    assert guinier_b(sharpen(arrays["signal"], voxel, -0.5 * b), voxel, finest) == pytest.approx(0.5 * b, rel=0.05)


def test_strong_sharpening_before_a_low_pass_stays_finite_and_exact():
    """A deposit's B towards Nyquist overflows float32 (B = -240 Å² gives exp(180) at the corner
    of a 0.5-Å grid, though only 1000x at a 3-Å cut-off); saturating the gain beyond the
    low-pass's end changes nothing that survives the low-pass."""
    from cryores.fourier import spatial_frequency
    from cryores_train.variants import lowpass, sharpen

    density = np.random.default_rng(0).normal(size=(32, 32, 32)).astype(np.float32)
    voxel, bfactor, cut = 0.5, -240.0, 3.0
    result = lowpass(sharpen(density, voxel, bfactor, up_to=1.05 / cut), voxel, cut)
    assert np.isfinite(result).all()
    with np.errstate(over="ignore", invalid="ignore"):  # what the saturation prevents
        assert not np.isfinite(sharpen(density, voxel, bfactor)).all()
    k = spatial_frequency(density.shape, (voxel,) * 3).astype(np.float64)
    passband = k <= 1.0 / cut  # where the raised cosine is 1
    reference = np.fft.rfftn(density.astype(np.float64)) * np.exp(-bfactor * k ** 2 / 4.0)
    got = np.fft.rfftn(result.astype(np.float64))
    np.testing.assert_allclose(got[passband], reference[passband], rtol=1e-3, atol=1e-3 * np.abs(reference).max())


def test_sharp_variant_keeps_the_signal_up_to_its_cut_and_only_noise_beyond(small_structure):
    """The sharp variant's spectrum: the signal untouched below 1/X, beyond 1/X exactly the given
    noise (scaled), so the signal-to-noise ratio drops from high to zero at X."""
    from cryores.fourier import spatial_frequency
    from cryores_train.variants import sharp_variant

    sid, paths = small_structure
    params = draw_parameters_v3(np.random.default_rng(5), "bfactor")
    arrays = simulate_regional_lowpass(load_structure(sid, paths), params, 6)
    voxel, truth, mask = params["voxel_size"], arrays["truth"], arrays["mask"] > 0.5
    noise = 0.5 * (arrays["half1"] - arrays["half2"])
    rng = np.random.default_rng(1)
    while True:  # a draw that is not masked, so the map is signal + noise everywhere
        variant = sharp_variant(arrays["signal"], noise, truth, mask, voxel, rng)
        if not variant.note["masked"]:
            break
    x, level = variant.note["lowpass"], variant.note["noise"]
    k = spatial_frequency(truth.shape, (voxel,) * 3)
    residual = np.fft.rfftn(variant.density - level * noise)
    signal = np.fft.rfftn(arrays["signal"])
    below, beyond = (k < 0.9 / x) & (k > 0), k > 1.06 / x
    np.testing.assert_allclose(residual[below], signal[below], rtol=1e-3, atol=1e-3 * np.abs(signal).max())
    assert np.abs(residual[beyond]).max() < 1e-3 * np.abs(signal[below]).max()


def test_rows_of_a_sample_are_features_as_inference_computes_them(tmp_path, small_structure):
    sid, paths = small_structure
    base = (sid, tuple(str(p) for p in paths), 0, 0, "bfactor", str(tmp_path))  # then shares, inputs, flags
    name = build_sample(base + (0.0, 0.0, "context", 0, False, False, False))
    with np.load(tmp_path / "bfactor" / name) as data:
        assert data["x"].shape[1] == N_INPUTS and len(data["y"]) == len(data["x"]) == len(data["bound"])
        for kind in np.unique(data["kind"]):  # the map's context: one value per variant, in every row
            context = data["x"][data["kind"] == kind, N_FEATURES:]
            assert (context == context[0]).all()
        # each row names its map, in the order the maps were drawn (one kind each here)
        assert np.array_equal(data["variant"], np.cumsum(np.r_[0, np.diff(data["kind"]) != 0]))
        assert set(np.unique(data["kind"])) <= {0, 1, 2, 3, 4} and {0, 1, 2, 3} <= set(np.unique(data["kind"]))
        assert str(data["split"]) == split_of(sid)
        assert (data["y"] >= 1.8).all() and data["bound"][data["kind"] == 3].all()
    mtime = (tmp_path / "bfactor" / name).stat().st_mtime
    build_sample(base + (0.0, 0.0, "context", 0, False, False, False))  # finished: skipped
    assert (tmp_path / "bfactor" / name).stat().st_mtime == mtime
    # the same name made with another sharp share would be another sample: refused, file kept
    with pytest.raises(CryoResError, match="made with --sharp-share 0, not 0.3"):
        build_sample(base + (0.3, 0.0, "context", 0, False, False, False))
    # or with a drawn steepness (any share 1 draws one other than the default)
    with pytest.raises(CryoResError, match="made at steepness 8, where --steep-share 1 draws"):
        build_sample(base + (0.0, 1.0, "context", 0, False, False, False))
    # and with other inputs per row it would mix widths in one folder: refused too
    with pytest.raises(CryoResError, match=f"{N_INPUTS} inputs per row, not {N_INPUTS_NEIGHBOURHOOD}"):
        build_sample(base + (0.0, 0.0, "neighbourhood", 0, False, False, False))
    assert (tmp_path / "bfactor" / name).stat().st_mtime == mtime


def test_processing_rows_hold_only_extra_deposits_in_their_own_folder(tmp_path, small_structure):
    sid, paths = small_structure
    task = (sid, tuple(str(p) for p in paths), 0, 0, "bfactor", str(tmp_path), 0.0, 0.0, "context", 3, False, False,
            False)
    name = build_sample(task)
    with np.load(tmp_path / "bfactor-processing" / name) as data:
        assert set(np.unique(data["kind"])) == {1} and int(data["processing"]) == 3  # deposits only
        assert not data["bound"].any() and len(data["y"]) > 1500
        assert set(np.unique(data["variant"])) == {0, 1, 2}  # three maps of one kind, told apart
    assert not (tmp_path / "bfactor").exists()
    (tmp_path / "bfactor").mkdir()  # a plain rows file under the processing folder's name: refused
    (tmp_path / "bfactor-processing" / name).rename(tmp_path / "bfactor" / name)
    with pytest.raises(CryoResError, match="made with --processing 3, not 0"):
        build_sample(task[:-4] + (0, False, False, False))


def test_coarse_rows_are_drawn_apart_at_coarse_voxel_sizes_in_their_own_folder(tmp_path, small_structure):
    """--coarse: its own draws (not the plain sample's), 4-6 Å/px, in FAMILY-coarse/; a plain
    file found where a coarse one belongs is refused, naming the flag."""
    sid, paths = small_structure
    coarse = [sample_parameters(sid, i, 0, "bfactor", coarse=True) for i in range(12)]
    assert all(V3_COARSE_VOXEL_A[0] <= p["voxel_size"] <= V3_COARSE_VOXEL_A[1] for p in coarse)
    assert max(p["voxel_size"] for p in coarse) > V3_VOXEL_A[1]  # beyond the plain rows' sizes
    assert all(p["resolution_clip"] == list(V3_COARSE_RESOLUTION_A) for p in coarse)
    assert coarse[0]["seed"] != sample_parameters(sid, 0, 0, "bfactor")["seed"]
    task = (sid, tuple(str(p) for p in paths), 0, 0, "bfactor", str(tmp_path), 0.0, 0.0, "context", 0, True, False,
            False)
    name = build_sample(task)
    with np.load(tmp_path / "bfactor-coarse" / name) as data:
        assert bool(data["coarse"]) and float(data["voxel"]) == pytest.approx(coarse[0]["voxel_size"], rel=0.5)
        assert float(data["voxel"]) >= V3_COARSE_VOXEL_A[0] and len(data["y"]) > 0
    assert not (tmp_path / "bfactor").exists()
    (tmp_path / "bfactor").mkdir()
    (tmp_path / "bfactor-coarse" / name).rename(tmp_path / "bfactor" / name)
    with pytest.raises(CryoResError, match="made with --coarse"):
        build_sample(task[:-3] + (False, False, False))


def test_a_cropped_variant_keeps_every_frequency_below_the_new_nyquist_and_floors_its_label():
    """Fourier cropping (what RELION's and cryoSPARC's down-sampling do): the same box in fewer
    voxels, the spectrum below the new Nyquist unchanged, the label resampled and never finer
    than the new grid can hold."""
    rng = np.random.default_rng(3)
    n, voxel = 40, 1.5
    density = rng.normal(size=(n,) * 3).astype(np.float32)
    truth = np.zeros((n,) * 3, np.float32)
    truth[8:32, 8:32, 8:32] = np.linspace(3.0, 12.0, 24, dtype=np.float32)[:, None, None]
    side, coarse = crop_size(truth, voxel, rng)
    assert side < n and coarse == pytest.approx(voxel * n / side)
    variant = cropped_variant(Variant("raw", density, truth, True, {}), side, coarse)
    assert variant.density.shape == (side,) * 3 and variant.lower_bound and variant.note["cropped_to"] == coarse
    before, after = np.fft.fftn(density), np.fft.fftn(variant.density) * n ** 3 / side ** 3
    low = np.r_[0:side // 2 - 1, -(side // 2 - 2):0]  # frequencies both grids hold exactly
    np.testing.assert_allclose(after[np.ix_(low, low, low)], before[np.ix_(low, low, low)], rtol=1e-3, atol=1e-2)
    inside = variant.label > 0
    assert inside.any() and (variant.label[inside] >= 2.0 * coarse - 1e-5).all()
    assert variant.label[inside].max() == pytest.approx(12.0, abs=1.0)  # the coarse end survives resampling
    # a fine map is cropped no coarser than its median d / NYQUIST_MARGIN, but by CROP_MIN_FACTOR at least
    fine = np.where(truth > 0, 2.5 + (truth - 3.0) / 3.0, 0.0).astype(np.float32)  # 2.5-5.5 Å, median 4
    limit = float(np.median(fine[fine > 0])) / NYQUIST_MARGIN
    for _ in range(10):
        cropped = crop_size(fine, voxel, rng)[1]
        assert CROP_MIN_FACTOR * voxel * 0.97 <= cropped <= limit * 1.03
    # never past the coarsest voxel trained on, the smallest factor included; no crop beyond it
    coarse_everywhere = np.full((n,) * 3, 100.0, np.float32)
    assert crop_size(coarse_everywhere, 5.8, rng)[1] == pytest.approx(CROP_MAX_VOXEL_A, rel=0.03)
    assert all(4.4 * 0.97 <= crop_size(coarse_everywhere, 4.0, rng)[1] <= CROP_MAX_VOXEL_A * 1.03 for _ in range(10))
    assert crop_size(coarse_everywhere, 6.5, rng) == (n, 6.5)


def test_cropped_rows_are_drawn_apart_on_a_coarser_grid_in_their_own_folder(tmp_path, small_structure):
    """--cropped: its own draws, every map cropped to a coarser voxel before its rows are drawn,
    labels at least the new Nyquist, in FAMILY-cropped/; a cropped file found in the plain folder is
    refused, naming the flag."""
    sid, paths = small_structure
    params = sample_parameters(sid, 0, 0, "bfactor", cropped=True)
    assert params["seed"] != sample_parameters(sid, 0, 0, "bfactor")["seed"]
    task = (sid, tuple(str(p) for p in paths), 0, 0, "bfactor", str(tmp_path), 0.0, 0.0, "context", 0, False, False,
            True)
    name = build_sample(task)
    with np.load(tmp_path / "bfactor-cropped" / name) as data:
        voxel = float(data["voxel"])
        assert bool(data["cropped"]) and voxel >= CROP_MIN_FACTOR * params["voxel_size"] * 0.95
        assert (data["y"] >= 2.0 * voxel - 1e-4).all() and {0, 1, 2, 3} <= set(np.unique(data["kind"]))
    assert not (tmp_path / "bfactor").exists()
    (tmp_path / "bfactor").mkdir()
    (tmp_path / "bfactor-cropped" / name).rename(tmp_path / "bfactor" / name)
    with pytest.raises(CryoResError, match="made with --cropped"):
        build_sample(task[:-1] + (False,))


def test_reference_only_rows_are_the_full_samples_rows_of_maps_with_a_noise_reference(tmp_path, small_structure):
    """--reference-only keeps, of the same sample, exactly the rows of the maps whose solvent gave a
    noise reference, each still numbered as its map in the full sample; a full file found where
    such rows belong is refused, naming the flag."""
    sid, paths = small_structure
    full, kept = tmp_path / "full", tmp_path / "kept"
    base = (sid, tuple(str(p) for p in paths), 1, 0, "bfactor")  # sample 1: its deposit has no reference
    name = build_sample(base + (str(full), 0.0, 0.0, "context", 0, False, False, False))
    build_sample(base + (str(kept), 0.0, 0.0, "context", 0, False, True, False))
    with np.load(full / "bfactor" / name) as every, np.load(kept / "bfactor" / name) as some:
        with_reference = every["x"][:, HAS_REFERENCE] > 0.5
        assert 0 < with_reference.sum() < len(with_reference)  # this sample has maps of both kinds
        for key in ("x", "y", "bound", "kind", "variant"):
            assert np.array_equal(some[key], every[key][with_reference]), key
        assert bool(some["reference_only"]) and not bool(every["reference_only"])
    with pytest.raises(CryoResError, match="made without --reference-only"):
        build_sample(base + (str(full), 0.0, 0.0, "context", 0, False, True, False))


def test_rows_of_another_width_are_refused_naming_the_file(tmp_path):
    synthetic_rows(tmp_path)
    np.savez(tmp_path / "S9_000.npz", x=np.zeros((10, N_FEATURES + 1), np.float16), y=np.full(10, 5.0, np.float32),
             bound=np.zeros(10, bool), kind=np.zeros(10, np.int8), voxel=1.0, structure="S9", split="train")
    with pytest.raises(CryoResError, match="S9_000.npz: 41 inputs per row"):
        load_rows(tmp_path, "train")


def test_fit_refuses_rows_of_a_width_no_network_reads(tmp_path):
    rows = tmp_path / "rows"
    rows.mkdir()
    synthetic_rows(rows, width=N_FEATURES + 1)  # all alike, so load_rows takes them
    with pytest.raises(CryoResError, match=f"rows in .*: {N_FEATURES + 1} inputs per voxel"):
        train(tiny_config(tmp_path / "run", rows), progress=False)


def synthetic_rows(folder: Path, seed: int = 0, width: int = N_FEATURES) -> None:
    """Rows where the label is a function of the features (so a few steps can learn it)."""
    rng = np.random.default_rng(seed)
    for i, split in enumerate(["train"] * 4 + ["val"] * 2):
        x = rng.normal(size=(300, width)).astype(np.float16)
        y = np.exp(1.6 + 0.3 * x[:, 0].astype(np.float32)).astype(np.float32)
        np.savez(folder / f"S{i}_000.npz", x=x, y=y, bound=rng.random(300) < 0.2, kind=np.zeros(300, np.int8),
                 voxel=1.0, structure=f"S{i}", split=split)


def tiny_config(folder: Path, rows: Path, steps: int = 40) -> dict:
    return {"name": "tiny-v3", "kind": "spectral", "dataset": str(rows), "output": str(folder), "seed": 0,
            "architecture": {"hidden": [16], "dropout": 0.0}, "batch_size": 64, "steps": steps,
            "learning_rate": 0.01, "weight_decay": 0.0, "warmup_steps": 5, "validate_every": 20,
            "checkpoint_every": 10, "resolution_range": [1.0, 30.0]}


def test_fit_resumes_to_the_same_weights_and_exports_a_loadable_model(tmp_path):
    rows = tmp_path / "rows"
    rows.mkdir()
    synthetic_rows(rows, width=N_INPUTS)  # as cryores-train rows makes them: features and the map's context
    assert len(load_rows(rows, "train")["y"]) == 1200
    whole = train(tiny_config(tmp_path / "whole", rows), progress=False)
    train(tiny_config(tmp_path / "split", rows), progress=False, max_steps=20)  # "killed" after a checkpoint
    checkpoint = tmp_path / "split" / "checkpoint.pt"
    state = torch.load(checkpoint, weights_only=False)
    assert state["seconds"] > 0
    state["seconds"] = 1000.0  # as if the first leg had trained for 1000 s
    torch.save(state, checkpoint)
    resumed = train(tiny_config(tmp_path / "split", rows), progress=False)
    a = torch.load(whole.parent / "tiny-v3.pt", weights_only=True)
    b = torch.load(resumed.parent / "tiny-v3.pt", weights_only=True)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)
    card = json.loads(whole.read_text())
    legs = json.loads(resumed.read_text())["training"]
    assert legs["training_seconds_all_legs"] == 1000 + legs["cpu_seconds_last_leg"]  # both legs counted
    assert card["training"]["training_seconds_all_legs"] == card["training"]["cpu_seconds_last_leg"]
    assert card["architecture"]["type"] == "SpectralNet" and card["uncertainty"]["interval_scale"] > 0
    assert card["architecture"]["n_features"] == N_INPUTS and card["features"]["n_context"] == N_INPUTS - N_FEATURES
    assert card["features"]["layout"] == "context"
    # the ranges cryores.cautions compares predictions with are the simulator's
    assert card["trained_on"] == {"voxel_size_A": list(V3_VOXEL_A), "resolution_A": list(V3_RESOLUTION_A)}
    history = json.loads((tmp_path / "whole" / "history.json").read_text())
    assert history["val"][-1][1]["mae"] < history["val"][0][1]["mae"] * 1.5
    model = load_model(whole)
    density = np.random.default_rng(0).normal(size=(24, 24, 24)).astype(np.float32)
    density[8:16, 8:16, 8:16] += 3.0
    mask = np.zeros(density.shape, bool)
    mask[6:18, 6:18, 6:18] = True
    result = predict(density, 2.5, mask, model=model)
    assert (result.resolution[mask] >= 5.0).all() and (result.resolution[~mask] == 0).all()


def test_fit_reads_further_families_rows_named_in_more_rows(tmp_path):
    """``more_rows`` adds other simulated families' folders (relative to the config's folder's
    parent, like ``dataset``): the fit trains on all of them and the card names each family."""
    for family, seed in (("bfactor", 0), ("cliff", 1), ("bfactor-coarse", 2)):
        (tmp_path / "rows" / family).mkdir(parents=True)
        synthetic_rows(tmp_path / "rows" / family, seed=seed, width=N_INPUTS)
    (tmp_path / "configs").mkdir()
    config_path = tmp_path / "configs" / "mix.json"
    config_path.write_text(json.dumps({**tiny_config(tmp_path / "mix", tmp_path / "rows"), "dataset": "rows/bfactor",
                                       "more_rows": ["rows/cliff"], "output": "mix"}))
    config = load_config(config_path)
    assert config["more_rows"] == [str((tmp_path / "rows" / "cliff").resolve())]
    full = json.loads(train(config, progress=False).read_text())
    card = full["training"]
    assert card["rows"] == {"train": 2400, "val": 1200} and card["samples"] == {"train": 8, "val": 4}
    assert "families 'bfactor' and 'cliff'" in card["data"] and "more_rows" not in card["config"]
    assert full["trained_on"]["voxel_size_A"] == list(V3_VOXEL_A)
    # coarse-map rows (cryores-train rows --coarse) widen the ranges the card says it was trained on
    config_path.write_text(json.dumps({**tiny_config(tmp_path / "mixc", tmp_path / "rows"), "dataset": "rows/bfactor",
                                       "more_rows": ["rows/bfactor-coarse"], "output": "mixc"}))
    coarse = json.loads(train(load_config(config_path), progress=False).read_text())
    config_path.write_text(json.dumps({**tiny_config(tmp_path / "mix3", tmp_path / "rows"), "dataset": "rows/bfactor",
                                       "more_rows": ["rows/cliff", "rows/bfactor-coarse"], "output": "mix3"}))
    three = json.loads(train(load_config(config_path), progress=False).read_text())["training"]["data"]
    assert "families 'bfactor', 'cliff' and 'bfactor-coarse'" in three
    assert coarse["trained_on"] == {"voxel_size_A": [V3_VOXEL_A[0], V3_COARSE_VOXEL_A[1]],
                                    "resolution_A": [V3_RESOLUTION_A[0], V3_COARSE_RESOLUTION_A[1]]}
    config_path.write_text(json.dumps({**tiny_config(tmp_path / "mix", tmp_path / "rows"), "more_rows": "rows/cliff"}))
    with pytest.raises(CryoResError, match="more_rows must be a list of folders"):
        load_config(config_path)


def test_cropped_rows_widen_only_the_voxel_sizes_a_card_says_it_was_trained_on():
    """A fit on cropped rows (``*-cropped``) was trained on voxels up to CROP_MAX_VOXEL_A, at the
    plain resolutions; cropped coarse rows (``*-coarse-cropped``) count as coarse too."""
    plain = {"voxel_size_A": list(V3_VOXEL_A), "resolution_A": list(V3_RESOLUTION_A)}
    assert trained_ranges(["bfactor", "cliff"]) == plain
    cropped = {**plain, "voxel_size_A": [V3_VOXEL_A[0], CROP_MAX_VOXEL_A]}
    assert trained_ranges(["bfactor", "bfactor-cropped"]) == cropped
    coarse = {"voxel_size_A": [V3_VOXEL_A[0], V3_COARSE_VOXEL_A[1]],
              "resolution_A": [V3_RESOLUTION_A[0], V3_COARSE_RESOLUTION_A[1]]}
    assert trained_ranges(["bfactor", "bfactor-coarse-cropped"]) == coarse
    assert trained_ranges(["bfactor", "bfactor-coarse", "bfactor-cropped"]) == coarse  # the shipped card's


def test_rows_without_a_variant_index_are_told_apart_by_kind_or_refused():
    kind = np.repeat(np.array([0, 1, 2, 1], np.int8), [5, 4, 3, 2])  # four maps, each a run of one kind
    assert row_variants({"kind": kind}, Path("old.npz")).tolist() == [0] * 5 + [1] * 4 + [2] * 3 + [3] * 2
    assert row_variants({"kind": kind, "variant": np.zeros(14, np.int16)}, Path("new.npz")).tolist() == [0] * 14
    several = np.full(ROWS_PER_VARIANT + 1, 5, np.int8)  # real-map rows: more rows of one kind than one map gives
    assert row_variants({"kind": several}, Path("real.npz")).max() == 0
    with pytest.raises(CryoResError, match="real.npz: several maps of one kind and no variant index"):
        row_variants({"kind": several}, Path("real.npz"), strict=True)


def test_fit_derives_each_maps_percentiles_from_its_rows(tmp_path):
    rows = tmp_path / "rows"
    rows.mkdir()
    synthetic_rows(rows, width=N_INPUTS_NEIGHBOURHOOD)  # one map per file, each its own draw
    for path in rows.glob("S*_000.npz"):  # S0's map has a noise reference, the others none
        data = dict(np.load(path))
        data["x"][:, HAS_REFERENCE] = float(path.name == "S0_000.npz")
        np.savez(path, **data)
    loaded = load_rows(rows, "train", variants=True)
    derived = with_percentiles(loaded)["x"]
    assert derived.shape == (1200, N_INPUTS_PERCENTILES) and derived.dtype == np.float32
    np.testing.assert_array_equal(derived[:, :N_INPUTS_NEIGHBOURHOOD], loaded["x"])
    for i, path in enumerate(sorted(rows.glob("S[0-3]_000.npz"))):  # the training files, in load order
        own = band_percentiles(np.load(path)["x"][:, :N_BANDS]) if i else np.zeros(N_PERCENTILES)
        np.testing.assert_allclose(derived[300 * i:300 * (i + 1), N_INPUTS_NEIGHBOURHOOD:],
                                   np.broadcast_to(own, (300, N_PERCENTILES)), rtol=1e-6)
    assert not np.allclose(derived[300, N_INPUTS_NEIGHBOURHOOD:], derived[600, N_INPUTS_NEIGHBOURHOOD:])
    # derived file by file as the rows load (what the fit does, so it never holds both copies): the same
    per_file = load_rows(rows, "train", True, lambda x, variant: with_percentiles({"x": x, "variant": variant})["x"])
    np.testing.assert_array_equal(per_file["x"], derived)
    assert all(np.array_equal(per_file[key], loaded[key]) for key in loaded if key != "x")
    card_path = train({**tiny_config(tmp_path / "pct", rows), "inputs": "percentiles"}, progress=False)
    card = json.loads(card_path.read_text())
    assert card["architecture"]["n_features"] == N_INPUTS_PERCENTILES and card["features"]["layout"] == "percentiles"
    density = np.random.default_rng(0).normal(size=(24, 24, 24)).astype(np.float32)
    density[8:16, 8:16, 8:16] += 3.0
    mask = np.zeros(density.shape, bool)
    mask[6:18, 6:18, 6:18] = True
    result = predict(density, 2.5, mask, model=load_model(card_path))
    assert np.isfinite(result.resolution[mask]).all() and (result.resolution[mask] >= 5.0).all()
    narrow = tmp_path / "narrow"
    narrow.mkdir()
    synthetic_rows(narrow, width=N_INPUTS)  # without the neighbourhood columns: refused, naming them
    with pytest.raises(CryoResError, match=f"{N_INPUTS} inputs per row, fewer than the {N_INPUTS_NEIGHBOURHOOD}"):
        train({**tiny_config(tmp_path / "pct2", narrow), "inputs": "percentiles"}, progress=False)


def test_percentile_rows_hold_each_maps_percentiles_once_and_give_the_fit_the_same_rows(tmp_path):
    """The fit holds the percentiles layout as each row's own inputs plus one row of percentiles per
    map (PercentileRows); every number it reads from them must be the one the full rows give."""
    from cryores.spectral_net import SpectralNet
    from cryores_train.fit_spectral import (
        PercentileRows,
        batch_taker,
        calibrate_interval,
        input_statistics,
        load_percentile_rows,
        validate,
    )

    rows = tmp_path / "rows"
    rows.mkdir()
    synthetic_rows(rows, width=N_INPUTS_WIDE)  # wider than the layout reads, as rows may be
    for i, path in enumerate(sorted(rows.glob("S*_000.npz"))):  # three maps per file, the middle one referenced
        data = dict(np.load(path))
        data["variant"] = np.repeat(np.arange(3, dtype=np.int32), 100)
        data["x"][:, HAS_REFERENCE] = (data["variant"] == 1).astype(np.float16)
        data["x"][:, :N_BANDS] += np.float16(i) * data["variant"][:, None].astype(np.float16)  # maps differ
        np.savez(path, **data)
    full = with_percentiles(load_rows(rows, "train", variants=True))["x"]
    held = load_percentile_rows([rows], "train")
    x = held["x"]
    assert isinstance(x, PercentileRows) and x.shape == full.shape and len(x) == 1200
    assert x.per_map.shape == (12, N_PERCENTILES) and x.own.shape == (1200, N_INPUTS_NEIGHBOURHOOD)
    assert not x.per_map[1::3].any() and x.per_map[0::3].any()  # referenced maps: percentiles 0
    np.testing.assert_array_equal(x.take(slice(None)), full)
    index = np.random.default_rng(1).integers(0, 1200, 500)
    np.testing.assert_array_equal(x.take(index), full[index])
    assert x.take(index).dtype == np.float32
    gather = torch.from_numpy(index)
    assert torch.equal(batch_taker(x, torch.device("cpu"))(gather), batch_taker(full, torch.device("cpu"))(gather))
    torch.manual_seed(0)
    network = SpectralNet(N_INPUTS_PERCENTILES, (8,))
    for a, b in zip(input_statistics(network, x, chunk=700), input_statistics(network, full, chunk=700)):
        np.testing.assert_array_equal(a, b)
    whole = {**held, "x": full}
    assert validate(network, held) == validate(network, whole)
    assert calibrate_interval(network, held) == calibrate_interval(network, whole)
    narrow = tmp_path / "narrow"  # rows without the neighbourhood columns: refused, naming the folder
    narrow.mkdir()
    synthetic_rows(narrow, width=N_INPUTS)
    with pytest.raises(CryoResError, match=f"{re.escape(str(narrow))}: {N_INPUTS} inputs per row, fewer than"):
        load_percentile_rows([narrow], "train")
    with pytest.raises(ValueError, match="do not fit together"):  # own inputs of another layout
        PercentileRows(np.zeros((4, N_INPUTS_WIDE), np.float32), x.per_map, np.zeros(4, np.int64))


def test_percentile_jitter_moves_only_the_percentiles_of_maps_without_a_noise_reference(tmp_path):
    torch.manual_seed(0)
    x = torch.zeros((20000, N_INPUTS_PERCENTILES))
    x[:10000, HAS_REFERENCE] = 1.0  # the first half has a reference: its percentiles are 0 and stay so
    x[:, :N_BANDS] = 0.5
    jittered = jitter_percentiles(x, 0.05)
    assert torch.equal(jittered[:, :N_INPUTS_NEIGHBOURHOOD], x[:, :N_INPUTS_NEIGHBOURHOOD])
    assert torch.equal(jittered[:10000], x[:10000])
    noise = jittered[10000:, N_INPUTS_NEIGHBOURHOOD:]
    assert abs(float(noise.std()) - 0.05) < 0.002 and abs(float(noise.mean())) < 0.002
    with pytest.raises(CryoResError, match="percentiles layout"):
        jitter_percentiles(torch.zeros((4, N_INPUTS_NEIGHBOURHOOD)), 0.05)
    # two DDP ranks, each with its half of a global batch and a generator in the same state, add
    # together the noise one process adds to the whole batch
    torch.manual_seed(3)
    whole = jitter_percentiles(x, 0.05)
    halves = []
    for shard in (slice(0, 10000), slice(10000, 20000)):
        torch.manual_seed(3)
        halves.append(jitter_percentiles(x[shard], 0.05, len(x), shard))
    assert torch.equal(torch.cat(halves), whole)
    # a config that cannot use it is refused before any rows load (this folder does not exist)
    with pytest.raises(CryoResError, match='percentile_jitter needs "inputs": "percentiles"'):
        train({**tiny_config(tmp_path / "early", tmp_path / "no-rows"), "inputs": "neighbourhood",
               "percentile_jitter": 0.1}, progress=False)
    assert not (tmp_path / "early").exists()
    rows = tmp_path / "rows"  # a fit with it: trains, resumes to the same weights, exports a loadable card
    rows.mkdir()
    synthetic_rows(rows, width=N_INPUTS_NEIGHBOURHOOD)
    config = {**tiny_config(tmp_path / "jit", rows), "inputs": "percentiles", "percentile_jitter": 0.05}
    plain = train({**config, "output": str(tmp_path / "plain"), "percentile_jitter": 0.0}, progress=False)
    card = train(config, progress=False)
    train({**config, "output": str(tmp_path / "split")}, progress=False, max_steps=20)  # "killed" after a checkpoint
    resumed = train({**config, "output": str(tmp_path / "split")}, progress=False)

    def first_layer(path: Path) -> torch.Tensor:
        return torch.load(path.parent / "tiny-v3.pt", weights_only=True)["layers.0.weight"]

    assert not torch.equal(first_layer(card), first_layer(plain))
    assert torch.equal(first_layer(card), first_layer(resumed))  # the noise's draws resume with the run
    assert json.loads(card.read_text())["architecture"]["n_features"] == N_INPUTS_PERCENTILES


def test_fit_trains_a_narrower_layout_from_the_first_columns_of_wider_rows(tmp_path):
    rows = tmp_path / "rows"
    rows.mkdir()
    synthetic_rows(rows, width=N_INPUTS)  # context rows; the label depends on column 0, a feature
    config = {**tiny_config(tmp_path / "narrow", rows), "inputs": "features"}
    card_path = train(config, progress=False)
    card = json.loads(card_path.read_text())
    assert card["architecture"]["n_features"] == N_FEATURES and card["features"]["layout"] == "features"
    assert card["features"]["n_context"] == 0 and card["training"]["config"]["inputs"] == "features"
    weights = torch.load(card_path.parent / "tiny-v3.pt", weights_only=True)
    wide = np.load(rows / "S0_000.npz")["x"].astype(np.float32)
    assert weights["feature_mean"].shape == (N_FEATURES,)
    assert np.allclose(weights["feature_mean"].numpy(), load_rows(rows, "train")["x"][:, :N_FEATURES].astype(np.float32)
                       .mean(axis=0), atol=1e-4) and wide.shape[1] == N_INPUTS
    density = np.random.default_rng(0).normal(size=(24, 24, 24)).astype(np.float32)
    density[8:16, 8:16, 8:16] += 3.0
    mask = np.zeros(density.shape, bool)
    mask[6:18, 6:18, 6:18] = True
    assert (predict(density, 2.5, mask, model=load_model(card_path)).resolution[mask] >= 5.0).all()
    # a layout wider than the rows, or one this cryores does not know: refused, naming the rows or the key
    with pytest.raises(CryoResError, match=f"{N_INPUTS} inputs per row, fewer than the {N_INPUTS_NEIGHBOURHOOD}"):
        train({**tiny_config(tmp_path / "wide", rows), "inputs": "neighbourhood"}, progress=False)
    with pytest.raises(CryoResError, match="config inputs 'everything'"):
        train({**tiny_config(tmp_path / "odd", rows), "inputs": "everything"}, progress=False)


def test_a_sample_is_simulated_from_its_drawn_choices_alone(small_structure):
    sid, paths = small_structure
    params, arrays = make_sample(sid, paths, 0, 3, "lowpass")
    again = simulate_sample(sample_parameters(sid, 0, 3, "lowpass"), [str(p) for p in paths])
    assert set(again) == set(arrays)
    for key in arrays:
        np.testing.assert_array_equal(again[key], arrays[key])
    other = simulate_sample({**params, "seed": params["seed"] + 1}, paths)  # the seed is the sample's own
    assert not np.array_equal(other["half1"], arrays["half1"])


def test_scored_maps_are_the_raw_map_and_one_deposit_drawn_from_the_sample_and_salt(small_structure):
    """The evaluation, the calibration and the benchmarks score these maps: the raw map as
    simulated, then a deposited-style variant whose draws depend on the sample's seed and the salt."""
    from cryores_train.rows import scored_maps

    sid, paths = small_structure
    params, arrays, voxel, variants = scored_maps(sid, paths, "bfactor", 0, 3)
    assert voxel == params["voxel_size"] and [v.kind for v in variants] == ["raw", "deposit"]
    np.testing.assert_array_equal(variants[0].density, arrays["map"])
    again = scored_maps(sid, paths, "bfactor", 0, 3)[3]
    np.testing.assert_array_equal(again[1].density, variants[1].density)
    other_salt = scored_maps(sid, paths, "bfactor", 0, 3, salt=4)[3]
    assert not np.array_equal(other_salt[1].density, variants[1].density)


def test_each_family_draws_its_own_sample_and_simulator(small_structure):
    """The same structure and index give each family its own seed and simulator: the per-atom
    cliff family's maps are made rung by rung, and its truth holds only rungs."""
    sid, paths = small_structure
    seeds = {family: sample_parameters(sid, 0, 3, family)["seed"] for family in FAMILIES}
    assert len(set(seeds.values())) == len(FAMILIES)
    with pytest.raises(CryoResError, match="family 'blur': not one of bfactor, cliff, lowpass"):
        sample_parameters(sid, 0, 3, "blur")
    params, arrays = make_sample(sid, paths, 0, 3, "cliff")
    assert params["rungs"] >= 2 and "cliff_decay" in params
    truth = arrays["truth"][arrays["mask"] > 0.5]
    floor = max(V3_RESOLUTION_A[0], 2.2 * params["voxel_size"])
    np.testing.assert_allclose(quantised_levels(truth, CLIFF_STEP, floor), truth, rtol=1e-5)
    bfactor = make_sample(sid, paths, 0, 3, "bfactor")[1]["truth"]
    assert len(np.unique(truth)) < 0.1 * len(np.unique(bfactor[bfactor > 0]))  # rungs, not a smooth field


def test_rows_with_non_finite_features_are_refused_by_name(tmp_path):
    from cryores.errors import CryoResError

    rows = tmp_path / "rows"
    rows.mkdir()
    synthetic_rows(rows)
    with np.load(rows / "S1_000.npz") as data:
        arrays = dict(data)
    arrays["x"][3, 5] = np.nan
    np.savez(rows / "S1_000.npz", **arrays)
    with pytest.raises(CryoResError, match="S1_000.npz: non-finite"):
        load_rows(rows, "train")


def test_a_sample_killed_while_written_is_not_loaded(tmp_path, small_structure, monkeypatch):
    """A run killed while it writes a sample leaves a temporary file that load_rows never reads."""
    import cryores_train.rows as rows_module

    def killed(stream, **arrays):
        stream.write(b"half-written")
        raise KeyboardInterrupt

    rows = tmp_path / "rows"
    rows.mkdir()
    synthetic_rows(rows)
    sid, paths = small_structure
    monkeypatch.setattr(rows_module.np, "savez_compressed", killed)
    with pytest.raises(KeyboardInterrupt):
        build_sample((sid, tuple(str(p) for p in paths), 0, 0, "bfactor", str(tmp_path), 0.0, 0.0, "context", 0, False,
                      False, False))
    monkeypatch.undo()
    leftovers = list((tmp_path / "bfactor").iterdir())
    assert len(leftovers) == 1 and leftovers[0].read_bytes() == b"half-written"
    for leftover in leftovers:
        leftover.rename(rows / leftover.name)
    assert len(load_rows(rows, "train")["y"]) == 1200


def test_calibration_on_whole_maps_centres_the_median_and_sets_90_percent_coverage(tmp_path, shared, capsys):
    """``cryores-train calibrate`` measures what users get (the real predict path, floor included):
    with the shift and scale it writes into the card, the same validation maps read centred and
    their interval holds 90 % of their voxels, pooled (the shift weighs each map the same)."""
    from cryores.model_card import save_model
    from cryores.spectral import FEATURE_VOXEL_A
    from cryores.spectral_net import SpectralNet
    from cryores_train.cli import main
    from cryores_train.fit_spectral import map_weighted_quantile
    from cryores_train.rows import make_sample

    groups = discover(shared / "data" / "structures" / "bm5")
    val = [s for s in groups if split_of(s) == "val"]
    sid = min(val, key=lambda s: sum(p.stat().st_size for p in groups[s]))  # its raw map's floor binds often
    structures = tmp_path / "training" / "structures"
    structures.mkdir(parents=True)
    for path in groups[sid]:
        (structures / path.name).symlink_to(path)
    torch.manual_seed(0)
    network = SpectralNet(N_FEATURES, (8,))
    network.target_mean.fill_(float(np.log(9.0)))  # reads ~9 Å: off-centre on purpose
    card = {"name": "calib-v3", "voxel_size": FEATURE_VOXEL_A, "patch_size": 0, "normalisation": "spectral",
            "target": {"transform": "log", "mean": 0.0, "std": 1.0}, "resolution_range": [1.0, 30.0]}
    (tmp_path / "training" / "runs" / "calib" / "model").mkdir(parents=True)
    card_path = save_model(network.eval(), card, tmp_path / "training" / "runs" / "calib" / "model" / "default.json")
    config = {"name": "calib-v3", "kind": "spectral", "dataset": "data/v3/rows/bfactor", "output": "runs/calib",
              "seed": 0, "calibration": {"structures": ["structures"], "per_structure": 2}}
    config_path = tmp_path / "training" / "configs" / "calib.json"
    config_path.parent.mkdir()
    config_path.write_text(json.dumps(config))
    weights_path = card_path.parent / json.loads(card_path.read_text())["weights"]
    weights = weights_path.read_bytes()
    assert main(["calibrate", str(config_path)]) == 0
    assert capsys.readouterr().out.count("\n") == 1
    written = json.loads(card_path.read_text())
    shift, scale = written["calibration"]["median_log_shift"], written["uncertainty"]["interval_scale"]
    assert scale > 0 and abs(shift) > 0.01  # the 9-Å network is not centred on the labels
    assert written["training"]["config"]["calibration"] == config["calibration"]
    assert weights_path.read_bytes() == weights  # the weights are not touched

    model = load_model(card_path)
    ratios, logs = [], []
    for index in range(2):  # two samples: maps of different sizes, where pooling and map-weighting differ
        params, arrays = make_sample(sid, groups[sid], index, 0, "bfactor")
        voxel = float(params["voxel_size"])
        variants = make_variants(arrays["map"], arrays["truth"], arrays["mask"] > 0.5, voxel,
                                 np.random.default_rng(params["seed"] + 3))[:2]
        for variant in variants:
            region = variant.label > 0
            result = predict(variant.density, voxel, region, model=model)
            label = variant.label[region]
            logs.append(np.log(result.resolution[region]) - np.log(label))
            ratios.append(np.abs(result.resolution[region] - label) / (1.6449 * result.uncertainty[region]))
    sizes = [len(values) for values in logs]  # each map weighs the same, as in the calibration's shift
    assert abs(map_weighted_quantile(np.concatenate(logs), sizes, 0.5)) < 0.05
    # the scale pools the voxels: map-weighted, the large maps' share would drop well below 90 %
    assert 0.88 <= (np.concatenate(ratios) <= 1.0).mean() <= 0.92


def test_calibrate_refuses_a_missing_card_or_a_config_without_calibration(tmp_path, capsys):
    from cryores_train.cli import main

    (tmp_path / "configs").mkdir()
    config = tmp_path / "configs" / "c.json"
    config.write_text(json.dumps({"kind": "spectral", "output": "runs/x", "calibration": {"structures": []}}))
    assert main(["calibrate", str(config)]) == 1
    assert "no such model card" in capsys.readouterr().err
    config.write_text(json.dumps({"kind": "spectral", "output": "runs/x"}))
    assert main(["calibrate", str(config)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "calibration" in err


def test_map_weighted_quantile_lets_no_map_outweigh_another():
    """A large map must not set the calibration's median shift: with each map weighing the same, a map of 9000
    voxels at 10 and one of 1000 at 0 have their median between them, not at the large map's value."""
    from cryores_train.fit_spectral import map_weighted_quantile

    values = np.concatenate([np.full(9000, 10.0), np.full(1000, 0.0)])
    assert np.median(values) == 10.0
    assert map_weighted_quantile(values, [9000, 1000], 0.4) == 0.0
    assert map_weighted_quantile(values, [9000, 1000], 0.6) == 10.0
    spread = np.concatenate([np.arange(100.0), np.arange(100.0, 110.0)])  # two maps: 100 and 10 voxels
    assert map_weighted_quantile(spread, [100, 10], 0.9) > 100.0  # pooled: 98.1


def test_cards_compared_side_by_side_get_names_that_tell_them_apart():
    from cryores_train.evaluate_v3 import card_labels

    cards = [Path("core/cryores/models/default.json"), Path("training/runs/steep/model/default.json"),
             Path("training/runs/feat/model/default.json")]
    assert card_labels(cards) == ["cryores/models/default.json", "steep/model/default.json",
                                  "feat/model/default.json"]
    assert card_labels([Path("a/x.json"), Path("b/y.json")]) == ["a/x.json", "b/y.json"]
    assert card_labels([Path("same.json"), Path("same.json")]) == ["same.json", "same.json"]


def test_input_statistics_describe_what_the_layers_read():
    from cryores.spectral_net import CROSSING_SNR, SpectralNet
    from cryores_train.fit_spectral import input_statistics

    rng = np.random.default_rng(0)
    x = rng.normal(size=(5000, N_INPUTS)).astype(np.float32)
    x[:, 3 * 13] = rng.random(5000) < 0.5  # has a noise reference, half the rows
    plain = SpectralNet(N_INPUTS, (8,))
    mean, std = input_statistics(plain, x)
    assert np.array_equal(mean, x.mean(axis=0)) and np.array_equal(std, x.std(axis=0))  # as before: bit-equal
    wide = rng.normal(size=(5000, N_INPUTS_PERCENTILES)).astype(np.float32)  # too wide for x.std's temporary
    mean, std = input_statistics(SpectralNet(N_INPUTS_PERCENTILES, (8,)), wide, chunk=700)
    np.testing.assert_allclose(mean, wide.astype(np.float64).mean(axis=0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(std, wide.astype(np.float64).std(axis=0), rtol=1e-5, atol=1e-5)
    derived = SpectralNet(N_INPUTS, (8,), context_without_reference=True, snr_crossings=True)
    mean, std = input_statistics(derived, x, chunk=700)  # chunked sums, as on all rows
    expanded = derived.expand(torch.from_numpy(x)).numpy()
    assert mean.shape == (N_INPUTS + len(CROSSING_SNR),)
    np.testing.assert_allclose(mean, expanded.astype(np.float64).mean(axis=0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(std, expanded.astype(np.float64).std(axis=0), rtol=1e-4, atol=1e-5)


def test_solve_calibration_recovers_a_known_shift_per_path_and_the_interval_scale():
    """Maps whose median reads exp(0.3) too coarse where the solvent gave a noise reference and
    exp(0.1) where it did not, with errors spread twice the network's sigma: the solver must return
    each path's shift, a pooled one between them, and a scale that makes the interval hold 90 %."""
    from cryores_train.fit_spectral import MIN_MAPS_PER_SHIFT, CalibrationMap, solve_calibration

    rng = np.random.default_rng(4)
    maps = []
    for number in range(2 * MIN_MAPS_PER_SHIFT):
        offset = 0.3 if number % 2 else 0.1
        label = rng.uniform(4.0, 8.0, 2000).astype(np.float32)
        sigma = np.full(label.size, 0.5 * np.exp(offset), np.float32)  # sigma, as coarse as the median
        error = rng.normal(0.0, 2.0 * 0.5, label.size).astype(np.float32)  # spread twice the network's sigma
        median = (label + error) * np.float32(np.exp(offset))
        maps.append(CalibrationMap(median, np.full(label.size, 1.0, np.float32), sigma, label, 2.0,
                                   f"s{number}", 0, bool(number % 2)))
    scale, shifts = solve_calibration(maps, ceiling=30.0)
    assert abs(shifts["with_reference"] - 0.3) < 0.01 and abs(shifts["without_reference"] - 0.1) < 0.01
    assert 0.12 < shifts["pooled"] < 0.28
    assert abs(scale - 2.0) < 0.1
    floored = [CalibrationMap(m.median, np.full(m.label.size, 9.0, np.float32), m.sigma, m.label, m.nyquist,
                              m.structure, m.variant, m.has_reference) for m in maps]
    moved = solve_calibration(floored, ceiling=30.0)[1]["with_reference"]
    assert moved != pytest.approx(0.3, abs=0.01)  # the floor moves it
    # too few maps on a path: it takes the pooled shift rather than a handful of maps' own offsets
    few = maps[:MIN_MAPS_PER_SHIFT] + [m for m in maps[MIN_MAPS_PER_SHIFT:] if m.has_reference]
    _, shifts = solve_calibration(few, ceiling=30.0)
    assert shifts["without_reference"] == shifts["pooled"] != shifts["with_reference"]
