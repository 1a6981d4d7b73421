"""Lower-bound rows from real maps (cryores_train.real_rows)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from cryores.errors import CryoResError
from cryores.mrc_io import read_map
from cryores.spectral import N_INPUTS, N_INPUTS_NEIGHBOURHOOD, content_edge, map_spectrum
from cryores_train.evaluate_v3 import REAL_MAPS
from cryores_train.real_rows import (
    build_real_rows,
    cut,
    lower_bound_variants,
    map_id,
    real_map_files,
)
from cryores_train.rows import load_rows
from cryores_train.variants import KINDS

ROOT = Path(__file__).resolve().parents[2]
REAL_MAPS_FOLDER = ROOT / "training" / "real_maps"
EMD = re.compile(r"emd[-_]?(\d{3,5})", re.IGNORECASE)


@pytest.fixture(scope="module")
def raw_map() -> tuple[np.ndarray, tuple[float, float, float]]:
    loaded = read_map(ROOT / "tests" / "data" / "real" / "emd_5625.map.gz")  # no zeros (wide soft mask), 4.23 Å/px
    return loaded.data.astype(np.float32), tuple(float(v) for v in loaded.voxel_size)


@pytest.mark.parametrize("brick_wall", [True, False])
def test_a_cut_leaves_nothing_finer_than_x(raw_map, brick_wall):
    density, voxel = raw_map
    assert content_edge(map_spectrum(density), density.shape, voxel) == pytest.approx(2 * voxel[0])
    edge = content_edge(map_spectrum(cut(density, voxel, 16.0, brick_wall)), density.shape, voxel)
    assert 15.0 <= edge <= 17.5


def test_variants_are_cut_between_the_limits_and_sometimes_noisier_or_masked(shared):
    loaded = read_map(shared / "data" / "maps" / "emd_5168.map")  # raw, 1.74 Å/px
    density, voxel = loaded.data.astype(np.float32), float(loaded.voxel_size[0])
    variants = lower_bound_variants(density, voxel, 16, np.random.default_rng(0))
    assert len(variants) == 16
    notes = [note for *_, note in variants]
    assert any(n["noise"] > 0 for n in notes) and any(n["noise"] == 0 for n in notes)
    assert any(n["masked"] for n in notes) and any(n["brick_wall"] for n in notes)
    for variant, mask, x, note in variants:
        assert 1.5 * 2 * voxel <= x <= 20.0 and mask.shape == variant.shape == density.shape and mask.any()
        assert np.isfinite(variant).all()
        if note["noise"] == 0 and not note["masked"]:  # nothing finer than X (noise or a mask's edge may add some)
            assert content_edge(map_spectrum(variant), variant.shape, (voxel,) * 3) >= 0.9 * x
    assert lower_bound_variants(density, 14.0, 4, np.random.default_rng(0)) == []  # Nyquist 28 Å: no X fits


def test_rows_of_a_real_map_are_lower_bounds_in_the_training_split(tmp_path):
    maps = tmp_path / "maps"
    maps.mkdir()
    shutil.copy(ROOT / "tests" / "data" / "real" / "emd_5625.map.gz", maps)
    (maps / "notes.txt").write_text("not a map")
    assert [p.name for p in real_map_files(maps)] == ["emd_5625.map.gz"] and map_id(maps / "a.map.gz") == "a"
    name = build_real_rows((str(maps / "emd_5625.map.gz"), str(tmp_path / "rows"), 3, 0, "context"))
    with np.load(tmp_path / "rows" / name) as data:
        assert data["x"].shape[1] == N_INPUTS and data["bound"].all()
        assert (data["kind"] == KINDS.index("real")).all() and str(data["split"]) == "train"
        assert (data["y"] >= 1.5 * 2 * 4.23 - 1e-3).all() and len(np.unique(data["y"].round(1))) >= 2
        variant = data["variant"]  # each cut of the map is told apart (all rows are of one kind)
        assert variant.max() >= 1 and (np.diff(variant) >= 0).all()
        assert np.array_equal(np.unique(variant), np.arange(variant.max() + 1))
    mtime = (tmp_path / "rows" / name).stat().st_mtime
    build_real_rows((str(maps / "emd_5625.map.gz"), str(tmp_path / "rows"), 3, 0, "context"))  # finished: skipped
    assert (tmp_path / "rows" / name).stat().st_mtime == mtime
    with pytest.raises(CryoResError, match=f"{N_INPUTS} inputs per row, not {N_INPUTS_NEIGHBOURHOOD}"):
        build_real_rows((str(maps / "emd_5625.map.gz"), str(tmp_path / "rows"), 3, 0, "neighbourhood"))
    assert len(load_rows([tmp_path / "rows"], "train")["y"]) == len(np.load(tmp_path / "rows" / name)["y"])
    with pytest.raises(CryoResError, match="no map files"):
        real_map_files(tmp_path / "rows")
    with pytest.raises(CryoResError, match="not a folder of real maps"):
        real_map_files(tmp_path / "missing")


def test_training_real_maps_are_none_of_the_evaluations_real_maps():
    """The real-map checks must stay on maps the model never saw."""
    training = {m.group(1).lstrip("0") for p in real_map_files(REAL_MAPS_FOLDER) for m in [EMD.search(p.name)] if m}
    assert len(training) == len(real_map_files(REAL_MAPS_FOLDER))  # every training map names its EMDB entry
    evaluation = {m.group(1).lstrip("0") for name, path, *_ in REAL_MAPS for m in [EMD.search(f"{name} {path.name}")]
                  if m}
    assert len(evaluation) >= 8 and not training & evaluation
