"""MRC reading/writing: metadata survives, bad files fail with one clear CryoResError."""

from __future__ import annotations

import os

import mrcfile
import numpy as np
import pytest

from conftest import write_mrc
from cryores.errors import CryoResError
from cryores.mrc_io import check_output_path, read_map, write_map, write_maps


def test_round_trip_keeps_voxel_size_origin_nstart_and_axis_order(tmp_path):
    data = np.random.default_rng(0).normal(size=(12, 10, 8)).astype(np.float32)
    src = write_mrc(tmp_path / "in.mrc", data, voxel_size=(1.1, 1.2, 1.3), origin=(5.0, 6.0, 7.0),
                    nstart=(-4, -5, -6), axis_order=(1, 2, 3))
    density = read_map(src)
    assert density.voxel_size == pytest.approx((1.3, 1.2, 1.1), rel=1e-6)  # (z, y, x) array order
    out = write_map(tmp_path / "out.mrc", density.data * 2, density)
    with mrcfile.open(src) as a, mrcfile.open(out) as b:
        assert b.data.dtype == np.float32
        np.testing.assert_allclose(b.data, a.data * 2)
        for field in ("mx", "my", "mz", "mapc", "mapr", "maps", "nxstart", "nystart", "nzstart"):
            assert int(b.header[field]) == int(a.header[field]), field
        for axis in "xyz":
            assert float(b.header.origin[axis]) == pytest.approx(float(a.header.origin[axis]))
            assert float(b.voxel_size[axis]) == pytest.approx(float(a.voxel_size[axis]))


def test_permuted_axis_order_gives_voxel_size_per_array_axis_and_is_kept(tmp_path):
    data = np.zeros((6, 8, 10), dtype=np.float32)
    src = write_mrc(tmp_path / "perm.mrc", data, voxel_size=(1.0, 2.0, 3.0), axis_order=(3, 1, 2))
    density = read_map(src)
    # array axes are (sections, rows, columns) = (maps, mapr, mapc) = (Y, X, Z)
    assert density.voxel_size == pytest.approx((2.0, 1.0, 3.0))
    out = write_map(tmp_path / "out.mrc", data, density)
    with mrcfile.open(out) as mrc:
        assert (int(mrc.header.mapc), int(mrc.header.mapr), int(mrc.header.maps)) == (3, 1, 2)


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.uint16, np.float16, np.float32])
def test_reads_every_real_mode_as_float32(tmp_path, dtype):
    data = (np.arange(8 * 9 * 10) % 100).reshape(8, 9, 10).astype(dtype)
    density = read_map(write_mrc(tmp_path / "m.mrc", data))
    assert density.data.dtype == np.float32
    np.testing.assert_array_equal(density.data, data.astype(np.float32))


def test_voxel_size_override_replaces_zero_header(tmp_path):
    src = write_mrc(tmp_path / "zero.mrc", np.ones((8, 8, 8), np.float32), voxel_size=0.0)
    with pytest.raises(CryoResError, match="voxel size"):
        read_map(src)
    assert read_map(src, voxel_size=1.5).voxel_size == (1.5, 1.5, 1.5)


@pytest.mark.parametrize("content, match", [
    (b"", "not a readable MRC"),
    (b"hello, this is not a map" * 100, "not a readable MRC"),
])
def test_garbage_files_fail_clearly(tmp_path, content, match):
    path = tmp_path / "bad.mrc"
    path.write_bytes(content)
    with pytest.raises(CryoResError, match=match):
        read_map(path)


def test_truncated_file_fails_clearly(tmp_path):
    src = write_mrc(tmp_path / "full.mrc", np.ones((16, 16, 16), np.float32))
    cut = tmp_path / "cut.mrc"
    cut.write_bytes(src.read_bytes()[:-1000])
    with pytest.raises(CryoResError, match="not a readable MRC"):
        read_map(cut)


def test_image_and_stack_are_refused(tmp_path):
    image = write_mrc(tmp_path / "image.mrc", np.ones((16, 16), np.float32))
    with pytest.raises(CryoResError, match="3-D map is needed"):
        read_map(image)
    with mrcfile.new(tmp_path / "stack.mrcs") as mrc:
        mrc.set_data(np.ones((5, 16, 16), np.float32))
        mrc.set_image_stack()
    with pytest.raises(CryoResError, match="image stack"):
        read_map(tmp_path / "stack.mrcs")


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(CryoResError, match="no such file"):
        read_map(tmp_path / "absent.mrc")
    with pytest.raises(CryoResError, match="not a regular file"):
        read_map(tmp_path)


def test_existing_output_needs_force_and_is_untouched(tmp_path, density):
    like = read_map(write_mrc(tmp_path / "in.mrc", density))
    target = tmp_path / "out.mrc"
    target.write_bytes(b"precious")
    with pytest.raises(CryoResError, match="--force"):
        write_map(target, density, like)
    assert target.read_bytes() == b"precious"
    write_map(target, density, like, force=True)
    assert read_map(target).data.shape == density.shape


def test_inputs_are_protected_even_with_force(tmp_path, density):
    src = write_mrc(tmp_path / "in.mrc", density)
    with pytest.raises(CryoResError, match="one of the input files"):
        check_output_path(src, force=True, protected=(src,))


def test_unwritable_folder_fails_before_writing(tmp_path, density):
    like = read_map(write_mrc(tmp_path / "in.mrc", density))
    with pytest.raises(CryoResError, match="does not exist"):
        write_map(tmp_path / "nope" / "out.mrc", density, like)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user who can write anywhere")
        with pytest.raises(CryoResError, match="not writable"):
            write_map(locked / "out.mrc", density, like)
    finally:
        locked.chmod(0o700)


def test_write_maps_is_all_or_nothing(tmp_path, density):
    like = read_map(write_mrc(tmp_path / "in.mrc", density))
    with pytest.raises(CryoResError):
        write_maps([(tmp_path / "a.mrc", density, "a"), (tmp_path / "b.mrc", density[:-1], "b")], like)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mrc"]  # no output, no temp file


def test_output_name_too_long_is_a_clear_error(tmp_path, density):
    like = read_map(write_mrc(tmp_path / "in.mrc", density))
    with pytest.raises(CryoResError, match="too long"):
        write_map(tmp_path / ("x" * 300 + ".mrc"), density, like)


def test_outputs_get_the_usual_permissions_not_the_temp_files(tmp_path, density):
    like = read_map(write_mrc(tmp_path / "in.mrc", density))
    old = os.umask(0o022)
    try:
        out = write_map(tmp_path / "out.mrc", density, like)
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o777 == 0o644


def test_compact_data_types_on_request(tmp_path, density):
    like = read_map(write_mrc(tmp_path / "in.mrc", density))
    half, flag = write_maps([(tmp_path / "h.mrc", density, "h"), (tmp_path / "m.mrc", density > 0.5, "m")], like,
                            dtypes={"h.mrc": np.float16, "m.mrc": np.int8})
    with mrcfile.open(half) as a, mrcfile.open(flag) as b:
        assert a.data.dtype == np.float16 and b.data.dtype == np.int8
        np.testing.assert_allclose(a.data, density, atol=2e-3)


def test_maps_on_another_grid_placement_are_refused(tmp_path):
    from cryores.mrc_io import check_same_grid

    data = np.ones((10, 10, 10), np.float32)
    like = read_map(write_mrc(tmp_path / "a.mrc", data, voxel_size=1.5, origin=(3.0, 0.0, 0.0), nstart=(2, 0, 0)))
    same = read_map(write_mrc(tmp_path / "b.mrc", data, voxel_size=1.5, origin=(0.0, 0.0, 0.0), nstart=(4, 0, 0)))
    check_same_grid(same, like, "b.mrc")  # 3 + 2 x 1.5 == 0 + 4 x 1.5: the same place
    moved = read_map(write_mrc(tmp_path / "c.mrc", data, voxel_size=1.5, origin=(0.0, 0.0, 0.0)))
    with pytest.raises(CryoResError, match="origin/nstart differ"):
        check_same_grid(moved, like, "c.mrc")
