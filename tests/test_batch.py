"""Many maps on Dask: a LocalCluster of 2 worker processes and a real scheduler + workers started
as subprocesses on 127.0.0.1, over 6 small maps of which one is broken.

The outputs must be byte-for-byte the data of single in-process runs; the broken map must fail
alone; a killed worker must lose no finished output; a rerun (also of a run killed by SIGTERM)
must skip what exists and complete the rest.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import torch

from conftest import synthetic_map, write_mrc
from cryores import cli, predict_file
from cryores.batch import (
    BatchOptions,
    MapRow,
    largest_map_bytes,
    local_cluster_size,
    model_loads,
    plan_outputs,
    read_map_list,
    read_summary,
    run_batch,
    write_summary,
)
from cryores.errors import CryoResError

distributed = pytest.importorskip("distributed")

N_GOOD = 5
BROKEN = "broken.mrc"


def run_cli(*args, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cryores", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def temporary_files(folder: Path) -> list[Path]:
    return sorted(folder.glob(".*.tmp"))


@pytest.fixture(scope="module")
def maps(tmp_path_factory) -> list[Path]:
    """Five good maps (different contents, one of another shape and voxel size) and a truncated one."""
    folder = tmp_path_factory.mktemp("maps")
    good = [write_mrc(folder / f"map{i}.mrc", synthetic_map(seed=i), origin=(1.0 * i, 0.0, 0.0))
            for i in range(N_GOOD - 1)]
    good.append(write_mrc(folder / "odd.mrc", synthetic_map((44, 40, 48), voxel_size=1.2, seed=9), voxel_size=1.2))
    broken = folder / BROKEN
    broken.write_bytes(good[0].read_bytes()[:5000])
    return [*good[:3], broken, *good[3:]]


@pytest.fixture(scope="module")
def good_maps(maps) -> list[Path]:
    return [m for m in maps if m.name != BROKEN]


@pytest.fixture(scope="module")
def reference(maps, model_card, tmp_path_factory) -> dict[str, Path]:
    """Each good map run alone, in-process, with one torch thread as the batch workers use."""
    folder = tmp_path_factory.mktemp("reference")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {m.name: predict_file(m, folder / f"{m.stem}_locres.mrc", model=str(model_card))[1]
                for m in maps if m.name != BROKEN}
    finally:
        torch.set_num_threads(threads)


def assert_same_as_reference(output: Path, reference: Path, exact: bool = True) -> None:
    """Bit for bit with the same torch thread count; other counts sum in another order (~1e-7)."""
    with mrcfile.open(output) as got, mrcfile.open(reference) as want:
        if exact:
            np.testing.assert_array_equal(got.data, want.data)
        else:
            np.testing.assert_array_equal(got.data == 0, want.data == 0)  # the same mask
            np.testing.assert_allclose(got.data, want.data, rtol=1e-5, atol=0)
        for name in ("nx", "ny", "nz", "cella", "origin", "nxstart", "mapc", "mapr", "maps"):
            assert got.header[name] == want.header[name], name


@pytest.fixture(scope="module")
def local_client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address="127.0.0.1:0")
    with cluster, distributed.Client(cluster) as client:
        yield client


def _start_worker(scheduler_file: Path, log: Path) -> subprocess.Popen:
    """A real `dask worker` process without a nanny (so that killing it kills it)."""
    return subprocess.Popen([sys.executable, "-m", "dask", "worker", "--scheduler-file", str(scheduler_file),
                             "--nthreads", "1", "--no-nanny", "--no-dashboard", "--host", "127.0.0.1"],
                            stdout=subprocess.DEVNULL, stderr=open(log, "w"))


def _wait_for_workers(client, n: int, timeout: float = 60) -> None:
    client.wait_for_workers(n, timeout=timeout)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def external(tmp_path_factory):
    """(address, client, folder) of a `dask scheduler` and one `dask worker`, subprocesses on 127.0.0.1."""
    folder = tmp_path_factory.mktemp("dask")
    scheduler_file = folder / "scheduler.json"
    scheduler = subprocess.Popen([sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1", "--port", "0",
                                  "--no-dashboard", "--scheduler-file", str(scheduler_file)],
                                 stdout=subprocess.DEVNULL, stderr=open(folder / "scheduler.log", "w"))
    processes = [scheduler]
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.exists() and time.monotonic() < deadline:
            assert scheduler.poll() is None, (folder / "scheduler.log").read_text()
            time.sleep(0.2)
        processes.append(_start_worker(scheduler_file, folder / "worker.log"))
        address = json.loads(scheduler_file.read_text())["address"]
        with distributed.Client(address, timeout="30s") as client:
            _wait_for_workers(client, 1)
            yield address, client, folder
    finally:
        for process in reversed(processes):
            _stop(process)


def test_local_cluster_matches_single_runs_and_the_broken_map_fails_alone(
        local_client, maps, good_maps, reference, model_card, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    stale = out / ".map0_locres.mrc.x1y2z3.tmp"  # what a worker killed mid-write leaves behind
    stale.write_bytes(b"partial")
    options = BatchOptions(model=str(model_card), torch_threads=1)

    rows = run_batch(maps, out, options, client=local_client)

    assert [r.input for r in rows] == [str(m) for m in maps]  # input order, whatever the finishing order
    by_name = {Path(r.input).name: r for r in rows}
    broken = by_name.pop(BROKEN)
    assert broken.status == "failed" and BROKEN in broken.error and "not a readable MRC file" in broken.error
    assert "\n" not in broken.error
    assert not (out / "broken_locres.mrc").exists()
    for name, row in by_name.items():
        assert row.status == "done" and row.error == "", row
        assert Path(row.output) == out / f"{Path(name).stem}_locres.mrc"
        assert_same_as_reference(Path(row.output), reference[name])
        assert 0 < row.mask_fraction < 1 and row.p5 <= row.median <= row.p95 and row.seconds > 0
    assert by_name["odd.mrc"].voxel_size == "1.2" and by_name["map0.mrc"].voxel_size == "1"
    assert not temporary_files(out)
    # Loaded once per worker (each runs one thread), not once per map.
    loads = local_client.run(model_loads)
    assert len(loads) == 2 and all(n <= 1 for n in loads.values()) and sum(loads.values()) >= 1

    # The summary table: one row per map, as written by the CLI.
    summary = write_summary(rows, out / "summary.csv")
    table = read_summary(summary)
    assert [Path(r["input"]).name for r in table] == [m.name for m in maps]
    assert [r["status"] for r in table].count("done") == N_GOOD
    assert table[3]["status"] == "failed" and table[3]["median"] == "" and BROKEN in table[3]["error"]
    assert float(table[0]["median"]) == pytest.approx(rows[0].median, rel=1e-3)

    # Rerun: finished outputs are skipped (not rewritten) and their statistics read back.
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("*_locres.mrc")}
    again = run_batch(maps, out, options, client=local_client)
    assert [r.status for r in again] == ["skipped" if r.status == "done" else "failed" for r in rows]
    assert before == {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("*_locres.mrc")}
    for first, second in zip(rows, again):
        if first.status == "done":
            assert second.median == pytest.approx(first.median, abs=1e-4)
            assert second.p95 == pytest.approx(first.p95, abs=1e-4)
            assert second.mask_fraction == pytest.approx(first.mask_fraction)
            assert second.voxel_size == first.voxel_size


def test_an_existing_file_that_is_not_this_maps_output_is_not_skipped(local_client, good_maps, model_card, tmp_path):
    """Resuming trusts an output only if it is a local-resolution map on the input's grid."""
    (tmp_path / "map0_locres.mrc").write_text("not a map")
    write_mrc(tmp_path / "map1_locres.mrc", np.ones((8, 8, 8), np.float32))
    rows = run_batch(good_maps[:3], tmp_path, BatchOptions(model=str(model_card), torch_threads=1),
                     client=local_client)
    assert [r.status for r in rows] == ["failed", "failed", "done"]
    assert all("exists; use --force" in r.error for r in rows[:2])
    rows = run_batch(good_maps[:3], tmp_path, BatchOptions(model=str(model_card), torch_threads=1, force=True),
                     client=local_client)
    assert [r.status for r in rows] == ["done", "done", "done"]


def test_killing_a_worker_mid_run_loses_no_finished_output(external, maps, good_maps, reference, model_card,
                                                          tmp_path):
    address, client, folder = external
    victim = _start_worker(Path(folder) / "scheduler.json", tmp_path / "victim.log")
    try:
        _wait_for_workers(client, 2)
        victim_address = next(a for a, pid in client.run(os.getpid).items() if pid == victim.pid)
        finished_before_kill: dict[str, tuple[int, int]] = {}

        def kill_once(row: MapRow) -> None:
            if victim.poll() is not None or row.status != "done":
                return
            deadline = time.monotonic() + 60  # until the victim is busy with a map
            while not client.processing().get(victim_address) and time.monotonic() < deadline:
                time.sleep(0.01)
            assert client.processing().get(victim_address), "the second worker never got a map"
            for p in tmp_path.glob("*_locres.mrc"):
                finished_before_kill[p.name] = (p.stat().st_ino, p.stat().st_mtime_ns)
            victim.send_signal(signal.SIGKILL)
            victim.wait()

        rows = run_batch(maps, tmp_path, BatchOptions(model=str(model_card), torch_threads=1), scheduler=address,
                         on_row=kill_once)
    finally:
        _stop(victim)
    assert victim.returncode == -signal.SIGKILL
    assert finished_before_kill, "nothing had finished when the worker was killed"
    for name, stat in finished_before_kill.items():  # finished outputs are untouched
        assert (tmp_path / name).stat().st_ino == stat[0] and (tmp_path / name).stat().st_mtime_ns == stat[1]
    # Dask gave the killed worker's map to the survivor: every good map is done, the broken one failed.
    # ("skipped" when the victim had renamed its output into place just before it died: the retry
    # finds it complete; retries are idempotent.)
    statuses = {Path(r.input).name: r.status for r in rows}
    assert statuses.pop(BROKEN) == "failed"
    assert set(statuses.values()) <= {"done", "skipped"} and list(statuses.values()).count("skipped") <= 1
    for m in good_maps:
        assert_same_as_reference(tmp_path / f"{m.stem}_locres.mrc", reference[m.name])
    assert not temporary_files(tmp_path)
    rerun = run_batch(maps, tmp_path, BatchOptions(model=str(model_card)), scheduler=address)
    assert sorted(r.status for r in rerun) == ["failed"] + ["skipped"] * N_GOOD


def test_cli_with_scheduler_and_list_file(external, maps, good_maps, reference, model_card, tmp_path):
    address, _, _ = external
    listing = tmp_path / "maps.txt"
    listing.write_text("# maps of the day\n" + "\n".join(str(m) for m in maps) + "\n\n")
    out = tmp_path / "out"
    out.mkdir()
    proc = run_cli("predict", "--list", listing, "--out-dir", out, "--scheduler", address, "--model", model_card,
                   "--torch-threads", "1", "--quiet")
    assert proc.returncode == 1  # one map failed
    assert proc.stdout.strip() == f"6 maps: 5 done, 1 failed -> {out / 'cryores_batch.csv'}"
    errors = proc.stderr.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("cryores: error: map ") and BROKEN in errors[0]
    assert "Traceback" not in proc.stderr
    table = read_summary(out / "cryores_batch.csv")
    assert [r["status"] for r in table] == ["done", "done", "done", "failed", "done", "done"]
    for m in good_maps:
        assert_same_as_reference(out / f"{m.stem}_locres.mrc", reference[m.name])

    listing.write_text("\n".join(str(m) for m in good_maps))
    proc = run_cli("predict", "--list", listing, "--out-dir", out, "--scheduler", address, "--model", model_card,
                   "--quiet", "--summary", tmp_path / "second.csv")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("5 maps: 0 done, 5 skipped (output exists), 0 failed")
    assert {r["status"] for r in read_summary(tmp_path / "second.csv")} == {"skipped"}


def test_cli_run_killed_by_sigterm_resumes(external, good_maps, reference, model_card, tmp_path):
    address, _, _ = external
    args = ["predict", *good_maps, "--out-dir", tmp_path, "--scheduler", address, "--model", model_card,
            "--torch-threads", "1", "--quiet"]
    process = subprocess.Popen([sys.executable, "-m", "cryores", *map(str, args)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob("*_locres.mrc")) and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    done_first = {p.name for p in tmp_path.glob("*_locres.mrc")}
    if process.returncode == 0:
        pytest.skip("the batch finished before SIGTERM arrived")
    assert process.returncode == 130 and "interrupted" in err and "Traceback" not in err
    table = read_summary(tmp_path / "cryores_batch.csv")  # what finished is in the summary
    assert {r["status"] for r in table} <= {"done", "not run"} and "not run" in {r["status"] for r in table}

    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    statuses = {Path(r["input"]).name: r["status"] for r in read_summary(tmp_path / "cryores_batch.csv")}
    assert all(statuses[f"{n.removesuffix('_locres.mrc')}.mrc"] == "skipped" for n in done_first)
    assert "done" in statuses.values()  # the rest was completed by the rerun
    for m in good_maps:
        assert_same_as_reference(tmp_path / f"{m.stem}_locres.mrc", reference[m.name])
    assert not temporary_files(tmp_path)


def test_cli_local_cluster_without_scheduler(good_maps, reference, model_card, tmp_path):
    proc = run_cli("predict", *good_maps[:2], "--out-dir", tmp_path, "--workers", "1", "--model", model_card)
    assert proc.returncode == 0, proc.stderr
    assert "2/2" in proc.stderr and "map" in proc.stderr  # the progress bar counts maps
    assert proc.stdout.strip() == f"2 maps: 2 done, 0 failed -> {tmp_path / 'cryores_batch.csv'}"
    for m in good_maps[:2]:  # default sizing: 1 worker x 2 torch threads here
        assert_same_as_reference(tmp_path / f"{m.stem}_locres.mrc", reference[m.name], exact=os.cpu_count() == 1)


def test_one_map_without_batch_options_runs_in_process_without_dask(good_maps, model_card, tmp_path):
    argv = ["predict", str(good_maps[0]), "-o", str(tmp_path / "one.mrc"), "--model", str(model_card), "--quiet"]
    code = (f"import sys; from cryores.cli import main; rc = main({argv!r}); "
            "assert 'distributed' not in sys.modules and 'dask' not in sys.modules, 'Dask was imported'; "
            "sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("\n") == 1 and "median" in proc.stdout and (tmp_path / "one.mrc").is_file()


@pytest.mark.parametrize("extra, words", [
    (["-o", "x.mrc"], "-o/--output"),
    (["--mask", "m.mrc"], "--mask"),
    (["--uncertainty", "s.mrc"], "--uncertainty"),
    (["--scheduler", "tcp://127.0.0.1:1", "--workers", "2"], "--workers sizes a local cluster"),
])
def test_batch_usage_errors_are_one_line_exit_2(extra, words, good_maps, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["predict", str(good_maps[0]), str(good_maps[1]), *extra])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cryores predict: error:") and words in err[0]


def test_no_map_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["predict"])
    assert exit_info.value.code == 2 and "needs a MAP" in capsys.readouterr().err


def test_batch_problems_fail_before_any_work(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    clash = [str(write_mrc(d / "x.mrc", np.zeros((4, 4, 4), np.float32))) for d in (a, b)]
    assert cli.main(["predict", *clash, "--out-dir", str(tmp_path)]) == 1
    assert cli.main(["predict", "--list", str(tmp_path / "missing.txt")]) == 1
    assert cli.main(["predict", clash[0], "--out-dir", str(tmp_path / "nowhere")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("cryores: error:") for line in err)
    assert "would both write" in err[0] and "no such file" in err[1] and "does not exist" in err[2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


def test_unreachable_scheduler_is_one_line(good_maps, model_card, tmp_path, capsys):
    import dask

    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        rc = cli.main(["predict", str(good_maps[0]), "--out-dir", str(tmp_path), "--scheduler", "tcp://127.0.0.1:9",
                       "--model", str(model_card), "--quiet"])
    assert rc == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cryores: error: cannot reach the Dask scheduler"), err
    assert list(tmp_path.iterdir()) == []


def test_list_file_and_output_plan(tmp_path):
    listing = tmp_path / "l.txt"
    listing.write_text("a.mrc\n  # comment\n\nsub/b.mrc.gz\na.mrc\n")
    maps = read_map_list(listing)
    assert maps == [Path("a.mrc"), Path("sub/b.mrc.gz"), Path("a.mrc")]
    pairs = plan_outputs(maps, None)
    assert len(pairs) == 2 and all(p.is_absolute() and o.is_absolute() for p, o in pairs)
    assert pairs[1][1].name == "b_locres.mrc" and pairs[1][1].parent == pairs[1][0].parent
    assert plan_outputs(maps, tmp_path / "o")[0][1] == tmp_path / "o" / "a_locres.mrc"
    with pytest.raises(CryoResError, match="no maps"):
        plan_outputs([], None)


def test_local_cluster_sizing_keeps_workers_times_threads_within_cores_and_memory(good_maps):
    gib = 2**30
    assert local_cluster_size(100, cores=8) == (8, 1)
    assert local_cluster_size(3, cores=8) == (3, 2)                                   # never more workers than maps
    assert local_cluster_size(100, cores=8, bytes_per_map=gib, memory=4 * gib) == (2, 4)  # memory caps workers
    assert local_cluster_size(100, cores=8, bytes_per_map=64 * gib, memory=4 * gib) == (1, 8)
    assert local_cluster_size(100, workers=3, cores=8, bytes_per_map=64 * gib, memory=gib) == (3, 2)  # --workers
    assert local_cluster_size(100, workers=4, cores=2) == (4, 1)
    assert largest_map_bytes(good_maps) == 40 * 44 * 40 * 48  # odd.mrc, from its header
