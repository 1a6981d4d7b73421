"""Maps per minute of ``cryores predict MAP MAP ...`` on a local Dask cluster, 1 worker against 2.

Sizings are WORKERSxTORCH_THREADS. The default compares 1x1 (one worker on one core, the
baseline), 2x1 (a second worker on the second core: the 1 -> 2 worker speed-up) and 1x2 (one
worker using both cores through torch threads: processes against threads at equal cores). All
run the same maps, side by side in one run, in the order A B C C B A so that slow drift of a
shared machine's load hits them alike. Each run writes into a fresh folder (no skipping). The
cluster is started before the clock starts (its start-up is printed apart); the clock covers
loading the model on each worker, reading, predicting and writing. The workers' CPU seconds
per map are printed too: on a machine shared with other work, wall time measures the share of
the cores we got, CPU time what a map costs.

    python benchmarks/batch_throughput.py [--maps 8] [--size 128] [--configs 1x1 2x1 1x2] [--rounds 2]

Runs the installed model when there is one, else a randomly initialised network of the default
architecture (speed does not depend on the weights). Not a test: numbers, not assertions.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def make_maps(folder: Path, n_maps: int, size: int) -> list[Path]:
    import mrcfile
    from predict_speed import blob_map

    paths = []
    for i in range(n_maps):
        path = folder / f"map{i:03d}.mrc"
        with mrcfile.new(path) as mrc:
            mrc.set_data(blob_map(size, seed=i))
            mrc.voxel_size = 1.0
        paths.append(path)
    return paths


def model_card(folder: Path) -> str | None:
    """None for the installed model; else a card for a random network of the default architecture."""
    from cryores.model_card import installed_card_path, save_model
    from cryores.unet import UNet3D

    if installed_card_path() is not None:
        return None
    card = {"name": "random-benchmark", "voxel_size": 1.0, "patch_size": 96, "overlap": 1 / 3,
            "normalisation": "masked-zscore", "target": {"transform": "log", "mean": 1.6, "std": 0.3},
            "resolution_range": [1.0, 20.0], "training": {"note": "random weights, for timing only"}}
    return str(save_model(UNet3D((8, 16, 32, 64), dropout=0.1, output_stride=4), card, folder / "card.json"))


def cpu_seconds() -> float:
    """User + system CPU seconds of this process (run on each worker)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def one_run(maps: list[Path], workers: int, threads: int, card: str | None, folder: Path) -> dict:
    import logging

    from distributed import Client, LocalCluster

    from cryores.batch import BatchOptions, run_batch

    started = time.perf_counter()
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0",
                      silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        startup = time.perf_counter() - started
        out = Path(tempfile.mkdtemp(dir=folder))
        cpu_before = client.run(cpu_seconds)
        started = time.perf_counter()
        rows = run_batch(maps, out, BatchOptions(model=card, torch_threads=threads), client=client)
        wall = time.perf_counter() - started
        cpu = sum(client.run(cpu_seconds).values()) - sum(cpu_before.values())
    failed = [r for r in rows if r.status != "done"]
    if failed:
        raise SystemExit(f"benchmark: {len(failed)} maps failed, first: {failed[0].error}")
    per_map = statistics.median(r.seconds for r in rows)
    return {"workers": workers, "threads": threads, "startup": startup, "wall": wall,
            "maps_per_min": 60 * len(maps) / wall, "per_map": per_map,
            "cpu_per_map": cpu / len(maps)}


def parse_config(text: str) -> tuple[int, int]:
    workers, threads = (int(v) for v in text.lower().split("x"))
    return workers, threads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--maps", type=int, default=8)
    parser.add_argument("--size", type=int, default=128, help="map side in voxels (1 Å)")
    parser.add_argument("--configs", nargs="+", default=["1x1", "2x1", "1x2"], help="WORKERSxTORCH_THREADS")
    parser.add_argument("--rounds", type=int, default=2, help="A B C C B A ... rounds over the sizings")
    args = parser.parse_args()
    import torch

    import cryores

    configs = [parse_config(c) for c in args.configs]
    cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        maps = make_maps(folder, args.maps, args.size)
        card = model_card(folder)
        order = []
        for r in range(args.rounds):
            order += configs if r % 2 == 0 else list(reversed(configs))
        results: dict[tuple[int, int], list[dict]] = {c: [] for c in configs}
        for workers, threads in order:
            result = one_run(maps, workers, threads, card, folder)
            results[(workers, threads)].append(result)
            print(f"  run: {workers} worker(s) x {threads} torch thread(s): {result['wall']:.1f} s, "
                  f"{result['maps_per_min']:.1f} maps/min (cluster start {result['startup']:.1f} s)", flush=True)
    model = "installed " + cryores.load_model().card["name"] if card is None else "random default architecture"
    with open("/proc/loadavg") as stream:
        load = stream.read().split()[0]
    print(f"\ncryores {cryores.__version__}, torch {torch.__version__}, {cores} cores (load {load} at the end), "
          f"model {model}; {args.maps} maps of {args.size}³ at 1 Å; median of {args.rounds} runs each")
    print(f"{'workers':>8} {'torch thr':>9} {'wall s':>7} {'maps/min':>9} {'s/map on worker':>16} "
          f"{'cluster start s':>16} {'vs first':>9} {'worker CPU s/map':>17}")
    base = statistics.median(r["maps_per_min"] for r in results[configs[0]])
    for config in configs:
        runs = results[config]
        rate = statistics.median(r["maps_per_min"] for r in runs)
        print(f"{config[0]:>8} {config[1]:>9} {statistics.median(r['wall'] for r in runs):>7.1f} "
              f"{rate:>9.1f} {statistics.median(r['per_map'] for r in runs):>16.2f} "
              f"{statistics.median(r['startup'] for r in runs):>16.1f} {rate / base:>8.2f}x "
              f"{statistics.median(r['cpu_per_map'] for r in runs):>17.2f}")


if __name__ == "__main__":
    main()
