"""Every command on every real EMDB map of the corpus (tests/data/real, ../shared/data/maps).

The corpus (sources in tests/data/real/README.md) covers ISPG 0 files, masked and zoned
deposits, raw maps with noisy solvent, sharpened maps, odd boxes, axis orders other than 1,2,3,
voxel sizes from 0.39 to 5.7 Å, nonzero origins and nstart, gzip. Each map goes through
``predict``, ``report``, ``filter``, ``localfsc`` and ``chimerax``; outputs must be valid volumes
(ISPG 1) on the input's grid with its voxel size, origin, nstart, axis order and cell. The
small random v3 (spectral) test model is used: this is about real files, not accuracy.
"""

from __future__ import annotations

from pathlib import Path

import mrcfile
import numpy as np
import pytest

from cryores.cli import main
from cryores.mrc_io import read_map, write_map

REAL = Path(__file__).resolve().parent / "data" / "real"
SHARED_MAPS = Path(__file__).resolve().parents[2] / "shared" / "data" / "maps"
GRID_FIELDS = ("mx", "my", "mz", "mapc", "mapr", "maps", "nxstart", "nystart", "nzstart")

# (file, needs a user mask): the MicroED map EMD-3001 is a crystal with no solvent, so the
# automatic mask refuses it, as it says, and the user gives one.
CORPUS = [
    (REAL / "emd_1832.map.gz", False),
    (REAL / "emd_1997.map.gz", False),
    (REAL / "emd_5625.map.gz", False),
    (REAL / "emd_2566_3j6b_chain9_zone.mrc", False),
    (REAL / "emd_30342_7cec_A_zone4.mrc.gz", False),
    (REAL / "emd_5168_monomer_segment.mrc", False),
    (REAL / "ngl_betaGal.mrc.gz", False),
    (REAL / "EMD-3001.map.gz", True),
    (SHARED_MAPS / "emd_5168.map", False),
    (SHARED_MAPS / "emd_3488.mrc", False),
    (SHARED_MAPS / "emd_11007_center144.mrc", False),
]


def assert_same_grid(source: Path, output: Path) -> None:
    with mrcfile.open(source) as a, mrcfile.open(output) as b:
        assert int(b.header.ispg) == 1 and b.is_volume()
        for field in GRID_FIELDS:
            assert int(b.header[field]) == int(a.header[field]), field
        for axis in "xyz":
            assert float(b.header.origin[axis]) == pytest.approx(float(a.header.origin[axis]))
            assert float(b.header.cella[axis]) == pytest.approx(float(a.header.cella[axis]))


def run_ok(capsys, *args) -> str:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


def test_corpus_covers_what_users_hold():
    headers = []
    for path, _ in CORPUS:
        with mrcfile.open(path, permissive=True) as mrc:
            headers.append((mrc.header.copy(), mrc.voxel_size.copy(), mrc.data.shape, float((mrc.data == 0).mean())))
    assert any(int(h.ispg) == 0 for h, *_ in headers)
    assert any(zeros > 0.5 for *_, zeros in headers)  # masked or zoned deposits
    assert any(len(set(shape)) > 1 for _, _, shape, _ in headers)  # odd boxes
    voxels = [float(min(v.x, v.y, v.z)) for _, v, _, _ in headers]
    assert min(voxels) < 1.0 and max(voxels) > 4.0
    assert any(float(h.origin.x) != 0 for h, *_ in headers)
    assert any((int(h.mapc), int(h.mapr), int(h.maps)) != (1, 2, 3) for h, *_ in headers)


@pytest.mark.parametrize(("path", "needs_mask"), CORPUS, ids=[p.name for p, _ in CORPUS])
def test_every_command_runs_on_a_real_map(tmp_path, capsys, spectral_model_card, path, needs_mask):
    density = read_map(path)
    options = []
    if needs_mask:
        mask = write_map(tmp_path / "mask.mrc", np.ones_like(density.data), density)
        options = ["--mask", mask]
    locres = tmp_path / "locres.mrc"
    out = run_ok(capsys, "predict", path, "-o", locres, "--model", spectral_model_card, "--quiet", *options)
    assert "median" in out
    assert_same_grid(path, locres)
    values = read_map(locres).data
    inside = values[values > 0]
    assert inside.size > 0 and inside.min() >= 2 * min(density.voxel_size) - 1e-4

    run_ok(capsys, "report", path, locres, "-o", tmp_path / "report.png")
    assert (tmp_path / "report.png").stat().st_size > 10_000

    filtered = tmp_path / "filtered.mrc"
    run_ok(capsys, "filter", path, "--locres", locres, "-o", filtered, "--quiet")
    assert_same_grid(path, filtered)
    assert np.isfinite(read_map(filtered).data).all()

    # Half maps: the map plus independent noise, written on its grid (no corpus entry has halves).
    rng = np.random.default_rng(0)
    spread = float(density.data.std())
    halves = [write_map(tmp_path / f"half{i}.mrc", density.data + rng.normal(0, spread, density.data.shape)
                        .astype(np.float32), density) for i in (1, 2)]
    fsc = tmp_path / "localfsc.mrc"
    window = min(30.0, 0.8 * min(n * v for n, v in zip(density.data.shape, density.voxel_size)))  # tiny boxes
    run_ok(capsys, "localfsc", *halves, "-o", fsc, "--window", f"{window:.2f}", "--quiet", *options)
    assert_same_grid(path, fsc)
    assert (read_map(fsc).data > 0).any()

    script = tmp_path / "view.cxc"
    run_ok(capsys, "chimerax", path, locres, "-o", script)
    assert "color sample" in script.read_text()


def test_report_of_a_constant_local_resolution_map(tmp_path, capsys):
    """A map that reads one value everywhere (a coarse map at its floor) still gets a report."""
    density = read_map(REAL / "emd_5168_monomer_segment.mrc")
    locres = write_map(tmp_path / "flat.mrc", np.where(density.data > 0, 6.0, 0.0).astype(np.float32), density)
    run_ok(capsys, "report", REAL / "emd_5168_monomer_segment.mrc", locres, "-o", tmp_path / "r.png")
    assert (tmp_path / "r.png").stat().st_size > 10_000
