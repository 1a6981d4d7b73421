"""Label conventions per source kind, manifests and sample folders, with real MRC files on disk."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import synthetic_map, write_mrc
from cryores.errors import CryoResError
from cryores_train.labels import (
    LABEL_KINDS,
    LabelledMap,
    check_entry,
    entries_from_samples,
    load_labelled_map,
    normalise_label,
    read_manifest,
)

SHAPE = (20, 20, 20)


def one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------------------- conversions

def test_resmap_100_and_above_mean_unassigned():
    raw = np.array([[[100.0, 150.0, 5.5, 99.5]]], dtype=np.float32)
    label = normalise_label(raw, "resmap")
    np.testing.assert_array_equal(label, [[[0.0, 0.0, 5.5, 99.5]]])
    assert label.dtype == np.float32
    assert raw[0, 0, 0] == 100.0  # the input is not modified


@pytest.mark.parametrize("kind", LABEL_KINDS)
def test_every_kind_cleans_nonfinite_negative_and_outside_mask(kind):
    raw = np.array([[[np.nan, np.inf, -np.inf, -3.0, 4.0, 6.0]]], dtype=np.float64)
    mask = np.array([[[True, True, True, True, True, False]]])
    label = normalise_label(raw, kind, mask)
    np.testing.assert_array_equal(label, [[[0, 0, 0, 0, 4.0, 0]]])
    assert label.dtype == np.float32


@pytest.mark.parametrize("kind", ["truth", "localfsc", "cryores", "monores", "relion", "blocres"])
def test_kinds_in_angstrom_keep_large_values(kind):
    """Only ResMap uses 100 Å as a sentinel; for others 120 Å is a (poor) resolution."""
    raw = np.array([[[0.0, 3.2, 120.0]]], dtype=np.float32)
    np.testing.assert_array_equal(normalise_label(raw, kind), raw)


def test_soft_mask_is_thresholded_at_half():
    raw = np.full((1, 1, 3), 7.0, dtype=np.float32)
    label = normalise_label(raw, "monores", np.array([[[0.2, 0.5, 0.9]]]))
    np.testing.assert_array_equal(label, [[[0.0, 0.0, 7.0]]])


def test_unknown_kind_and_bad_mask_shape_are_one_line_errors():
    with pytest.raises(CryoResError, match="unknown label kind 'phenix'") as excinfo:
        normalise_label(np.ones((2, 2, 2)), "phenix")
    assert "resmap" in one_line_error(excinfo)
    with pytest.raises(CryoResError, match="shape"):
        normalise_label(np.ones((2, 2, 2)), "truth", np.ones((3, 3, 3)))


def test_labelled_map_normalises_kind_and_structure_id(tmp_path):
    entry = LabelledMap(tmp_path / "m.mrc", tmp_path / "l.mrc", None, " ResMap ", " 3l08 ", "x")
    assert (entry.label_kind, entry.structure_id) == ("resmap", "3L08")
    with pytest.raises(CryoResError, match="empty structure id"):
        LabelledMap(tmp_path / "m.mrc", tmp_path / "l.mrc", None, "truth", "  ", "x")
    with pytest.raises(CryoResError, match="voxel size"):
        LabelledMap(tmp_path / "m.mrc", tmp_path / "l.mrc", None, "truth", "1ABC", "x", voxel_size=0.0)


# ---------------------------------------------------------------------------- files

@pytest.fixture
def triple(tmp_path) -> dict[str, Path]:
    """A map, a ResMap-style label (100 outside a cube, 4-6 Å inside) and a mask of that cube."""
    mask = np.zeros(SHAPE, dtype=np.float32)
    mask[5:15, 5:15, 5:15] = 1
    label = np.full(SHAPE, 100.0, dtype=np.float32)
    label[5:15, 5:15, 5:15] = np.linspace(4, 6, 1000).reshape(10, 10, 10)
    label[6, 6, 6] = 100.0  # unassigned inside the mask
    return {"map": write_mrc(tmp_path / "map.mrc", synthetic_map(SHAPE, n_atoms=60), voxel_size=1.2),
            "label": write_mrc(tmp_path / "map_resmap.mrc", label, voxel_size=1.2),
            "mask": write_mrc(tmp_path / "mask.mrc", mask, voxel_size=1.2)}


def test_load_resmap_label_from_files(triple):
    entry = LabelledMap(triple["map"], triple["label"], triple["mask"], "resmap", "1ABC", "test")
    loaded = load_labelled_map(entry)
    assert loaded.label.shape == SHAPE and loaded.mask.dtype == bool
    assert loaded.density.voxel_size == pytest.approx((1.2,) * 3)
    assert np.all(loaded.label[~loaded.mask] == 0)
    assert loaded.label[6, 6, 6] == 0  # 100 Å inside the mask: unassigned
    inside = loaded.label[loaded.mask & (loaded.label > 0)]
    assert inside.min() >= 4.0 and inside.max() <= 6.0 and inside.size == 999


def test_load_without_mask_uses_the_automatic_mask(triple):
    entry = LabelledMap(triple["map"], triple["label"], None, "resmap", "1ABC", "test", voxel_size=1.0)
    loaded = load_labelled_map(entry)
    assert 0 < loaded.mask.sum() < loaded.mask.size
    assert loaded.density.voxel_size == (1.0, 1.0, 1.0)  # the entry's voxel size wins
    assert np.all(loaded.label[~loaded.mask] == 0)


def test_label_on_another_grid_is_refused_before_reading(triple, tmp_path):
    small = write_mrc(tmp_path / "small.mrc", np.ones((10, 20, 20), dtype=np.float32))
    entry = LabelledMap(triple["map"], small, None, "relion", "1ABC", "test")
    with pytest.raises(CryoResError, match=r"grid shape \(10, 20, 20\) but the map") as excinfo:
        check_entry(entry)
    one_line_error(excinfo)
    with pytest.raises(CryoResError, match="grid shape"):
        load_labelled_map(entry)
    bad_mask = LabelledMap(triple["map"], triple["label"], small, "relion", "1ABC", "test")
    with pytest.raises(CryoResError, match="mask .* grid shape"):
        check_entry(bad_mask)


# ---------------------------------------------------------------------------- manifest

def write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_manifest_paths_relative_to_its_folder(triple, tmp_path):
    sub = tmp_path / "lists"
    sub.mkdir()
    csv_path = write_csv(sub / "m.csv", (
        "map, label, label_kind, structure_id, mask, voxel_size, source\n"
        f"../map.mrc, ../map_resmap.mrc, ResMap, 1a2k, ../mask.mrc, 1.06, EMD-1234\n"
        f"{triple['map']},{triple['label']},truth,3L08,,,\n"
        "\n"))
    first, second = read_manifest(csv_path)
    assert first.map.resolve() == triple["map"].resolve()
    assert first.mask.resolve() == triple["mask"].resolve()
    assert (first.label_kind, first.structure_id) == ("resmap", "1A2K")
    assert (first.source, first.voxel_size) == ("EMD-1234", 1.06)
    assert second.map == triple["map"] and second.mask is None and second.voxel_size is None
    assert second.source == str(triple["map"])  # empty source: the map as written


def test_manifest_needs_only_the_required_columns(triple, tmp_path):
    csv_path = write_csv(tmp_path / "m.csv", "structure_id,map,label,label_kind\n1ABC,map.mrc,map_resmap.mrc,blocres\n")
    (entry,) = read_manifest(csv_path)
    assert entry.label_kind == "blocres" and entry.mask is None


@pytest.mark.parametrize("text, message", [
    ("map,label,structure_id\nmap.mrc,map_resmap.mrc,1ABC\n", "missing column.* label_kind"),
    ("map,label,label_kind,structure_id,maks\nmap.mrc,map_resmap.mrc,resmap,1ABC,mask.mrc\n", "unknown column.* maks"),
    ("map,label,label_kind,structure_id\nmap.mrc,nope.mrc,resmap,1ABC\n", "line 2: label .*nope.mrc: no such file"),
    ("map,label,label_kind,structure_id\nmap.mrc,map_resmap.mrc,resmap,1ABC\nmap.mrc,map_resmap.mrc,phenix,2ABC\n",
     "line 3: unknown label kind 'phenix'"),
    ("map,label,label_kind,structure_id,voxel_size\nmap.mrc,map_resmap.mrc,resmap,1ABC,big\n", "not a number"),
    ("map,label,label_kind,structure_id\nmap.mrc,map_resmap.mrc,resmap,\n", "empty structure_id"),
    ("map,label,label_kind,structure_id\n", "lists no maps"),
    ("", "is empty"),
])
def test_manifest_errors_are_one_line(triple, tmp_path, text, message):
    csv_path = write_csv(tmp_path / "m.csv", text)
    with pytest.raises(CryoResError, match=message) as excinfo:
        read_manifest(csv_path)
    assert str(csv_path) in one_line_error(excinfo)


def test_missing_manifest(tmp_path):
    with pytest.raises(CryoResError, match="no such file"):
        read_manifest(tmp_path / "absent.csv")


# ---------------------------------------------------------------------------- sample folders

def make_sample(root: Path, name: str, structure_id: str, labels=("truth",), finished=True) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    write_mrc(folder / "map.mrc", np.random.default_rng(0).normal(size=(8, 8, 8)).astype(np.float32), voxel_size=1.5)
    write_mrc(folder / "mask.mrc", np.ones((8, 8, 8), dtype=np.float32))
    for label in labels:
        write_mrc(folder / f"{label}.mrc", np.full((8, 8, 8), 5.0, dtype=np.float32))
    if finished:
        (folder / "params.json").write_text(json.dumps({"structure_id": structure_id, "voxel_size": 1.5, "seed": 1}))
    return folder


def test_entries_from_finished_samples_only(tmp_path):
    make_sample(tmp_path, "b_0001", "1a2k", labels=("truth", "localfsc"))
    make_sample(tmp_path, "a_0000", "3L08")
    make_sample(tmp_path, "c_0002", "4XYZ", finished=False)  # half-written: no params.json
    entries = entries_from_samples(tmp_path)
    assert [e.source for e in entries] == ["a_0000", "b_0001"]
    first = entries[0]
    assert first.map == tmp_path / "a_0000" / "map.mrc" and first.label == tmp_path / "a_0000" / "truth.mrc"
    assert first.mask == tmp_path / "a_0000" / "mask.mrc"
    assert (first.label_kind, first.structure_id, first.voxel_size) == ("truth", "3L08", 1.5)
    assert entries[1].structure_id == "1A2K"


def test_sample_without_the_asked_label(tmp_path):
    make_sample(tmp_path, "s1", "1ABC", labels=("truth", "localfsc"))
    make_sample(tmp_path, "s2", "2ABC", labels=("truth",))
    with pytest.raises(CryoResError, match="s2: label localfsc.mrc is missing.*--method localfsc") as excinfo:
        entries_from_samples(tmp_path, "localfsc")
    one_line_error(excinfo)


def test_sample_root_errors(tmp_path):
    with pytest.raises(CryoResError, match="no such folder"):
        entries_from_samples(tmp_path / "absent")
    with pytest.raises(CryoResError, match="no finished sample"):
        entries_from_samples(tmp_path)
    make_sample(tmp_path, "s1", "1ABC")
    with pytest.raises(CryoResError, match="unknown sample label"):
        entries_from_samples(tmp_path, "monores")
    (tmp_path / "s1" / "params.json").write_text(json.dumps({"voxel_size": 1.0}))
    with pytest.raises(CryoResError, match="structure_id"):
        entries_from_samples(tmp_path)
