"""Does a card read information or the spectrum's shape? Error by SNR fall-off, cards side by side.

The ``bfactor`` simulator sets every atom's B so that the local SNR is 1/6 (FSC 0.143) exactly at
the designed resolution d; the *steepness* S says how fast the SNR falls on the way there (the
extra B is at least S d^2, ``cryores_train.simulate``). Local FSC finds d at any S
(``tests/training/test_simulate.py``), and so should a model that reads information. A model that
learned one fall-off reads the shape instead: steeper maps look "blurrier", shallower ones
"noisier", and both read off even though d is the same.

For each card, each S and each validation structure (never the test split; seed 7, index 0, which
no training row uses), raw and deposited-style, mask given, this prints the MAE and the
whole-map offset (median estimate minus median truth; mean signed and mean absolute over maps).
Every card reads the same maps in one run, so the rows compare.

Usage: python benchmarks/steepness.py CARD [CARD ...] [--structures 12] [--steepness 5,8,12,20]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import cryores
from cryores_train.evaluate_v3 import validation_side_by_side
from cryores_train.rows import EVALUATION_SEED, sample_parameters, simulate_sample
from cryores_train.variants import make_variants


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cards", type=Path, nargs="+")
    parser.add_argument("--structures", type=int, default=12)
    parser.add_argument("--steepness", default="5,8,12,20", help="comma-separated S values")
    args = parser.parse_args()
    groups, ids, models, labels = validation_side_by_side(args.cards, args.structures)
    print(f"{len(ids)} validation structures, seed {EVALUATION_SEED} index 0, mask given; "
          "offset = median estimate - median truth")
    print("card | S | kind | maps | MAE | mean offset | mean |offset|")
    for steepness in (float(s) for s in args.steepness.split(",")):
        rows: dict = {(c, kind): [] for c in range(len(models)) for kind in ("raw", "deposit")}
        for sid in ids:
            params = sample_parameters(sid, 0, EVALUATION_SEED, "bfactor")
            params["steepness"] = steepness  # the same map but for its fall-off
            arrays = simulate_sample(params, groups[sid])
            voxel = float(params["voxel_size"])
            rng = np.random.default_rng(params["seed"] + 5)
            for variant in make_variants(arrays["map"], arrays["truth"], arrays["mask"] > 0.5, voxel, rng)[:2]:
                region = variant.label > 0
                truth = variant.label[region]
                for c, model in enumerate(models):
                    estimate = cryores.predict(variant.density, voxel, region, model=model).resolution[region]
                    rows[c, variant.kind].append((np.abs(estimate - truth).mean(),
                                                  float(np.median(estimate) - np.median(truth))))
        for (c, kind), values in rows.items():
            mae, offset = np.array(values).T
            print(f"{labels[c]} | {steepness:g} | {kind} | {len(mae)} | "
                  f"{mae.mean():.2f} | {offset.mean():+.2f} | {np.abs(offset).mean():.2f}", flush=True)


if __name__ == "__main__":
    main()
