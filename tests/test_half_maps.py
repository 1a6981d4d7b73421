"""Reading two half maps' average: the arithmetic, the grid checks, the file API and the CLI.

Why it exists: a masked deposit's solvent holds no noise to read the map against, while half
maps are mostly deposited unmasked; their average gives the map that reference back
(``benchmarks/reference_twins.py``).
"""

from __future__ import annotations

import subprocess
import sys

import mrcfile
import numpy as np
import pytest

from conftest import synthetic_map, write_mrc
from cryores import CryoResError, predict, predict_file
from cryores.masking import automatic_mask
from cryores.mrc_io import header_labels, read_half_map_average

VOXEL = 1.5
ORIGIN = (3.0, -4.5, 6.0)
NSTART = (-16, -16, -16)


@pytest.fixture(scope="module")
def halves() -> tuple[np.ndarray, np.ndarray]:
    """Two half maps of one 'molecule': the same signal, independent noise in and around it."""
    signal = synthetic_map((48, 48, 48), n_atoms=300, noise=0.0, seed=1)
    rng = np.random.default_rng(2)
    return tuple((signal + rng.normal(0, 0.08, signal.shape)).astype(np.float32) for _ in range(2))


@pytest.fixture
def half_files(tmp_path, halves):
    return tuple(write_mrc(tmp_path / f"run_half{i + 1}.mrc", h, voxel_size=VOXEL, origin=ORIGIN, nstart=NSTART)
                 for i, h in enumerate(halves))


def test_the_average_keeps_half_map_1s_header(half_files, halves):
    average = read_half_map_average(*half_files)
    np.testing.assert_allclose(average.data, (halves[0] + halves[1]) / 2, rtol=1e-6, atol=1e-7)
    assert average.voxel_size == pytest.approx((VOXEL,) * 3) and average.path == half_files[0]
    assert float(average.header.origin.y) == pytest.approx(-4.5) and int(average.header.nxstart) == -16


def test_the_same_file_twice_is_refused(half_files):
    with pytest.raises(CryoResError, match="the same file"):
        read_half_map_average(half_files[0], half_files[0])


@pytest.mark.parametrize("change, match", [
    (dict(data=lambda h: h[:, :, :-2]), r"half map 2 .* has shape \(48, 48, 46\) but half map 1 has"),
    (dict(voxel_size=2.0), "half map 2 .* has voxel size .* but half map 1 has"),
    (dict(origin=(30.0, -4.5, 6.0)), "half map 2 .* starts at .* not on the grid of half map 1"),
    # the same volume saved transposed (a cube keeps its shape): averaged in file order it would be nonsense
    (dict(data=lambda h: np.ascontiguousarray(h.transpose(2, 1, 0)), axis_order=(3, 2, 1)),
     r"half map 2 .* has axis order \(mapc, mapr, maps\) \(3, 2, 1\) but half map 1 has \(1, 2, 3\)"),
])
def test_half_maps_not_on_one_grid_are_refused(tmp_path, half_files, halves, change, match):
    data = change.get("data", lambda h: h)(halves[1])
    other = write_mrc(tmp_path / "other.mrc", data, voxel_size=change.get("voxel_size", VOXEL),
                      origin=change.get("origin", ORIGIN), nstart=NSTART,
                      axis_order=change.get("axis_order", (1, 2, 3)))
    with pytest.raises(CryoResError, match=match):
        read_half_map_average(half_files[0], other)


def test_the_file_api_reads_the_average_as_the_map_itself(tmp_path, half_files, halves, spectral_model_card):
    average = write_mrc(tmp_path / "average.mrc", (halves[0] + halves[1]) / 2, voxel_size=VOXEL, origin=ORIGIN,
                        nstart=NSTART)
    direct, _ = predict_file(average, model=spectral_model_card)
    from_halves, output = predict_file(half_files[0], half_map2=half_files[1], model=spectral_model_card)
    assert output == tmp_path / "run_half1_locres.mrc"
    np.testing.assert_array_equal(from_halves.resolution, direct.resolution)
    with mrcfile.open(output) as mrc:
        np.testing.assert_array_equal(mrc.data, from_halves.resolution)
        assert int(mrc.header.nystart) == -16 and float(mrc.header.origin.z) == pytest.approx(6.0)
    with pytest.raises(CryoResError, match="--force"):
        predict_file(half_files[0], half_map2=half_files[1], model=spectral_model_card)



def test_the_report_names_both_half_maps_and_the_cut(tmp_path, half_files, spectral_model_card, monkeypatch):
    """The picture says which files were averaged (not half map 1's name alone) and the cut given."""
    pytest.importorskip("matplotlib")
    import cryores.report

    titles = []
    draw = cryores.report.write_report_png

    def recording(*args, **kwargs):
        titles.append(kwargs.get("title"))
        return draw(*args, **kwargs)

    monkeypatch.setattr(cryores.report, "write_report_png", recording)
    predict_file(half_files[0], half_map2=half_files[1], model=spectral_model_card, report=tmp_path / "r.png")
    assert titles == ["average of run_half1.mrc and run_half2.mrc"]
    import matplotlib.axes

    facts = []  # the report's text panel is one Axes.text call
    monkeypatch.setattr(matplotlib.axes.Axes, "text", lambda self, x, y, text, *args, **kw: facts.append(text))
    predict_file(half_files[0], half_map2=half_files[1], model=spectral_model_card, report=tmp_path / "c.png",
                 output=tmp_path / "c.mrc", lowpass_cut=6.5)
    assert any("low-pass cut given: 6.5 Å" in text for text in facts)
    assert (tmp_path / "r.png").stat().st_size > 10_000

def labels(path) -> list[str]:
    with mrcfile.open(path) as mrc:
        return header_labels(mrc.header)


def test_unmasked_half_maps_give_a_masked_map_its_noise_reference(tmp_path, half_files, halves,
                                                                   spectral_model_card):
    """The deposit (the average, its solvent set to one value) is read without a reference, and its
    output says so; read from its half maps, the same molecule has one."""
    average = (halves[0] + halves[1]) / 2
    masked = np.where(automatic_mask(average, (VOXEL,) * 3), average, 0.0).astype(np.float32)
    deposit = write_mrc(tmp_path / "deposit.mrc", masked, voxel_size=VOXEL, origin=ORIGIN, nstart=NSTART)
    alone, alone_path = predict_file(deposit, model=spectral_model_card)
    paired, paired_path = predict_file(half_files[0], half_map2=half_files[1], model=spectral_model_card)
    assert alone.noise_reference is False and "cryores: no noise reference" in labels(alone_path)
    assert paired.noise_reference is True and not any("no noise reference" in label for label in labels(paired_path))
    assert predict(masked, VOXEL, model=spectral_model_card).noise_reference is False


def run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cryores", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def test_cli_reads_half_maps_and_refuses_what_does_not_fit(tmp_path, half_files, halves, spectral_model_card):
    out, std = tmp_path / "cli.mrc", tmp_path / "cli_std.mrc"
    mask = np.zeros(halves[0].shape, np.float32)
    mask[12:36, 12:36, 12:36] = 1.0
    mask_path = write_mrc(tmp_path / "mask.mrc", mask, voxel_size=VOXEL, origin=ORIGIN, nstart=NSTART)
    proc = run("predict", "--half-maps", *half_files, "--mask", mask_path, "--uncertainty", std,
               "--model", spectral_model_card, "-o", out, "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "median" in proc.stdout and std.is_file()
    with mrcfile.open(out) as mrc:
        assert np.all(mrc.data[mask == 0] == 0) and np.all(mrc.data[mask > 0] > 0)

    proc = run("predict", half_files[0], "--half-maps", *half_files, "-o", tmp_path / "both.mrc")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "replaces MAP" in proc.stderr
    proc = run("predict", "--half-maps", *half_files, "--out-dir", tmp_path / "batch")
    assert proc.returncode == 2 and "--half-maps reads one pair" in proc.stderr

    odd = write_mrc(tmp_path / "odd.mrc", halves[1][:, :, :-2], voxel_size=VOXEL, origin=ORIGIN, nstart=NSTART)
    proc = run("predict", "--half-maps", half_files[0], odd, "--model", spectral_model_card, "-o", tmp_path / "bad.mrc")
    assert proc.returncode == 1 and proc.stderr.startswith("cryores: error: half map 2")
    assert "Traceback" not in proc.stderr and not (tmp_path / "bad.mrc").exists()
