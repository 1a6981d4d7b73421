"""Structure splits, HDF5 patch datasets and the ``cryores-train dataset`` command, on real files."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import h5py
import mrcfile
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import synthetic_map, write_mrc
from cryores.errors import CryoResError
from cryores.masking import automatic_mask
from cryores.normalise import masked_zscore
from cryores_train.cli import main
from cryores_train.dataset import SPLITS, build_dataset, cut_patch, patch_starts, split_by_structure
from cryores_train.labels import LabelledMap, entries_from_samples

SHAPE = (32, 32, 32)
PATCH = 16


# ---------------------------------------------------------------------------- split

@settings(max_examples=60, deadline=None)
@given(ids=st.lists(st.text(alphabet="ABCDEFGH0123456789", min_size=1, max_size=4), max_size=60),
       seed=st.integers(0, 2**31))
def test_split_puts_every_structure_on_exactly_one_side(ids, seed):
    assignment = split_by_structure(ids, seed=seed)
    assert set(assignment) == set(ids)
    assert set(assignment.values()) <= set(SPLITS)
    if len(set(ids)) >= 3:
        assert set(assignment.values()) == set(SPLITS)
    assert split_by_structure(list(reversed(ids)) + ids, seed=seed) == assignment  # order, repeats


def test_split_is_deterministic_and_near_70_15_15():
    ids = [f"{i:04d}" for i in range(200)]
    first = split_by_structure(ids, seed=3)
    assert first == split_by_structure(ids, seed=3)
    assert Counter(first.values()) == {"train": 140, "val": 30, "test": 30}
    assert first != split_by_structure(ids, seed=4)  # the seed matters


@pytest.mark.parametrize("n, expected", [(1, {"train": 1}), (3, {"train": 1, "val": 1, "test": 1}),
                                         (5, {"train": 3, "val": 1, "test": 1})])
def test_split_with_few_structures(n, expected):
    assert Counter(split_by_structure([f"S{i}" for i in range(n)]).values()) == expected


@pytest.mark.parametrize("fractions", [(0.5, 0.5), (0.7, 0.2, 0.2), (0.0, 0.5, 0.5), (1.2, -0.1, -0.1)])
def test_split_refuses_bad_fractions(fractions):
    with pytest.raises(CryoResError, match="fractions"):
        split_by_structure(["A"], fractions)


def test_split_without_validation_fraction():
    assignment = split_by_structure([f"S{i}" for i in range(10)], (0.8, 0.0, 0.2))
    assert Counter(assignment.values()) == {"train": 8, "test": 2}


# ---------------------------------------------------------------------------- patch grid

@pytest.mark.parametrize("length, patch, stride, expected", [
    (32, 16, 16, [0, 16]), (33, 16, 16, [0, 16, 32]), (10, 16, 16, [0]), (32, 16, 8, [0, 8, 16])])
def test_patch_starts_cover_the_axis(length, patch, stride, expected):
    assert patch_starts(length, patch, stride) == expected


def test_cut_patch_fills_past_the_end():
    volume = np.arange(27, dtype=np.float32).reshape(3, 3, 3)
    patch = cut_patch(volume, (1, 1, 1), 4, -1.0)
    assert patch.shape == (4, 4, 4)
    np.testing.assert_array_equal(patch[:2, :2, :2], volume[1:, 1:, 1:])
    assert np.all(patch[2:] == -1.0)


# ---------------------------------------------------------------------------- sample trees

def sphere(shape, radius, centre=None) -> np.ndarray:
    centre = np.array(shape) / 2.0 if centre is None else np.asarray(centre)
    grid = np.indices(shape).astype(np.float32) + 0.5
    return np.sqrt(((grid - centre[:, None, None, None]) ** 2).sum(axis=0)) <= radius


def make_sample(root: Path, name: str, structure_id: str, *, seed: int, voxel_size: float = 1.0,
                shape=SHAPE, mask: np.ndarray | None = None) -> Path:
    """A finished sample folder: map, mask, truth (3-8 Å rising outwards, 0 outside), params.json."""
    folder = root / name
    folder.mkdir(parents=True)
    mask = sphere(shape, 0.35 * min(shape)) if mask is None else mask
    radius = np.sqrt(((np.indices(shape) - np.array(shape)[:, None, None, None] / 2) ** 2).sum(axis=0))
    truth = np.where(mask, 3.0 + 5.0 * radius / radius.max(), 0.0).astype(np.float32)
    write_mrc(folder / "map.mrc", synthetic_map(shape, n_atoms=120, seed=seed), voxel_size=voxel_size)
    write_mrc(folder / "mask.mrc", mask.astype(np.float32), voxel_size=voxel_size)
    write_mrc(folder / "truth.mrc", truth, voxel_size=voxel_size)
    (folder / "params.json").write_text(json.dumps({"structure_id": structure_id, "voxel_size": voxel_size}))
    return folder


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> Path:
    """Seven maps of five structures; 1A2K has three samples (one with a lower-case id)."""
    root = tmp_path_factory.mktemp("samples")
    for i, structure in enumerate(["1A2K", "1a2k", "1A2K", "2B3C", "3L08", "4D5E", "5F6G"]):
        make_sample(root, f"s{i:03d}", structure, seed=i)
    return root


@pytest.fixture(scope="module")
def built(samples, tmp_path_factory):
    output = tmp_path_factory.mktemp("out") / "patches.h5"
    summary = build_dataset(entries_from_samples(samples), output, patch_size=PATCH, seed=1)
    return summary, output


def read_strings(dataset) -> list[str]:
    return list(dataset.asstr()[()])


# ---------------------------------------------------------------------------- HDF5 layout

def test_hdf5_shapes_dtypes_chunks_and_compression(built):
    summary, output = built
    with h5py.File(output, "r") as h5:
        assert set(h5) == set(SPLITS)
        for split in SPLITS:
            group = h5[split]
            n = group["density"].shape[0]
            assert n == summary.patches[split] == group.attrs["n_patches"]
            for name, dtype in (("density", np.float32), ("label", np.float32), ("mask", np.uint8)):
                dataset = group[name]
                assert dataset.shape == (n, PATCH, PATCH, PATCH) and dataset.dtype == dtype
                assert dataset.chunks == (1, PATCH, PATCH, PATCH)
                assert dataset.compression == "gzip" and dataset.maxshape[0] is None
            for name in ("voxel_size", "norm_mean", "norm_std", "structure_id", "source", "label_kind", "map_path"):
                assert group[name].shape == (n,)
            assert group["origin_index"].shape == (n, 3)
        assert sum(summary.patches.values()) > 0


def test_file_attributes(built):
    _, output = built
    with h5py.File(output, "r") as h5:
        attrs = h5.attrs
        assert attrs["patch_size"] == PATCH and attrs["stride"] == PATCH and attrs["seed"] == 1
        np.testing.assert_allclose(attrs["fractions"], (0.7, 0.15, 0.15))
        assert attrs["n_maps"] == 7 and np.isnan(attrs["resample_to"])
        assert attrs["normalisation"] == "masked-zscore" and attrs["format"] == "cryores-patches"
        assert attrs["cryores_version"] and attrs["cryores_train_version"] and attrs["created"].endswith("+00:00")


def test_no_structure_is_shared_between_splits(built):
    summary, output = built
    seen = {}
    with h5py.File(output, "r") as h5:
        for split in SPLITS:
            ids = set(read_strings(h5[split]["structure_id"]))
            assert ids <= set(h5[split].attrs["structures"])
            seen[split] = ids
    assert not (seen["train"] & seen["val"]) and not (seen["train"] & seen["test"]) and not (seen["val"] & seen["test"])
    all_ids = set().union(*seen.values())
    assert "1A2K" in all_ids and "1a2k" not in all_ids  # case-insensitive: one structure
    assert summary.structures == {"train": 3, "val": 1, "test": 1}


def test_patches_are_raw_map_regions_with_the_maps_normalisation(built, samples):
    _, output = built
    with h5py.File(output, "r") as h5:
        group = next(h5[s] for s in SPLITS if h5[s]["density"].shape[0])
        i = 0
        origin = tuple(group["origin_index"][i])
        map_path = Path(read_strings(group["map_path"])[i])
        with mrcfile.open(map_path) as mrc:
            full = np.array(mrc.data)
        with mrcfile.open(map_path.parent / "mask.mrc") as mrc:
            full_mask = mrc.data > 0.5
        region = tuple(slice(o, o + PATCH) for o in origin)
        np.testing.assert_array_equal(group["density"][i], full[region])
        np.testing.assert_array_equal(group["mask"][i], full_mask[region])
        try:  # normalised like inference without a user mask: with the automatic mask
            norm_mask = automatic_mask(full, (1.0, 1.0, 1.0))
        except CryoResError:
            norm_mask = full_mask
        expected = masked_zscore(full, norm_mask)[region]
        mean, std = group["norm_mean"][i], group["norm_std"][i]
        np.testing.assert_allclose((group["density"][i] - mean) / std, expected, atol=1e-4)
        label, mask = group["label"][i], group["mask"][i].astype(bool)
        assert np.all(label[~mask] == 0) and label[mask].min() >= 3.0 and label.max() <= 8.0
        assert set(read_strings(group["label_kind"])) == {"truth"}
        assert group["voxel_size"][i] == pytest.approx(1.0)
        assert read_strings(group["source"])[i] == map_path.parent.name


def test_solvent_only_patches_are_dropped(tmp_path):
    mask = np.zeros(SHAPE, dtype=bool)
    mask[2:12, 2:12, 2:12] = True  # molecule in one of the 8 patches only
    make_sample(tmp_path / "s", "one", "1ABC", seed=0, mask=mask)
    entries = entries_from_samples(tmp_path / "s")
    summary = build_dataset(entries, tmp_path / "a.h5", patch_size=PATCH)
    assert summary.patches == {"train": 1, "val": 0, "test": 0} and summary.dropped == 7
    with h5py.File(tmp_path / "a.h5", "r") as h5:
        assert tuple(h5["train/origin_index"][0]) == (0, 0, 0)
        assert h5["val/density"].shape == (0, PATCH, PATCH, PATCH)
    # a patch holding 1000 of 4096 voxels of molecule (24 %) goes under a 30 % threshold
    strict = build_dataset(entries, tmp_path / "b.h5", patch_size=PATCH, min_mask_fraction=0.3)
    assert sum(strict.patches.values()) == 0 and strict.dropped == 8


def test_overlapping_stride_and_padding_at_the_far_end(tmp_path):
    make_sample(tmp_path / "s", "one", "1ABC", seed=0, shape=(30, 30, 30))
    summary = build_dataset(entries_from_samples(tmp_path / "s"), tmp_path / "o.h5", patch_size=PATCH,
                            stride=8, min_mask_fraction=0.0)
    with h5py.File(tmp_path / "o.h5", "r") as h5:
        origins = h5["train/origin_index"][()]
        assert origins.max() == 16 and set(np.unique(origins)) <= {0, 8, 16}
        last = int(np.argmax(origins.sum(axis=1)))
        assert np.all(h5["train/mask"][last][14:] == 0) and np.all(h5["train/label"][last][14:] == 0)
        with mrcfile.open(tmp_path / "s" / "one" / "map.mrc") as mrc:
            density = np.array(mrc.data)
        solvent = float(np.median(density[~automatic_mask(density, (1.0, 1.0, 1.0))]))
        np.testing.assert_allclose(h5["train/density"][last][14:], solvent)  # padded like inference
    assert summary.patches["train"] == 27


@pytest.mark.parametrize("shape, target, expected_voxel, grid", [((32, 32, 32), 2.0, 2.0, 16),
                                                                 ((31, 31, 31), 2.0, 31 / 16, 16)])
def test_resampling_keeps_voxel_size_metadata_right(tmp_path, shape, target, expected_voxel, grid):
    make_sample(tmp_path / "s", "one", "1ABC", seed=0, shape=shape)
    output = tmp_path / "r.h5"
    build_dataset(entries_from_samples(tmp_path / "s"), output, patch_size=8, resample_to=target,
                  min_mask_fraction=0.0)
    with h5py.File(output, "r") as h5:
        assert h5.attrs["resample_to"] == target
        np.testing.assert_allclose(h5["train/voxel_size"][()], expected_voxel, rtol=1e-6)
        assert h5["train/origin_index"][()].max() + 8 <= grid
        labels, masks = h5["train/label"][()], h5["train/mask"][()].astype(bool)
        valued = labels[labels > 0]
        assert valued.min() >= 3.0 - 1e-4 and valued.max() <= 8.0 + 1e-4  # no blending with "no value"
        assert np.all(labels[~masks] == 0) and masks.sum() > 0


# ---------------------------------------------------------------------------- safety

def test_refuses_to_overwrite_without_force(samples, tmp_path):
    output = tmp_path / "exists.h5"
    output.write_bytes(b"keep me")
    entries = entries_from_samples(samples)[:1]
    with pytest.raises(CryoResError, match="exists; use --force"):
        build_dataset(entries, output, patch_size=PATCH)
    assert output.read_bytes() == b"keep me"
    build_dataset(entries, output, patch_size=PATCH, force=True)
    assert h5py.is_hdf5(output)


def test_bad_entry_fails_before_writing_and_leaves_nothing(samples, tmp_path):
    bad_label = write_mrc(tmp_path / "bad.mrc", np.ones((8, 8, 8), dtype=np.float32))
    good = entries_from_samples(samples)[0]
    bad = LabelledMap(good.map, bad_label, None, "resmap", "9XYZ", "bad")
    with pytest.raises(CryoResError, match="grid shape"):
        build_dataset([good, bad], tmp_path / "o.h5", patch_size=PATCH)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.mrc"]


@pytest.mark.parametrize("options, message", [({"patch_size": 0}, "positive"), ({"min_mask_fraction": 1.5}, "mask"),
                                              ({"resample_to": -1.0}, "voxel size")])
def test_bad_options(samples, tmp_path, options, message):
    with pytest.raises(CryoResError, match=message):
        build_dataset(entries_from_samples(samples)[:1], tmp_path / "o.h5", **options)


# ---------------------------------------------------------------------------- command line

def test_cli_from_samples(samples, tmp_path, capsys):
    output = tmp_path / "cli.h5"
    argv = ["dataset", "--samples", str(samples), "-o", str(output), "--patch-size", str(PATCH), "--quiet"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "from 7 maps" in out and "train" in out and str(output) in out
    assert main(argv) == 1  # exists, no --force
    err = capsys.readouterr().err
    assert err.startswith("cryores-train: error: ") and err.count("\n") == 1 and "--force" in err
    assert main(argv + ["--force", "--seed", "5", "--stride", "8"]) == 0
    with h5py.File(output, "r") as h5:
        assert h5.attrs["seed"] == 5 and h5.attrs["stride"] == 8


def test_cli_from_manifest(samples, tmp_path, capsys):
    sample = samples / "s000"
    manifest = tmp_path / "m.csv"
    manifest.write_text("map,label,label_kind,structure_id,mask,source\n"
                        f"{sample / 'map.mrc'},{sample / 'truth.mrc'},truth,1A2K,{sample / 'mask.mrc'},EMD-0001\n")
    output = tmp_path / "m.h5"
    assert main(["dataset", "--manifest", str(manifest), "-o", str(output), "--patch-size", "16",
                 "--voxel-size", "2", "--quiet"]) == 0
    assert capsys.readouterr().out.count("\n") == 1
    with h5py.File(output, "r") as h5:
        assert read_strings(h5["train/source"])[0] == "EMD-0001"
        assert h5["train/voxel_size"][0] == pytest.approx(2.0)


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["dataset", "--samples", str(tmp_path / "absent"), "-o", str(tmp_path / "x.h5")]) == 1
    assert capsys.readouterr().err.count("\n") == 1
    with pytest.raises(SystemExit) as excinfo:  # --samples and --manifest are exclusive
        main(["dataset", "--samples", "a", "--manifest", "b", "-o", "x.h5"])
    assert excinfo.value.code == 2
