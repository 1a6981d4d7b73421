"""A 3-D MRC file is a volume whatever its ISPG says; real image stacks are still refused.

Real headers (EMD-11007's axis order 3,2,1 and nstart 48, rewritten with ISPG 0 and 401) and
synthetic ones (every axis order, ISPG 0/1/401, modes 0/1/2/6/12, gzip, non-cubic boxes,
nonzero origin) must read as volumes and come back from a write as valid volumes (ISPG 1) with
the input's voxel size, origin, nstart, axis order and cell.
"""

from __future__ import annotations

import gzip
import itertools
import shutil

import mrcfile
import numpy as np
import pytest

from cryores.errors import CryoResError
from cryores.mrc_io import read_map, write_map

AXIS_ORDERS = list(itertools.permutations((1, 2, 3)))
GRID_FIELDS = ("mx", "my", "mz", "mapc", "mapr", "maps", "nxstart", "nystart", "nzstart")


def write_volume(path, data, *, ispg: int, axis_order=(1, 2, 3), voxel_xyz=(1.1, 1.2, 1.3),
                 origin=(-12.5, 30.0, 4.25), nstart=(-3, 7, 11), compress: bool = False):
    """An MRC file as other programs write them: the header fields set directly."""
    raw = path.with_suffix(".raw.mrc") if compress else path
    with mrcfile.new(raw, overwrite=True) as mrc:
        mrc.set_data(data)
        mrc.header.mapc, mrc.header.mapr, mrc.header.maps = axis_order
        # along X/Y/Z: the data axes (columns, rows, sections) are permuted by the axis order
        counts = {axis_order[0]: data.shape[2], axis_order[1]: data.shape[1], axis_order[2]: data.shape[0]}
        mrc.header.mx, mrc.header.my, mrc.header.mz = counts[1], counts[2], counts[3]
        mrc.header.cella = tuple(n * v for n, v in zip((counts[1], counts[2], counts[3]), voxel_xyz))
        mrc.header.origin = origin
        mrc.header.nxstart, mrc.header.nystart, mrc.header.nzstart = nstart
        mrc.header.ispg = ispg
    if compress:
        with open(raw, "rb") as src, gzip.open(path, "wb") as dst:
            shutil.copyfileobj(src, dst)
        raw.unlink()
    return path


def assert_grid_kept(source, output):
    with mrcfile.open(source) as a, mrcfile.open(output) as b:
        assert int(b.header.ispg) == 1
        assert b.is_volume() and not b.is_image_stack()
        for field in GRID_FIELDS:
            assert int(b.header[field]) == int(a.header[field]), field
        for axis in "xyz":
            assert float(b.header.origin[axis]) == pytest.approx(float(a.header.origin[axis]))
            assert float(b.header.cella[axis]) == pytest.approx(float(a.header.cella[axis]))


# ISPG 401 counts mz sections per volume, which only means one volume in file order (1, 2, 3).
@pytest.mark.parametrize(("ispg", "axis_order"), [(0, order) for order in AXIS_ORDERS]
                         + [(1, order) for order in AXIS_ORDERS] + [(401, (1, 2, 3))])
def test_every_ispg_and_axis_order_reads_as_a_volume(tmp_path, ispg, axis_order):
    data = np.random.default_rng(1).normal(size=(9, 10, 12)).astype(np.float32)
    src = write_volume(tmp_path / "in.mrc", data, ispg=ispg, axis_order=axis_order)
    density = read_map(src)
    np.testing.assert_array_equal(density.data, data)
    xyz = dict(zip((1, 2, 3), (1.1, 1.2, 1.3)))
    expected = (xyz[axis_order[2]], xyz[axis_order[1]], xyz[axis_order[0]])
    assert density.voxel_size == pytest.approx(expected, rel=1e-5)
    assert_grid_kept(src, write_map(tmp_path / "out.mrc", data * 2, density))


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.float32, np.uint16, np.float16])  # modes 0, 1, 2, 6, 12
@pytest.mark.parametrize("compress", [False, True])
def test_modes_and_gzip_with_ispg_zero(tmp_path, dtype, compress):
    data = (np.arange(11 * 8 * 14) % 97).reshape(11, 8, 14).astype(dtype)
    src = write_volume(tmp_path / ("in.mrc.gz" if compress else "in.mrc"), data, ispg=0, compress=compress)
    density = read_map(src)
    assert density.data.dtype == np.float32
    np.testing.assert_array_equal(density.data, data.astype(np.float32))
    out = write_map(tmp_path / "out.mrc", density.data, density)
    with mrcfile.open(out) as b:
        assert int(b.header.ispg) == 1 and b.data.shape == (11, 8, 14)
        assert (float(b.header.origin.x), int(b.header.nystart)) == (-12.5, 7)


@pytest.mark.parametrize("ispg", [0, 401])
def test_real_header_of_emd_11007_with_other_space_groups(tmp_path, shared, ispg):
    source = shared / "data" / "maps" / "emd_11007_center144.mrc"
    copy = tmp_path / f"emd_11007_ispg{ispg}.mrc"
    shutil.copyfile(source, copy)
    with mrcfile.open(copy, mode="r+") as mrc:
        mrc.header.ispg = ispg
    original, relabelled = read_map(source), read_map(copy)
    np.testing.assert_array_equal(relabelled.data, original.data)
    assert relabelled.voxel_size == original.voxel_size
    out = write_map(tmp_path / "out.mrc", relabelled.data, relabelled)
    assert_grid_kept(source, out)
    with mrcfile.open(out) as b:
        assert (int(b.header.mapc), int(b.header.mapr), int(b.header.maps)) == (3, 2, 1)


def test_real_image_stacks_and_volume_stacks_are_refused(tmp_path):
    data = np.ones((5, 16, 16), np.float32)
    with mrcfile.new(tmp_path / "particles.mrc") as mrc:  # MRC2014 image stack: ISPG 0, mz 1
        mrc.set_data(data)
        mrc.set_image_stack()
    with pytest.raises(CryoResError, match=r"image stack of 5 2-D images \(ISPG 0, mz 1\)"):
        read_map(tmp_path / "particles.mrc")
    relion = write_volume(tmp_path / "particles.mrcs", data, ispg=0)  # RELION's suffix for stacks
    with pytest.raises(CryoResError, match="image stack"):
        read_map(relion)
    with mrcfile.new(tmp_path / "two.mrc") as mrc:
        mrc.set_data(np.ones((10, 8, 8), np.float32))
        mrc.header.ispg, mrc.header.mz = 401, 5  # two volumes of 5 sections
    with pytest.raises(CryoResError, match="stack of 2 volumes"):
        read_map(tmp_path / "two.mrc")
    flat = write_volume(tmp_path / "flat.mrc", np.ones((1, 16, 16), np.float32), ispg=1)
    with pytest.raises(CryoResError, match="2-D image"):
        read_map(flat)
    odd = write_volume(tmp_path / "odd.mrc", np.ones((12, 8, 8), np.float32), ispg=401)
    with mrcfile.open(odd, mode="r+", permissive=True) as mrc:
        mrc.header.mz = 5
    with pytest.raises(CryoResError, match="does not divide"):
        read_map(odd)
