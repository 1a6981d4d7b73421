"""The command line, run as a real subprocess: outputs, summary line, and every bad input."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import mrcfile
import numpy as np
import pytest

from conftest import write_mrc
from cryores.mrc_io import read_map


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cryores", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


def assert_clean_failure(proc: subprocess.CompletedProcess, match: str) -> None:
    """Non-zero exit, exactly one line on stderr that names the problem, no traceback."""
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("cryores: error:") and match in lines[0], lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout


def only_inputs_left(folder: Path, inputs: set[str]) -> bool:
    return {p.name for p in folder.iterdir()} == inputs


def test_predict_writes_default_output_and_prints_summary(map_file, model_card):
    proc = run("predict", map_file, "--model", model_card, "--quiet")
    assert proc.returncode == 0, proc.stderr
    out = map_file.with_name("map_locres.mrc")
    assert out.is_file()
    assert proc.stdout.count("\n") == 1 and "median" in proc.stdout and "5-95 %" in proc.stdout
    assert proc.stderr == ""  # --quiet: no progress bar
    res = read_map(out)
    assert res.data.shape == read_map(map_file).data.shape
    assert res.data.max() <= 20.0 and (res.data == 0).any() and (res.data >= 2.0).any()


def test_predict_with_uncertainty_and_progress(map_file, model_card, tmp_path):
    proc = run("predict", map_file, "-o", tmp_path / "r.mrc", "--model", model_card,
               "--uncertainty", tmp_path / "s.mrc", "--samples", "3", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    assert "patch" in proc.stderr  # the progress bar
    with mrcfile.open(tmp_path / "s.mrc") as std, mrcfile.open(tmp_path / "r.mrc") as res:
        assert std.data.shape == res.data.shape and std.data.max() > 0
        assert (std.data[res.data == 0] == 0).all()


def test_console_script_and_version(map_file):
    script = Path(sys.executable).with_name("cryores")
    if not script.exists():
        script = shutil.which("cryores")
    proc = subprocess.run([str(script), "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("cryores ")


def test_no_installed_model_is_said_plainly(map_file, monkeypatch, capsys):
    """In-process, with the package's model hidden, so it runs whether or not one is installed."""
    from cryores import cli, model_card

    monkeypatch.setattr(model_card, "installed_card_path", lambda: None)
    assert cli.main(["predict", str(map_file), "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cryores: error:") and "no trained model is installed" in err[0]
    assert only_inputs_left(map_file.parent, {"map.mrc"})


def _bad_files(folder: Path, density: np.ndarray) -> dict[str, tuple[Path, str]]:
    """name -> (file, expected words in the error)."""
    good = write_mrc(folder / "good.mrc", density)
    truncated = folder / "truncated.mrc"
    truncated.write_bytes(good.read_bytes()[:-500])
    empty = folder / "empty.mrc"
    empty.write_bytes(b"")
    text = folder / "notes.mrc"
    text.write_text("not a map\n" * 200)
    with mrcfile.new(folder / "stack.mrcs") as mrc:
        mrc.set_data(np.ones((4, 16, 16), np.float32))
        mrc.set_image_stack()
    nan = density.copy()
    nan[5, 5, 5] = np.nan
    inf = density.copy()
    inf[6, 6, 6] = np.inf
    return {
        "missing": (folder / "absent.mrc", "no such file"),
        "empty": (empty, "not a readable MRC"),
        "not-mrc": (text, "not a readable MRC"),
        "truncated": (truncated, "not a readable MRC"),
        "image": (write_mrc(folder / "image.mrc", np.ones((32, 32), np.float32)), "3-D map is needed"),
        "stack": (folder / "stack.mrcs", "image stack"),
        "nan": (write_mrc(folder / "nan.mrc", nan), "NaN or infinite"),
        "inf": (write_mrc(folder / "inf.mrc", inf), "NaN or infinite"),
        "constant": (write_mrc(folder / "constant.mrc", np.ones((16, 16, 16), np.float32)), "constant"),
        "voxel0": (write_mrc(folder / "voxel0.mrc", density, voxel_size=0.0), "voxel size"),
        "complex": (write_mrc(folder / "complex.mrc", np.ones((8, 8, 8), np.complex64)), "complex"),
    }


BAD = ["missing", "empty", "not-mrc", "truncated", "image", "stack", "nan", "inf", "constant", "voxel0", "complex"]


@pytest.mark.parametrize("case", BAD)
def test_bad_map_fails_with_one_line_and_no_output(tmp_path, density, model_card, case):
    path, match = _bad_files(tmp_path, density)[case]
    before = {p.name for p in tmp_path.iterdir()}
    proc = run("predict", path, "-o", tmp_path / "out.mrc", "--model", model_card, "--quiet")
    assert_clean_failure(proc, match)
    assert only_inputs_left(tmp_path, before)


def test_bad_mask_and_outputs(tmp_path, map_file, model_card, density):
    folder = map_file.parent
    small_mask = write_mrc(folder / "mask.mrc", np.ones((10, 10, 10), np.float32))
    inputs = {p.name for p in folder.iterdir()}
    cases = [
        (("--mask", small_mask), "shape"),
        (("-o", folder / "missing-folder" / "o.mrc"), "does not exist"),
        (("-o", map_file, "--force"), "one of the input files"),
        (("--uncertainty", folder / "s.mrc", "--samples", "1"), "at least 2"),
        (("--voxel-size", "0"), "voxel size"),
        (("--device", "cuda"), "cuda"),
    ]
    for extra, match in cases:
        proc = run("predict", map_file, "--model", model_card, "--quiet", *extra)
        if extra[:2] == ("--device", "cuda") and proc.returncode == 0:
            continue  # a machine with a GPU
        assert_clean_failure(proc, match)
        assert only_inputs_left(folder, inputs), extra


def test_existing_output_needs_force(map_file, model_card):
    out = map_file.with_name("map_locres.mrc")
    out.write_bytes(b"precious")
    proc = run("predict", map_file, "--model", model_card, "--quiet")
    assert_clean_failure(proc, "--force")
    assert out.read_bytes() == b"precious"
    assert run("predict", map_file, "--model", model_card, "--quiet", "--force").returncode == 0
    assert read_map(out).data.shape == (40, 40, 40)


def test_usage_errors_are_one_line(map_file):
    proc = run("predict", map_file, "--samples", "many")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert run().returncode == 2


def test_predict_with_report_and_the_report_command(map_file, model_card, tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "r.png"
    proc = run("predict", map_file, "--model", model_card, "--quiet", "--report", png)
    assert proc.returncode == 0, proc.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    locres = map_file.with_name("map_locres.mrc")
    proc = run("report", map_file, locres, "-o", tmp_path / "again.png")
    assert proc.returncode == 0 and (tmp_path / "again.png").stat().st_size > 20_000
    proc = run("report", map_file, locres, "-o", tmp_path / "again.png")
    assert_clean_failure(proc, "--force")
    empty = write_mrc(tmp_path / "zeros.mrc", np.zeros((40, 40, 40), np.float32))
    assert_clean_failure(run("report", map_file, empty, "-o", tmp_path / "z.png"), "no value above 0")
