"""Hardening: damaged MRC files, interrupted and concurrent runs, memory guard, tampered weights.

Each test drives the real command line in subprocesses where the behaviour depends on the
process (signals, stderr, exit status, several processes in one folder).
"""

from __future__ import annotations

import json
import os
import re
import signal
import struct
import subprocess
import sys
import warnings
from pathlib import Path

import mrcfile
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import synthetic_map, write_mrc
from cryores import CryoResError, mrc_io, predict_file
from cryores import memory as memory_module
from cryores.mrc_io import atomic_path, peek_grid, read_map

CLI = [sys.executable, "-m", "cryores"]


def run(*args, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def assert_one_line_error(proc: subprocess.CompletedProcess, match: str) -> None:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("cryores: error:") and match in lines[0], proc.stderr


def folder_names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


# ------------------------------------------------------------------------ damaged MRC files

_DTYPES = {0: np.int8, 1: np.int16, 2: np.float32, 4: np.complex64, 6: np.uint16, 12: np.float16}
# header words (byte offset, struct format): sizes, mode, starts, grid, cell, axes, stats, nsymbt, ...
_FIELDS = [(0, "<i"), (4, "<i"), (8, "<i"), (12, "<i"), (16, "<i"), (28, "<i"), (32, "<i"), (36, "<i"),
           (40, "<f"), (44, "<f"), (48, "<f"), (64, "<i"), (68, "<i"), (72, "<i"), (76, "<f"), (92, "<i"),
           (104, "4s"), (108, "<i"), (208, "4s"), (212, "4s"), (216, "<f"), (220, "<i")]
_INTS = st.one_of(st.integers(-3, 20), st.sampled_from([101, 1024, 65536, 2**20, 2**31 - 1, -2**31]))
_FLOATS = st.sampled_from([0.0, -1.0, 1.0, 1e-38, 1e38, float("nan"), float("inf")])


def _valid_mrc(shape: tuple[int, int, int], mode: int) -> bytes:
    header = np.zeros((), dtype=mrcfile.dtypes.HEADER_DTYPE)
    data = (np.arange(int(np.prod(shape))) % 7).reshape(shape).astype(_DTYPES[mode])
    header["nx"], header["ny"], header["nz"] = shape[2], shape[1], shape[0]
    header["mx"], header["my"], header["mz"] = shape[2], shape[1], shape[0]
    header["mode"] = mode
    header["ispg"] = 1  # a volume, not an image stack
    header["cella"] = (float(shape[2]), float(shape[1]), float(shape[0]))
    header["mapc"], header["mapr"], header["maps"] = 1, 2, 3
    header["map"] = b"MAP "
    header["machst"] = (0x44, 0x44, 0, 0)
    header["nversion"] = 20140
    return header.tobytes() + data.tobytes()


@st.composite
def damaged_mrc(draw) -> bytes:
    """A valid small MRC with random header words overwritten, then maybe cut, extended or
    scribbled on, or wrapped in a (possibly broken) compression header."""
    shape = tuple(draw(st.integers(1, 5)) for _ in range(3))
    blob = bytearray(_valid_mrc(shape, draw(st.sampled_from(sorted(_DTYPES)))))
    for offset, fmt in draw(st.lists(st.sampled_from(_FIELDS), max_size=4)):
        if fmt == "<i":
            value = struct.pack(fmt, draw(_INTS))
        elif fmt == "<f":
            value = struct.pack(fmt, draw(_FLOATS))
        else:
            value = draw(st.binary(min_size=4, max_size=4))
        blob[offset:offset + 4] = value
    damage = draw(st.sampled_from(["none", "cut", "extend", "scribble", "gzip-magic", "bzip2-magic"]))
    if damage == "cut":
        blob = blob[:draw(st.integers(0, len(blob)))]
    elif damage == "extend":
        blob += draw(st.binary(min_size=1, max_size=300))
    elif damage == "scribble":
        for position, byte in draw(st.lists(st.tuples(st.integers(0, len(blob) - 1), st.integers(0, 255)),
                                            min_size=1, max_size=8)):
            blob[position] = byte
    elif damage in ("gzip-magic", "bzip2-magic"):
        blob = bytearray(b"\x1f\x8b\x08" if damage == "gzip-magic" else b"BZh9") + blob[:200]
    return bytes(blob)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=damaged_mrc())
def test_read_map_raises_only_one_line_cryoreserror(tmp_path, content):
    path = tmp_path / "fuzz.mrc"
    path.write_bytes(content)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        peeked = peek_grid(path)  # never raises
        try:
            density = read_map(path)
        except CryoResError as error:
            message = str(error)
            assert message and "\n" not in message
        else:
            assert density.data.ndim == 3 and density.data.dtype == np.float32
            assert all(np.isfinite(v) and v > 0 for v in density.voxel_size)
            if peeked is not None:
                assert peeked[0] == density.data.shape
    assert not caught, [str(w.message) for w in caught]  # a warning on stderr would break the one line


def _header_with(path: Path, **words: int) -> Path:
    """Rewrite integer header words (nx, ny, nz, mode, mx) of an existing MRC file."""
    offsets = {"nx": 0, "ny": 4, "nz": 8, "mode": 12, "mx": 28}
    blob = bytearray(path.read_bytes())
    for name, value in words.items():
        blob[offsets[name]:offsets[name] + 4] = struct.pack("<i", value)
    path.write_bytes(bytes(blob))
    return path


def test_damaged_headers_on_the_command_line(tmp_path, density):
    cases = {
        "mx0": (_header_with(write_mrc(tmp_path / "mx0.mrc", density), mx=0), "voxel size"),
        "huge": (_header_with(write_mrc(tmp_path / "huge.mrc", density), nx=2**15, ny=2**15), "not a readable MRC"),
        # sizes whose product is negative in int32 arithmetic (found by the fuzz test above)
        "wrapped": (_header_with(write_mrc(tmp_path / "wrapped.mrc", density), nx=2**30 + 1, ny=-2**31, nz=1),
                    "not a readable MRC"),
        "mode": (_header_with(write_mrc(tmp_path / "mode.mrc", density), mode=99), "not a readable MRC"),
    }
    gz = tmp_path / "broken.mrc.gz"
    gz.write_bytes(b"\x1f\x8b\x08\x00" + bytes(range(256)) * 4)
    cases["gzip"] = (gz, "not a readable MRC")
    inputs = folder_names(tmp_path)
    for path, match in cases.values():
        proc = run("filter", path, "--locres", path, "-o", tmp_path / "out.mrc")
        assert_one_line_error(proc, match)
    assert folder_names(tmp_path) == inputs


# ------------------------------------------------------------------------ interrupted runs


@pytest.fixture(scope="module")
def slow_map(tmp_path_factory) -> Path:
    """80^3: with overlap 0.8 and one patch per batch, inference takes tens of seconds."""
    folder = tmp_path_factory.mktemp("slow")
    return write_mrc(folder / "slow.mrc", synthetic_map(shape=(80, 80, 80), n_atoms=1200, seed=5))


def _wait_for_patches(proc: subprocess.Popen) -> bytes:
    """Read the progress bar until at least one patch is done (inference is under way)."""
    seen = b""
    while not re.search(rb"\b[1-9]\d*/\d+ \[", seen):
        chunk = os.read(proc.stderr.fileno(), 4096)
        if not chunk:
            break
        seen += chunk
    return seen


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_mid_inference_leaves_nothing(tmp_path, slow_map, model_card, signum):
    folder = tmp_path / "run"
    folder.mkdir()
    map_path = folder / slow_map.name
    map_path.write_bytes(slow_map.read_bytes())
    output = folder / "out.mrc"
    proc = subprocess.Popen(CLI + ["predict", str(map_path), "--model", str(model_card), "-o", str(output),
                                   "--uncertainty", str(folder / "std.mrc"), "--samples", "2",
                                   "--overlap", "0.8", "--batch-size", "1", "--device", "cpu"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            # as from an interactive shell, even when pytest runs in the background
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        seen = _wait_for_patches(proc)
        assert proc.poll() is None, seen.decode(errors="replace")  # still inferring
        proc.send_signal(signum)
        _, rest = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 130
    assert rest.decode().strip().splitlines()[-1] == "cryores: interrupted; no partial output written"
    assert folder_names(folder) == {map_path.name}  # no output, no temporary file


def test_interrupt_while_writing_leaves_nothing(tmp_path, map_file, model_card, monkeypatch):
    """The last phase: the first output is complete in its temporary file, the second is being
    written when Ctrl-C arrives; neither may appear, no temporary file may stay."""
    real_write = mrc_io._write_mrc
    calls = []

    def write_then_interrupt(path, *args, **kwargs):
        calls.append(path)
        real_write(path, *args, **kwargs)
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(mrc_io, "_write_mrc", write_then_interrupt)
    inputs = folder_names(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        predict_file(map_file, tmp_path / "res.mrc", uncertainty=tmp_path / "std.mrc", samples=2, model=model_card)
    assert len(calls) == 2 and folder_names(tmp_path) == inputs


# ------------------------------------------------------------------------ memory guard


def test_memory_limit_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("CRYORES_MEMORY_LIMIT", "1.5G")
    assert memory_module.memory_limit() == int(1.5 * 2**30)
    monkeypatch.setenv("CRYORES_MEMORY_LIMIT", "lots")
    with pytest.raises(CryoResError, match="CRYORES_MEMORY_LIMIT"):
        memory_module.memory_limit()
    monkeypatch.delenv("CRYORES_MEMORY_LIMIT")
    monkeypatch.setattr(memory_module, "available_memory", lambda: 10 * 2**30)
    assert memory_module.memory_limit() == 9 * 2**30
    with pytest.raises(CryoResError, match="needs about 40.0 GiB"):  # 1024^3 voxels, same grid
        memory_module.check_fits(2**30, 2**30, False)


def test_available_memory_is_the_smallest_of_free_memory_and_cgroup_limit(monkeypatch):
    monkeypatch.setattr(memory_module, "_meminfo_available", lambda: 5 * 2**30)
    monkeypatch.setattr(memory_module, "_cgroup_limit", lambda: 3 * 2**30)  # a container or batch job
    assert memory_module.available_memory() == 3 * 2**30
    monkeypatch.setattr(memory_module, "_cgroup_limit", lambda: None)
    assert memory_module.available_memory() == 5 * 2**30
    monkeypatch.setattr(memory_module, "_meminfo_available", lambda: None)  # not Linux: installed memory
    assert memory_module.available_memory() == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _sparse_map(path: Path, side: int) -> Path:
    """A complete float32 MRC of side^3 voxels whose data block is a hole: no disk, no RAM."""
    header = bytearray(_valid_mrc((1, 1, 1), 2)[:1024])
    header[0:12] = struct.pack("<3i", side, side, side)
    header[28:40] = struct.pack("<3i", side, side, side)
    header[40:52] = struct.pack("<3f", float(side), float(side), float(side))
    path.write_bytes(bytes(header))
    os.truncate(path, 1024 + 4 * side ** 3)
    return path


# Runs a command and prints its peak resident memory (KiB on Linux). The measuring parent must be
# small: a child's peak counts the image it was forked from, and pytest's own may be gigabytes.
PEAK_OF_CHILD = ("import resource, subprocess, sys; p = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
                 "sys.stderr.write(p.stderr); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
                 "sys.exit(p.returncode)")


@pytest.mark.skipif(sys.platform != "linux", reason="sparse files and ru_maxrss in KiB are Linux's")
@pytest.mark.parametrize("command", ["predict", "filter"])
def test_a_map_too_large_fails_before_it_is_read(tmp_path, model_card, command):
    huge = _sparse_map(tmp_path / "huge.mrc", 1024)  # 4 GiB on paper
    if huge.stat().st_blocks * 512 > 2**20:
        pytest.skip("this file system does not store sparse files")
    assert peek_grid(huge) == ((1024, 1024, 1024), (1.0, 1.0, 1.0))
    extra = ["--model", model_card] if command == "predict" else ["--locres", huge]
    proc = subprocess.run([sys.executable, "-c", PEAK_OF_CHILD, *CLI, command, huge, "-o", tmp_path / "out.mrc",
                           *extra], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "CRYORES_MEMORY_LIMIT": "3G"})
    assert_one_line_error(proc, "GiB of memory")
    assert int(proc.stdout.split()[-1]) < 2**20  # KiB: under 1 GiB, so the 4 GiB of data were never read
    assert folder_names(tmp_path) == {"huge.mrc"}


# ------------------------------------------------------------------------ concurrent runs


def test_temporary_names_are_unique_for_the_same_target(tmp_path):
    target = tmp_path / "same.mrc"
    with atomic_path(target) as first, atomic_path(target) as second:
        assert first != second and first.parent == second.parent == tmp_path


def test_two_processes_in_one_folder_do_not_interfere(tmp_path, slow_map, model_card):
    map_path = tmp_path / "map.mrc"
    map_path.write_bytes(slow_map.read_bytes())
    reference, _ = predict_file(map_path, tmp_path / "reference.mrc", model=model_card, device="cpu")
    procs = [subprocess.Popen(CLI + ["predict", str(map_path), "--model", str(model_card), "-o", str(tmp_path / name),
                                     "--quiet", "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for name in ("a.mrc", "b.mrc")]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()
    for name in ("a.mrc", "b.mrc"):
        np.testing.assert_allclose(read_map(tmp_path / name).data, reference.resolution, rtol=0, atol=1e-5)
    assert folder_names(tmp_path) == {"map.mrc", "reference.mrc", "a.mrc", "b.mrc"}  # no temporary file left


# ------------------------------------------------------------------------ tampered weights


def test_tampered_weights_fail_on_the_command_line(tmp_path, map_file):
    from conftest import make_random_model

    card = make_random_model(tmp_path / "model")
    weights = card.parent / json.loads(card.read_text())["weights"]
    blob = bytearray(weights.read_bytes())
    blob[-10] ^= 0xFF
    weights.write_bytes(bytes(blob))
    inputs = folder_names(map_file.parent)
    proc = run("predict", map_file, "--model", card, "--quiet")
    assert_one_line_error(proc, "sha256")
    assert "does not belong to this card" in proc.stderr
    assert folder_names(map_file.parent) == inputs
