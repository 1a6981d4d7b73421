"""Is the simulator physically true? Local FSC on simulated half maps against the designed truth.

Simulates (or reuses) samples from BM5 complexes, labels them with half-map local FSC
(``cryores-train label --method localfsc``) and prints, in markdown: per-map MAE, bias and
Pearson r, then MAE / bias / correlation by designed-resolution bin over all masked voxels.

    python benchmarks/validate_simulator.py ../shared/data/structures/bm5 --out /tmp/validation --limit 30
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from cryores.mrc_io import read_map
from cryores_train.label import finished_samples, label_sample
from cryores_train.simulate import run_simulation

BINS = [(2, 3), (3, 4), (4, 5), (5, 6), (6, 8), (8, 10), (10, 12.01)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("structures", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--window", type=float, default=30.0)
    args = parser.parse_args()

    start = time.perf_counter()
    run_simulation(args.structures, args.out, limit=args.limit, seed=args.seed, progress=False)
    simulated = time.perf_counter() - start
    truths, estimates, rows, seconds = [], [], [], []
    for folder in finished_samples(args.out):
        label_sample(folder, "localfsc", window=args.window)
        seconds.append(json.loads((folder / "labels.json").read_text())["localfsc"]["seconds"])
        params = json.loads((folder / "params.json").read_text())
        mask = read_map(folder / "mask.mrc", voxel_size=1.0).data > 0.5
        truth = read_map(folder / "truth.mrc").data[mask]
        estimate = read_map(folder / "localfsc.mrc").data[mask]
        error = estimate - truth
        rows.append((folder.name, params["voxel_size"], params["box"], np.median(truth), np.abs(error).mean(),
                     error.mean(), np.corrcoef(truth, estimate)[0, 1]))
        truths.append(truth)
        estimates.append(estimate)
    truth, estimate = np.concatenate(truths), np.concatenate(estimates)

    print(f"{len(rows)} samples, simulated in {simulated:.0f} s; local FSC ({args.window:g} Å window) "
          f"median {np.median(seconds):.1f} s per map\n")
    print("| sample | voxel Å | box | median truth Å | MAE Å | bias Å | Pearson r |")
    print("|---|---|---|---|---|---|---|")
    for name, voxel, box, median, mae, bias, r in rows:
        print(f"| {name} | {voxel:.2f} | {box} | {median:.2f} | {mae:.2f} | {bias:+.2f} | {r:.2f} |")
    print("\n| designed resolution | voxels | MAE Å | bias Å | Pearson r |")
    print("|---|---|---|---|---|")
    for lo, hi in BINS:
        sel = (truth >= lo) & (truth < hi)
        if sel.sum() > 10:
            r = np.corrcoef(truth[sel], estimate[sel])[0, 1]
            print(f"| {lo}-{hi:g} Å | {sel.sum()} | {np.abs(estimate[sel] - truth[sel]).mean():.2f} | "
                  f"{(estimate[sel] - truth[sel]).mean():+.2f} | {r:.2f} |")
    per_map_r = [row[-1] for row in rows]
    print(f"| all | {truth.size} | {np.abs(estimate - truth).mean():.2f} | {(estimate - truth).mean():+.2f} | "
          f"{np.corrcoef(truth, estimate)[0, 1]:.2f} |")
    print(f"\nper-map Pearson r: median {np.median(per_map_r):.2f}, "
          f"5-95 % {np.percentile(per_map_r, 5):.2f}-{np.percentile(per_map_r, 95):.2f}")


if __name__ == "__main__":
    main()
