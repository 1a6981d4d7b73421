"""The simulator: deterministic, resumable, metadata right, and its design is physically true."""

from __future__ import annotations

import json

import mrcfile
import numpy as np
import pytest

from cryores import local_fsc
from cryores.fourier import spatial_frequency
from cryores.mrc_io import read_map
from cryores_train.cli import main
from cryores_train.simulate import (
    CLIFF_DECAY,
    CLIFF_NOISE,
    CLIFF_STEP,
    STEEPNESS,
    V3_STEEPNESS,
    _place,
    atom_voxels,
    draw_parameters,
    draw_parameters_v3,
    quantised_levels,
    run_simulation,
    sample_seed,
    simulate,
    simulate_atom_cliff,
)
from cryores_train.structures import discover, load_model


@pytest.fixture(scope="module")
def bm5(shared):
    return shared / "data/structures/bm5"


@pytest.fixture(scope="module")
def complex_1akj(bm5):
    groups = discover(bm5)
    return load_model("1AKJ", groups["1AKJ"])


def test_bm5_pairs_are_combined_into_one_structure(bm5, complex_1akj):
    groups = discover(bm5)
    assert len(groups) == 231 and all(len(files) == 2 for files in groups.values())
    assert {p.name for p in groups["1AKJ"]} == {"1AKJ_r_b-matched.pdb.gz", "1AKJ_l_b-matched.pdb.gz"}
    assert len(complex_1akj.positions) > 3000 and complex_1akj.group.max() >= 1  # both files' chains


def test_single_pdb_file_is_a_structure(shared):
    groups = discover(shared / "data/structures/3l08.pdb")
    assert list(groups) == ["3L08"]


def _params(seed: int, voxel: float = 1.5) -> dict:
    params = draw_parameters(np.random.default_rng(seed))
    params["voxel_size"] = voxel
    return params


def test_same_seed_same_maps_and_truth_is_in_range(complex_1akj):
    a = simulate(complex_1akj, _params(1), 7)
    b = simulate(complex_1akj, _params(1), 7)
    for name in ("map", "half1", "half2", "truth", "mask"):
        np.testing.assert_array_equal(a[name], b[name])
    mask = a["mask"] > 0.5
    assert (a["truth"][~mask] == 0).all()
    assert a["truth"][mask].min() >= max(2.0, 2.2 * 1.5) - 1e-6 and a["truth"][mask].max() <= 12.0
    assert not np.array_equal(a["half1"], a["half2"])
    np.testing.assert_allclose(a["map"], 0.5 * (a["half1"] + a["half2"]), rtol=1e-5, atol=1e-4)
    # the noiseless signal: what is left in each half is noise, independent between the halves
    n1, n2 = (a["half1"] - a["signal"]).ravel(), (a["half2"] - a["signal"]).ravel()
    assert n1.std() > 0.05 * a["signal"].std() and abs(np.corrcoef(n1, n2)[0, 1]) < 0.05


@pytest.mark.parametrize("steepness", [STEEPNESS, V3_STEEPNESS[0], V3_STEEPNESS[1]])
def test_designed_resolution_is_what_local_fsc_measures(complex_1akj, steepness):
    """The physics check on one sample: local FSC between the half maps finds the design, at the
    default SNR fall-off and at both ends of the drawn range (the label must not move with it)."""
    params = _params(3)
    params.update(global_b=0.0, flatten=False, n_bumps=0, steepness=steepness)
    sample = simulate(complex_1akj, params, 11)
    mask = sample["mask"] > 0.5
    result = local_fsc(sample["half1"], sample["half2"], params["voxel_size"], mask, window=30)
    truth, estimate = sample["truth"][mask], result.resolution[mask]
    assert np.abs(estimate - truth).mean() < 0.8
    assert abs(np.median(estimate - truth)) < 0.6
    assert np.corrcoef(truth, estimate)[0, 1] > 0.5


def test_run_writes_samples_resumes_and_keeps_voxel_size(tmp_path, shared):
    structure = shared / "data/structures/3l08.pdb"
    ids = run_simulation(structure, tmp_path, per_structure=2, seed=5, jobs=1, progress=False)
    assert ids == ["3L08_000", "3L08_001"]
    folder = tmp_path / "3L08_000"
    params = json.loads((folder / "params.json").read_text())
    assert params["structure_id"] == "3L08" and params["seed"] == sample_seed(5, "3L08", 0)
    for name in ("map", "half1", "half2", "truth", "mask"):
        with mrcfile.open(folder / f"{name}.mrc") as mrc:
            assert float(mrc.voxel_size.x) == pytest.approx(params["voxel_size"], rel=1e-5)
            assert mrc.data.shape == (params["box"],) * 3
    before = (folder / "map.mrc").stat().st_mtime_ns
    (tmp_path / "3L08_001" / "params.json").unlink()  # as if interrupted before the end
    run_simulation(structure, tmp_path, per_structure=2, seed=5, jobs=1, progress=False)
    assert (folder / "map.mrc").stat().st_mtime_ns == before  # finished sample skipped
    assert (tmp_path / "3L08_001" / "params.json").is_file()  # unfinished one redone
    assert not list(tmp_path.glob(".*"))  # no temporary folders left
    again = read_map(tmp_path / "3L08_001" / "map.mrc").data
    rerun = tmp_path / "again"
    run_simulation(structure, rerun, per_structure=2, seed=5, jobs=1, progress=False)
    np.testing.assert_array_equal(read_map(rerun / "3L08_001" / "map.mrc").data, again)


def test_cli_simulate_and_label(tmp_path, shared, capsys):
    assert main(["simulate", str(shared / "data/structures/3l08.pdb"), "-o", str(tmp_path), "--quiet"]) == 0
    assert main(["label", str(tmp_path), "--method", "localfsc", "--quiet"]) == 0
    label = read_map(tmp_path / "3L08_000" / "localfsc.mrc").data
    mask = read_map(tmp_path / "3L08_000" / "mask.mrc").data > 0.5
    assert (label[~mask] == 0).all() and (label[mask] > 0).all()
    assert "localfsc" in json.loads((tmp_path / "3L08_000" / "labels.json").read_text())
    assert main(["simulate", str(tmp_path / "absent"), "-o", str(tmp_path / "x"), "--quiet"]) == 1
    assert "no such file" in capsys.readouterr().err


def test_patchy_design_has_no_radial_trend(complex_1akj):
    """The patchy design spans its whole range over the atoms, but unlike the radial one says
    nothing on average about where the better parts are."""
    from cryores_train.simulate import atom_voxels, patchy_design

    voxel, n = 2.0, 64
    positions = complex_1akj.positions - complex_1akj.positions.mean(axis=0) + n * voxel / 2
    index = atom_voxels(positions, n, voxel)
    radius = np.linalg.norm(positions - positions.mean(axis=0), axis=1)
    correlations = []
    for seed in range(12):
        field = patchy_design(positions, n, voxel, np.random.default_rng(seed))[index]
        assert field.min() == pytest.approx(0.0, abs=1e-6) and field.max() == pytest.approx(1.0, abs=1e-6)
        correlations.append(np.corrcoef(radius, field)[0, 1])
    assert abs(np.mean(correlations)) < 0.25 and np.std(correlations) > 0.1


def test_blocks_design_is_piecewise_constant_with_sharp_steps(complex_1akj):
    """The blocks design holds 3-8 levels, the best 0 and the worst 1, each a region of its own:
    neighbouring voxels either share a level or step between two levels (no smooth ramp)."""
    from cryores_train.simulate import blocks_design

    voxel, n = 2.0, 48
    positions = complex_1akj.positions - complex_1akj.positions.mean(axis=0) + n * voxel / 2
    for seed in range(6):
        field = blocks_design(positions, n, voxel, np.random.default_rng(seed))
        levels = np.unique(field)
        assert 3 <= levels.size <= 8 and levels[0] == 0.0 and levels[-1] == 1.0
        steps = np.abs(np.diff(field, axis=0))
        assert (steps > 0).mean() < 0.2  # regions, not noise
        assert np.isin(np.round(steps[steps > 0], 6), np.round(np.abs(levels[:, None] - levels[None]), 6)).all()


def test_sharp_share_only_changes_the_design():
    """A share of 0 gives the draws evaluation and calibration always used; any share changes
    the design alone (one uniform number picks it), so the rest of a sample stays the same."""
    designs = []
    for seed in range(40):
        plain = draw_parameters_v3(np.random.default_rng(seed), "bfactor")
        assert draw_parameters_v3(np.random.default_rng(seed), "bfactor", 0.0) == plain
        sharp = draw_parameters_v3(np.random.default_rng(seed), "bfactor", 0.3)
        assert {k: v for k, v in sharp.items() if k != "design"} == {k: v for k, v in plain.items() if k != "design"}
        assert plain["design"] in ("patchy", "radial")
        assert draw_parameters_v3(np.random.default_rng(seed), "bfactor", 1.0)["design"] == "blocks"
        designs.append(sharp["design"])
    assert 4 <= designs.count("blocks") <= 22 and "patchy" in designs and "radial" in designs


def test_steep_share_only_changes_the_steepness_of_bfactor_samples():
    """Share 0 keeps the default steepness (evaluation and calibration draws); a share draws it
    for about that share of bfactor samples, inside the range, and changes nothing else."""
    drawn = []
    for seed in range(60):
        plain = draw_parameters_v3(np.random.default_rng(seed), "bfactor")
        steep = draw_parameters_v3(np.random.default_rng(seed), "bfactor", 0.0, 0.5)
        assert plain["steepness"] == STEEPNESS
        others = {k: v for k, v in steep.items() if k != "steepness"}
        assert others == {k: v for k, v in plain.items() if k != "steepness"}
        assert draw_parameters_v3(np.random.default_rng(seed), "lowpass", 0.0, 1.0)["steepness"] == STEEPNESS
        if steep["steepness"] != STEEPNESS:
            drawn.append(steep["steepness"])
    assert 15 <= len(drawn) <= 45
    assert all(V3_STEEPNESS[0] <= s <= V3_STEEPNESS[1] for s in drawn) and max(drawn) > 2 * min(drawn)


def test_cliff_family_draws_its_own_choices_after_everything_else():
    """The per-atom cliff family adds its decay and noise draws last: the other families'
    draws (and so every bfactor and lowpass sample made before it) stay the same."""
    for seed in range(20):
        cliff = draw_parameters_v3(np.random.default_rng(seed), "cliff")
        plain = draw_parameters_v3(np.random.default_rng(seed), "bfactor")
        assert {k: v for k, v in cliff.items() if not k.startswith("cliff_") and k != "family"} == \
            {k: v for k, v in plain.items() if k != "family"}
        assert CLIFF_DECAY[0] <= cliff["cliff_decay"] <= CLIFF_DECAY[1]
        assert CLIFF_NOISE[0] <= cliff["cliff_noise"] <= CLIFF_NOISE[1]
        assert "cliff_decay" not in plain and cliff["steepness"] == STEEPNESS


def test_quantised_levels_lie_on_the_ladder_and_never_below_the_floor():
    field = np.exp(np.random.default_rng(0).uniform(np.log(1.5), np.log(20.0), 500)).astype(np.float32)
    rungs = quantised_levels(field, CLIFF_STEP, 2.2)
    assert rungs.min() >= 2.2 - 1e-6
    above = rungs > 2.2 + 1e-4
    steps = np.log(rungs[above]) / np.log(CLIFF_STEP)
    np.testing.assert_allclose(steps, np.rint(steps), atol=1e-4)  # on the ladder
    assert (np.abs(np.log(rungs[above] / field[above])) <= 0.5 * np.log(CLIFF_STEP) + 1e-5).all()


def _cliff_sample(model, decay: float, noise: float) -> tuple[dict, dict]:
    params = draw_parameters(np.random.default_rng(5))
    params.update(voxel_size=1.2, global_b=0.0, flatten=False, n_bumps=0, cliff_decay=decay, cliff_noise=noise)
    params["periphery_resolution"] = params["core_resolution"] + 5.0
    return params, simulate_atom_cliff(model, params, 11)


def test_cliff_family_signal_ends_at_each_atoms_rung(complex_1akj):
    """Nothing finer than the finest rung is left in the noiseless signal, and a region of one
    rung holds power up to its rung and none beyond: the label is where the signal ends. The
    cached model's occupancies are left as they were."""
    before = [atom.occ for atom in complex_1akj.atoms()]
    params, sample = _cliff_sample(complex_1akj, 0.0, 10.0)
    assert [atom.occ for atom in complex_1akj.atoms()] == before
    mask = sample["mask"] > 0.5
    rungs = np.unique(sample["truth"][mask])
    assert params["rungs"] >= 4 and len(rungs) >= 4
    voxel = params["voxel_size"]
    frequency = spatial_frequency(sample["signal"].shape, (voxel,) * 3)
    power = np.abs(np.fft.rfftn(sample["signal"] - sample["signal"].mean())) ** 2
    beyond = frequency > 1.06 / rungs.min()
    assert power[beyond].sum() < 1e-6 * power.sum()
    below = (frequency > 0.8 / rungs.min()) & (frequency < 1.0 / rungs.min())
    assert power[below].sum() > 1e-3 * power.sum()  # no fall-off to speak of before the cliff


def test_cliff_family_draws_each_atom_at_its_own_occupancy(bm5):
    """An atom of occupancy 0 adds no signal (alternate conformers share theirs): a chain whose
    occupancy is set to 0 nearly vanishes from the noiseless signal, where drawing every atom at
    full occupancy in its rung had kept it."""
    model = load_model("1AKJ", discover(bm5)["1AKJ"])  # its own copy: occupancies are changed here
    chain = np.argmin(np.bincount(model.group))  # the smallest chain
    at_chain = []
    for zeroed in (False, True):
        for atom, group in zip(model.atoms(), model.group):
            atom.occ = 0.0 if zeroed and group == chain else 1.0
        params, sample = _cliff_sample(model, 0.0, 10.0)
        positions = _place(model, dict(params))[0]
        values = sample["signal"][atom_voxels(positions[model.group == chain], params["box"], params["voxel_size"])]
        at_chain.append(float(np.mean(values - np.median(sample["signal"]))))
    assert at_chain[0] > 0 and at_chain[1] < 0.3 * at_chain[0]


@pytest.mark.parametrize("decay", [CLIFF_DECAY[0], CLIFF_DECAY[1]])
def test_cliff_family_local_fsc_finds_the_design_at_the_noisiest_draw(complex_1akj, decay):
    """At the highest noise drawn (where the SNR at the cliff is lowest), half-map local FSC ranks
    the regions as designed and finds their level within its window's reach: its 30 Å window mixes
    finer neighbours in and reads up to ~20 % finer (more at lower noise, as on the held-out
    family), which is why the label is each atom's cliff, not local FSC."""
    params, sample = _cliff_sample(complex_1akj, decay, CLIFF_NOISE[0])
    mask = sample["mask"] > 0.5
    result = local_fsc(sample["half1"], sample["half2"], params["voxel_size"], mask, window=30)
    truth, estimate = sample["truth"][mask], result.resolution[mask]
    ratio = np.log(estimate / truth)  # a 30 Å window's shells are 1/30 Å^-1 apart: judge in ratios
    assert -0.25 < np.median(ratio) < 0.1 and np.abs(ratio).mean() < 0.3  # finer by up to ~20 %, coarser < 10 %
    assert np.corrcoef(truth, estimate)[0, 1] > 0.5
