"""Where coarse regions read too fine: error by the gap to the finest neighbour, cards side by side.

A coarse voxel next to much finer ones can read its neighbours' fine-band power as its own. For
each card and each validation structure (never the test split; seed 7, index 0, which no
training row uses), both families (``bfactor`` trained on, ``lowpass`` held out), raw and
deposited-style, mask given, this prints:

* MAE and bias over all labelled voxels;
* the bias of coarse voxels (true 8-10 Å and 12-14 Å) split by how much finer the finest true
  resolution within +-8 Å of them is (0-1 / 1-3 / 3-6 Å).

Every card reads the same maps in one run, so the columns compare.

Usage: python benchmarks/neighbour_leak.py CARD [CARD ...] [--structures 20]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy import ndimage

import cryores
from cryores_train.evaluate_v3 import validation_side_by_side
from cryores_train.rows import EVALUATION_SEED, FAMILIES, scored_maps

GAPS = ((0.0, 1.0), (1.0, 3.0), (3.0, 6.0))
COARSE = ((8.0, 10.0), (12.0, 14.0))
NEIGHBOURHOOD_A = 8.0


def finest_neighbour_gap(label: np.ndarray, voxel: float) -> np.ndarray:
    """label minus the finest label within +-NEIGHBOURHOOD_A (a cube), in Å; 0 outside the label."""
    size = 2 * int(round(NEIGHBOURHOOD_A / voxel)) + 1
    finest = ndimage.minimum_filter(np.where(label > 0, label, np.inf), size=size)
    return np.where(label > 0, label - finest, 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cards", type=Path, nargs="+")
    parser.add_argument("--structures", type=int, default=20)
    args = parser.parse_args()
    groups, ids, models, labels = validation_side_by_side(args.cards, args.structures)
    # per card, family: lists of (truth, estimate, gap) arrays
    pooled = {(c, f): [] for c in range(len(models)) for f in FAMILIES}
    for sid in ids:
        for family in FAMILIES:
            _, _, voxel, variants = scored_maps(sid, groups[sid], family, 0, EVALUATION_SEED)
            for variant in variants:
                region = variant.label > 0
                gap = finest_neighbour_gap(variant.label, voxel)[region]
                for c, model in enumerate(models):
                    result = cryores.predict(variant.density, voxel, region, model=model)
                    pooled[c, family].append((variant.label[region], result.resolution[region], gap))
    print(f"{len(ids)} validation structures, seed {EVALUATION_SEED} index 0, raw + deposited-style, mask given")
    header = ["card", "family", "MAE", "bias"] + [f"{lo:g}-{hi:g} A gap {g0:g}-{g1:g}"
                                                   for lo, hi in COARSE for g0, g1 in GAPS]
    print(" | ".join(header))
    for (c, family), maps in pooled.items():
        truth, estimate, gap = (np.concatenate(column) for column in zip(*maps))
        error = estimate - truth
        cells = [labels[c], family,
                 f"{np.abs(error).mean():.3f}", f"{error.mean():+.3f}"]
        for lo, hi in COARSE:
            for g0, g1 in GAPS:
                where = (truth >= lo) & (truth < hi) & (gap >= g0) & (gap < g1)
                cells.append(f"{error[where].mean():+.2f} ({where.sum()})" if where.any() else "-")
        print(" | ".join(cells))


if __name__ == "__main__":
    main()
