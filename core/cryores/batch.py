"""Local resolution of many maps on a Dask cluster (``cryores predict MAP MAP ... --out-dir``).

One Dask task per map; each task calls the public :func:`cryores.predict_file`, so every map
keeps the single-map guarantees (atomic writes, no overwrite without ``force``, one-line
errors). What this module adds is only what a batch needs:

* the model is loaded once per worker thread (usually one per worker process), not per map;
* a map's failure becomes a row of the summary instead of stopping the batch, and so does a
  worker that dies (Dask retries the map elsewhere first);
* an output that already exists and is a complete local-resolution map of its input is
  skipped (its statistics are read back), so a killed run resumes by being run again;
* temporary files left by a worker killed while writing are swept away.

Dask is optional (``pip install 'cryores[distributed]'``); it is imported only here, and only
when a batch runs.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import re
import signal
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from .cautions import prediction_cautions
from .cut_finding import find_lowpass_cut
from .cut_scale import scale_for_cut
from .errors import CryoResError
from .model_card import LoadedModel, load_model
from .predict import default_output_path, predict_file, read_resolution_labels
from .summary import summarise

SUMMARY_NAME = "cryores_batch.csv"
STATUS_DONE, STATUS_SKIPPED, STATUS_FAILED, STATUS_NOT_RUN = "done", "skipped", "failed", "not run"


@dataclass
class MapRow:
    """One map's line in the summary CSV (Å for resolutions; seconds of wall time on its worker)."""

    input: str
    output: str
    status: str = STATUS_NOT_RUN
    error: str = ""
    median: float | None = None
    p5: float | None = None
    p95: float | None = None
    mask_fraction: float | None = None
    voxel_size: str = ""
    cautions: str = ""  # Prediction.cautions joined by "; " (what lies beyond the model's training)
    seconds: float | None = None
    worker: str = ""

    @property
    def ok(self) -> bool:
        return self.status in (STATUS_DONE, STATUS_SKIPPED)


@dataclass
class BatchOptions:
    """What every map of a batch is predicted with (the options of :func:`predict_file`)."""

    model: str | None = None          # model card path; None = the installed model
    force: bool = False
    samples: int | None = None
    voxel_size: float | None = None
    device: str = "auto"
    patch_size: int | None = None
    overlap: float | None = None
    batch_size: int = 4
    seed: int = 0
    torch_threads: int | None = None  # None: the worker's cores / its Dask threads
    predict_options: dict = field(default_factory=dict)


# ---------------------------------------------------------------- inputs and outputs (client side)

def read_map_list(path: str | os.PathLike) -> list[Path]:
    """Paths from a list file: one per line; blank lines and lines starting with # are ignored.

    Relative paths are relative to the current directory, as the output of ``find`` is.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise CryoResError(f"map list {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise CryoResError(f"map list {path}: unreadable ({error})") from None
    return [Path(line.strip()) for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def plan_outputs(maps: Iterable[str | os.PathLike], out_dir: str | os.PathLike | None) -> list[tuple[Path, Path]]:
    """(absolute map, absolute output) pairs, duplicates of the same map dropped, order kept.

    Outputs keep the single-map naming (``<stem>_locres.mrc``), beside each map or in
    ``out_dir``. Absolute paths, because workers may run in other folders or on other nodes.
    Raises CryoResError when two different maps would write the same output.
    """
    pairs: list[tuple[Path, Path]] = []
    seen: set[Path] = set()
    writers: dict[Path, Path] = {}
    for item in maps:
        source = Path(os.path.abspath(item))
        if source in seen:
            continue
        seen.add(source)
        output = default_output_path(source)
        if out_dir is not None:
            output = Path(os.path.abspath(out_dir)) / output.name
        if output in writers:
            raise CryoResError(f"maps {writers[output]} and {source} would both write {output}; "
                               "rename one or run them with different --out-dir")
        writers[output] = source
        pairs.append((source, output))
    if not pairs:
        raise CryoResError("no maps given")
    return pairs


def _temporary_files(output: Path) -> list[Path]:
    """Temporary files of the atomic writer for ``output`` (``.<name>.<random>.tmp`` beside it)."""
    try:
        return [p for p in output.parent.glob(f".{glob_escape(output.name)}.*.tmp") if p.is_file()]
    except OSError:
        return []


def glob_escape(name: str) -> str:
    return re.sub(r"([\[\]*?])", r"[\1]", name)


def sweep_temporary_files(outputs: Iterable[Path]) -> int:
    """Remove what an atomic write killed mid-way (worker SIGKILLed, node lost) left behind.

    Only called while none of this batch's tasks is writing: before submitting and after the
    last result. Returns the number of files removed.
    """
    removed = 0
    for output in outputs:
        for tmp in _temporary_files(output):
            try:
                tmp.unlink()
                removed += 1
            except OSError:
                pass
    return removed


# ---------------------------------------------------------------- the task (worker side)

_models: dict[tuple[str | None, int], LoadedModel] = {}
_models_lock = threading.Lock()
_model_loads = 0


def _worker_model(card: str | None) -> LoadedModel:
    """The model for this worker thread, loaded (and its sha256 checked) on first use only.

    Per thread, not per process: MC dropout switches dropout layers on during a forward pass,
    which two threads sharing one network would see. Workers run one thread by default.
    """
    global _model_loads
    key = (card, threading.get_ident())
    with _models_lock:
        if key not in _models:
            _models[key] = load_model(card)
            _model_loads += 1
        return _models[key]


def model_loads() -> int:
    """How many times this process has loaded a model (for tests: ``client.run(model_loads)``)."""
    return _model_loads


def _torch_threads(requested: int | None) -> int:
    """Threads for torch in this task: the request, else this worker's cores over its Dask threads."""
    if requested:
        return requested
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    nthreads = 1
    try:
        from distributed import get_worker

        nthreads = max(1, int(get_worker().state.nthreads))
    except Exception:  # not inside a worker (e.g. called directly)
        pass
    return max(1, cores // nthreads)


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except Exception:
        return f"pid {os.getpid()}"


def _voxel_text(voxel: Sequence[float]) -> str:
    values = [round(float(v), 4) for v in voxel]
    return f"{values[0]:g}" if len(set(values)) == 1 else " ".join(f"{v:g}" for v in values)


def _existing_output_row(source: Path, output: Path, card: dict, row: MapRow,
                         voxel_size: float | None = None, lowpass_cut: float | None = None,
                         find_cut: bool = True) -> MapRow | None:
    """A 'skipped' row when ``output`` is a complete local-resolution map of ``source``, else None.

    Complete: it reads as an MRC map (the writer renames only finished files, so a partial one
    cannot carry the output's name), has the input's shape and voxel size, when its label
    names a model, the same model, and the same low-pass cut as ``lowpass_cut`` (none when its
    labels name none), for a map without a noise reference given no cut, the cut found in its
    spectrum as a run now finds it (:func:`_found_cut_matches`), and no cryores label line whose
    value does not parse. Anything else is left to predict_file, which then refuses to overwrite
    it without --force.
    """
    import mrcfile

    from .mrc_io import header_labels, read_map

    def grid(path: Path) -> tuple[tuple[int, ...], tuple[float, ...], list[str]]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with mrcfile.open(path, header_only=True, permissive=True) as mrc:
                header = mrc.header
                labels = header_labels(header)
                voxel = tuple(float(mrc.voxel_size[axis]) for axis in "xyz")
                return (int(header.nz), int(header.ny), int(header.nx)), voxel, labels

    try:
        shape, voxel, _ = grid(source)
        out_shape, out_voxel, labels = grid(output)
        if out_shape != shape or not np.allclose(out_voxel, voxel, rtol=1e-4):
            return None
        result = read_map(output, role="output", voxel_size=voxel_size)  # header 0 Å: the user's override
        if result.data.shape != shape:
            return None
        facts = read_resolution_labels(labels)
        if facts.garbled:
            return None
        if facts.model_name is not None and facts.model_name != str(card["name"]):
            return None
        if facts.lowpass_cut != (None if lowpass_cut is None else float(lowpass_cut)):
            return None
        inside = result.data > 0
        if facts.noise_reference is False and facts.lowpass_cut is None and not _found_cut_matches(
                facts.found_cut, source, result, inside, voxel_size, find_cut):
            return None
        summary = summarise(result.data, inside)
        refused = ()  # a masked map's cut that set no scale: refused as far finer, or a file made before
        if facts.noise_reference is False and facts.lowpass_cut is not None and facts.cut_scale is None:
            scale, refusal = scale_for_cut(result.data, inside, facts.lowpass_cut, result.voxel_size)
            if scale is not None:
                return None  # read before the cut set a masked map's scale: not what a run gives now
            refused = (refusal,) if refusal else ()
    except (CryoResError, OSError, ValueError):
        return None
    row.status = STATUS_SKIPPED
    row.median, row.p5, row.p95 = summary.median, summary.p5, summary.p95
    row.mask_fraction = summary.mask_fraction
    row.voxel_size = _voxel_text(result.voxel_size)
    row.cautions = "; ".join(prediction_cautions(result.data, inside, result.voxel_size, card,  # as when made
                                                 facts.noise_reference,
                                                 lowpass_cut_given=facts.lowpass_cut is not None,
                                                 scaled_to_cut=facts.cut_scale is not None,
                                                 solvent_spread=facts.solvent_spread,
                                                 found_cut=facts.found_cut) + refused)
    return row


def _found_cut_matches(found: float | None, source: Path, result, inside: np.ndarray,
                       voxel_size: float | None, find_cut: bool) -> bool:
    """Whether a kept output of a map without a noise reference, read with the cut ``found`` in
    its spectrum (None: none), is what a run now gives: the same search (``find_cut``), and where
    the file names no cut, none that a run would now take as the map's scale (a file made before
    cuts were looked for, or with the search off)."""
    from .mrc_io import read_map

    if found is not None:
        return find_cut
    if not find_cut:
        return True
    density = read_map(source, voxel_size=voxel_size)
    cut = find_lowpass_cut(density.data, density.voxel_size)
    return cut is None or scale_for_cut(result.data, inside, cut, result.voxel_size)[0] is None


def predict_one(source: str, output: str, options: BatchOptions) -> MapRow:
    """Predict one map on a worker; never raises for a bad map (the row says what went wrong)."""
    import torch

    started = time.perf_counter()
    row = MapRow(str(source), str(output), worker=_worker_name())
    try:
        model = _worker_model(options.model)
        torch.set_num_threads(_torch_threads(options.torch_threads))
        if not options.force and Path(output).exists():
            skipped = _existing_output_row(Path(source), Path(output), model.card, row,
                                           options.voxel_size, options.predict_options.get("lowpass_cut"),
                                           options.predict_options.get("find_cut", True))
            if skipped is not None:
                skipped.seconds = round(time.perf_counter() - started, 3)
                return skipped
        result, _ = predict_file(
            source, output, samples=options.samples, voxel_size=options.voxel_size, force=options.force,
            model=model, device=options.device, patch_size=options.patch_size, overlap=options.overlap,
            batch_size=options.batch_size, seed=options.seed, progress=False, **options.predict_options)
        row.status = STATUS_DONE
        row.median, row.p5, row.p95 = result.summary.median, result.summary.p5, result.summary.p95
        row.mask_fraction = result.summary.mask_fraction
        row.voxel_size = _voxel_text(result.voxel_size)
        row.cautions = "; ".join(result.cautions)
    except CryoResError as error:
        row.status, row.error = STATUS_FAILED, str(error)
    except MemoryError:
        row.status, row.error = STATUS_FAILED, "out of memory; crop the box or bin the map first"
    except Exception as error:  # a bug, but one map's bug must not stop the batch
        row.status, row.error = STATUS_FAILED, f"unexpected {type(error).__name__}: {error}"
    row.seconds = round(time.perf_counter() - started, 3)
    return row


# ---------------------------------------------------------------- running a batch (client side)

# Per worker process: torch, the model and Python (~0.5 GiB), plus per map the arrays of
# cryores.memory's estimate (16 bytes per input voxel, 24 per model voxel; taken equal here).
WORKER_BASE_BYTES = 512 * 2**20
BYTES_PER_VOXEL = 16 + 24
HEADERS_PEEKED = 64


def local_cluster_size(n_maps: int, workers: int | None = None, cores: int | None = None,
                       bytes_per_map: int = 0, memory: int | None = None) -> tuple[int, int]:
    """(worker processes, torch threads each) with workers x threads <= cores.

    By default one worker per core (the per-map steps outside the network, masking and
    resampling, run on one core, so processes scale better than torch threads), never more
    workers than maps, and no more than ``memory`` (bytes usable, cryores.memory's limit) holds
    with one map of ``bytes_per_map`` in each worker (then the spare cores go to torch threads).
    ``workers`` overrides all that.
    """
    if cores is None:
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:
            cores = os.cpu_count() or 1
    if workers:
        n = workers
    else:
        n = min(cores, n_maps)
        if memory:
            n = min(n, memory // (WORKER_BASE_BYTES + bytes_per_map))
    n = max(1, n)
    return n, max(1, cores // n)


def largest_map_bytes(maps: Sequence[Path]) -> int:
    """Memory one prediction needs for the largest of the first maps, from their headers only."""
    import mrcfile

    largest = 0
    for path in maps[:HEADERS_PEEKED]:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with mrcfile.open(path, header_only=True, permissive=True) as mrc:
                    voxels = int(mrc.header.nx) * int(mrc.header.ny) * int(mrc.header.nz)
        except Exception:  # an unreadable map fails in its own task
            continue
        largest = max(largest, voxels)
    return BYTES_PER_VOXEL * largest


def _require_distributed():
    try:
        import distributed
    except ImportError:
        raise CryoResError("several maps run on Dask, which is not installed: "
                           "pip install 'cryores[distributed]'") from None
    return distributed


def _start_local_cluster(n_workers: int):
    """A LocalCluster of single-threaded worker processes, quiet, without a dashboard."""
    import logging

    from distributed import LocalCluster

    return LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0",
                        silence_logs=logging.ERROR)


def run_batch(
    maps: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike | None = None,
    options: BatchOptions | None = None,
    *,
    scheduler: str | None = None,
    client=None,
    workers: int | None = None,
    progress: bool = False,
    on_row: Callable[[MapRow], None] | None = None,
) -> list[MapRow]:
    """Predict every map on Dask and return one row per map, in input order.

    The cluster is ``client`` if given, else the scheduler at ``scheduler`` (e.g.
    ``tcp://head:8786`` from dask-jobqueue or ``dask scheduler``), else a LocalCluster of
    ``workers`` processes sized so that workers x torch threads <= cores. Bad maps and dead
    workers become failed rows; nothing here raises for one map. ``on_row`` is called as each
    map finishes. Raises CryoResError for problems of the batch as a whole (no maps, clashing
    outputs, missing out_dir, no Dask, unreachable scheduler).
    """
    options = options or BatchOptions()
    pairs = plan_outputs(maps, out_dir)
    if out_dir is not None and not Path(out_dir).is_dir():
        raise CryoResError(f"output folder {out_dir} does not exist")
    if options.model is not None:
        options.model = os.path.abspath(options.model)
    rows = {source: MapRow(str(source), str(output)) for source, output in pairs}
    _require_distributed()
    from distributed import as_completed

    outputs = [output for _, output in pairs]
    sweep_temporary_files(outputs)
    run_id = uuid.uuid4().hex[:8]  # fresh keys: a rerun must look at the disk again, not reuse results
    with _deferred_interrupts() as interrupted:
        try:
            with contextlib.ExitStack() as stack:
                if client is None:
                    client = stack.enter_context(_connect(scheduler, [m for m, _ in pairs], workers, options))
                futures = {client.submit(predict_one, str(source), str(output), options, pure=False,
                                         key=f"cryores-{run_id}-{i}"): source
                           for i, (source, output) in enumerate(pairs)}
                bar = stack.enter_context(_bar(len(futures), progress))
                try:
                    finished = as_completed(futures)
                    while not finished.is_empty() and not interrupted.is_set():
                        batch = finished.next_batch(block=False)
                        if not batch:
                            interrupted.wait(0.05)
                        for future in batch:
                            row = _row_of(future, rows[futures[future]])
                            rows[futures[future]] = row
                            if bar is not None:
                                bar.update(1)
                            if on_row is not None:
                                on_row(row)
                finally:
                    for future in futures:
                        future.cancel()
        finally:  # also after Ctrl-C: the local cluster is closed by now
            sweep_temporary_files(outputs)
    if interrupted.is_set():
        raise KeyboardInterrupt
    return [rows[source] for source, _ in pairs]


def _row_of(future, planned: MapRow) -> MapRow:
    """The task's row, or a failed row when the task itself failed (its worker died on every retry)."""
    try:
        return future.result()
    except Exception as error:  # KilledWorker, CancelledError, a lost scheduler
        planned.status = STATUS_FAILED
        planned.error = f"{type(error).__name__}: {error}".splitlines()[0]
        return planned


@contextlib.contextmanager
def _deferred_interrupts():
    """Turn SIGINT/SIGTERM into an Event while Dask runs, so they never land inside its client code.

    A KeyboardInterrupt raised while the client waits on its event-loop thread leaves that loop in
    a broken state (and prints tornado tracebacks); the batch instead stops at its next poll,
    cancels, closes the cluster and then raises KeyboardInterrupt.
    """
    event = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield event
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, lambda signum, frame: event.set())
    try:
        yield event
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def _connect(scheduler: str | None, maps: Sequence[Path], workers: int | None, options: BatchOptions):
    """A client of the scheduler at ``scheduler``, or of a new LocalCluster sized to this machine."""
    from distributed import Client

    if scheduler is not None:
        try:
            client = Client(scheduler)  # timeout: distributed.comm.timeouts.connect (30 s)
        except (OSError, TimeoutError, ValueError) as error:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise CryoResError(f"cannot reach the Dask scheduler at {scheduler} ({reason})") from None
        with client:
            yield client
        return
    from .memory import memory_limit

    n_workers, threads = local_cluster_size(len(maps), workers, bytes_per_map=largest_map_bytes(maps),
                                            memory=memory_limit())
    if options.torch_threads is None:
        options.torch_threads = threads
    with _start_local_cluster(n_workers) as cluster, Client(cluster) as client:
        yield client


@contextlib.contextmanager
def _bar(total: int, enabled: bool):
    """A tqdm bar on stderr counting maps, or None."""
    if not enabled:
        yield None
        return
    from tqdm import tqdm

    with tqdm(total=total, unit="map", desc="cryores", dynamic_ncols=True) as bar:
        yield bar


def write_summary(rows: Sequence[MapRow], path: str | os.PathLike) -> Path:
    """Write the summary CSV atomically (a report of the run: rewritten by every run)."""
    path = Path(path)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    names = [f.name for f in fields(MapRow)]
    writer.writerow(names)
    for row in rows:
        values = asdict(row)
        writer.writerow(["" if values[n] is None else (f"{values[n]:.4g}" if isinstance(values[n], float)
                                                       and n != "seconds" else values[n]) for n in names])
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(buffer.getvalue())
        os.replace(tmp, path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise CryoResError(f"summary {path}: cannot write ({error.strerror or error})") from None
    return path


def read_summary(path: str | os.PathLike) -> list[dict[str, str]]:
    """The rows of a summary CSV as dictionaries of strings."""
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))


def count_line(rows: Sequence[MapRow]) -> str:
    """``6 maps: 4 done, 1 skipped (output exists), 1 failed``."""
    counts = {status: sum(r.status == status for r in rows)
              for status in (STATUS_DONE, STATUS_SKIPPED, STATUS_FAILED, STATUS_NOT_RUN)}
    parts = [f"{counts[STATUS_DONE]} done"]
    if counts[STATUS_SKIPPED]:
        parts.append(f"{counts[STATUS_SKIPPED]} skipped (output exists)")
    parts.append(f"{counts[STATUS_FAILED]} failed")
    if counts[STATUS_NOT_RUN]:
        parts.append(f"{counts[STATUS_NOT_RUN]} not run")
    return f"{len(rows)} maps: " + ", ".join(parts)
