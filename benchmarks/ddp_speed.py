"""Training steps per second of cryores-v3 under torchrun: 1 rank against 2, same global batch.

Sizings are RANKSxTORCH_THREADS. The default compares 1x1 (one process on one core, the
baseline), 2x1 (DDP, a second rank on the second core: the 1 -> 2 rank speed-up) and 1x2 (one
process using both cores through torch threads: ranks against threads at equal cores). Every
sizing trains the same global batch (``global_batch_size``) on the same synthetic rows with the
shipped architecture, through the real ``torchrun --standalone -m cryores_train fit CONFIG``,
side by side in one run, in the order A B C C B A so that drift of a shared machine's load hits
them alike.

The clock is the trainer's own loop: each rank timestamps every step (at the learning-rate
update that starts it), and the rate is taken over the steps after ``--warmup``, so process
start-up, loading rows, the final validation and the export are excluded. Process CPU seconds
per step (all ranks together) are printed too: on a machine shared with other work, wall time
measures the share of the cores we got, CPU time what a step costs.

    python benchmarks/ddp_speed.py [--rows 100000] [--batch 2048] [--steps 400] [--configs 1x1 2x1 1x2]

Not a test: numbers, not assertions.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def make_rows(folder: Path, rows: int, files: int = 10) -> None:
    import numpy as np

    from cryores.spectral import N_FEATURES

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(files + 1):
        rng = np.random.default_rng(i)
        n = rows // files
        x = rng.normal(size=(n, N_FEATURES)).astype(np.float16)
        y = np.exp(1.5 + 0.3 * x[:, :3].astype(np.float32).sum(axis=1)).clip(1.0, 30.0).astype(np.float32)
        np.savez_compressed(folder / f"S{i:02d}_000.npz", x=x, y=y, bound=rng.random(n) < 0.2,
                            kind=np.zeros(n, np.int8), voxel=1.0, structure=f"S{i:02d}",
                            split="val" if i == files else "train")


def worker(config_path: str, timings: str) -> None:
    """Run under torchrun: the real trainer, with every step's start timestamped."""
    from cryores_train import fit_spectral

    stamps: list[tuple[float, float]] = []
    learning_rate = fit_spectral._learning_rate

    def stamped(step, config):
        stamps.append((time.perf_counter(), time.process_time()))
        return learning_rate(step, config)

    fit_spectral._learning_rate = stamped
    config = json.loads(Path(config_path).read_text())
    fit_spectral.train(config, progress=False)
    Path(f"{timings}.{os.environ.get('RANK', '0')}.json").write_text(json.dumps(stamps))


def run(sizing: str, rows: Path, work: Path, args) -> dict:
    ranks, threads = (int(v) for v in sizing.split("x"))
    output = Path(tempfile.mkdtemp(dir=work, prefix=f"run{sizing}_"))
    config = {"name": "bench", "kind": "spectral", "dataset": str(rows), "output": str(output), "seed": 0,
              "architecture": {"hidden": [96, 96], "dropout": 0.0}, "batch_size": args.batch // ranks,
              "global_batch_size": args.batch, "steps": args.steps, "learning_rate": 0.002,
              "weight_decay": 0.0001, "warmup_steps": 20, "validate_every": args.steps,
              "checkpoint_every": args.steps, "resolution_range": [1.0, 30.0]}
    config_path = output / "config_in.json"
    config_path.write_text(json.dumps(config))
    timings = output / "timings"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}",
               __file__, "--worker", str(config_path), str(timings)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    per_rank = [json.loads(Path(f"{timings}.{r}.json").read_text()) for r in range(ranks)]
    w, last = args.warmup, args.steps - 1
    wall = per_rank[0][last][0] - per_rank[0][w][0]
    cpu = sum(s[last][1] - s[w][1] for s in per_rank)
    return {"steps_per_s": (last - w) / wall, "cpu_ms_per_step": 1000 * cpu / (last - w)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=2048, help="global batch (rows per step, all ranks)")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--warmup", type=int, default=50, help="steps not timed")
    parser.add_argument("--configs", nargs="+", default=["1x1", "2x1", "1x2"])
    parser.add_argument("--rounds", type=int, default=1, help="each round runs A B C C B A")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(*args.worker)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        make_rows(work / "rows", args.rows)
        results: dict[str, list[dict]] = {c: [] for c in args.configs}
        order = (args.configs + args.configs[::-1]) * args.rounds
        for sizing in order:
            result = run(sizing, work / "rows", work, args)
            results[sizing].append(result)
            print(f"  {sizing}: {result['steps_per_s']:.1f} steps/s, {result['cpu_ms_per_step']:.1f} CPU ms/step",
                  flush=True)
    base = statistics.median(r["steps_per_s"] for r in results[args.configs[0]])
    print(f"\n{args.rows} rows, global batch {args.batch}, SpectralNet [96, 96], {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}")
    print("| ranks x threads | steps/s (median) | rows/s | speed-up | CPU ms/step |")
    print("|---|---|---|---|---|")
    for sizing, rs in results.items():
        rate = statistics.median(r["steps_per_s"] for r in rs)
        cpu = statistics.median(r["cpu_ms_per_step"] for r in rs)
        print(f"| {sizing} | {rate:.1f} | {rate * args.batch:,.0f} | {rate / base:.2f}x | {cpu:.1f} |")


if __name__ == "__main__":
    main()
