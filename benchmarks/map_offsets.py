"""How much of the error is a whole-map scale: cards side by side, their ensemble, and local FSC.

For each card and each validation structure (never the test split; seed 7, index 0, which no
training row uses), both families (``bfactor`` trained on, ``lowpass`` held out), raw and
deposited-style maps, mask given, this prints per family, kind of map and whether the map's
solvent holds a noise reference (as the first card reads it):

* each card's MAE, the mean and RMS of its whole-map offsets (median ln(estimate / truth) per
  map; the mean is what a calibration shift moves, the RMS about it what it cannot) and its MAE
  once each map's offset is removed (an oracle: it uses the truth;
  ``cryores_train.evaluate_v3.map_offsets``);
* the geometric mean of all the cards' readings (an ensemble of the fits), scored the same way;
* how alike the cards' offsets are (Pearson over maps, each card against the first). Offsets
  that agree between independent fits belong to the maps, not to one fit, so more fits or a
  larger ensemble will not remove them;
* on raw maps, half-map local FSC: its offset RMS about its own mean offset (its scatter from
  map to map once its constant bias is taken away) and the Pearson of its offsets with the
  first card's.

Every card reads the same maps in one run, so the columns compare.

Usage: python benchmarks/map_offsets.py CARD [CARD ...] [--structures 20]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import cryores
from cryores.localfsc import local_fsc
from cryores_train.evaluate_v3 import map_offsets, validation_side_by_side, whole_map_offsets
from cryores_train.rows import EVALUATION_SEED, FAMILIES, scored_maps


def line(name: str, truths: list[np.ndarray], estimates: list[np.ndarray]) -> str:
    error = np.abs(np.concatenate(estimates) - np.concatenate(truths)).mean()
    split = map_offsets(truths, estimates)
    mean = whole_map_offsets(truths, estimates).mean()
    return (f"  {name}: MAE {error:.3f}, offset mean {mean:+.3f}, RMS {split['offset_rms']:.3f}, "
            f"without offset {split['mae_without_offset']:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cards", type=Path, nargs="+")
    parser.add_argument("--structures", type=int, default=20)
    args = parser.parse_args()
    groups, ids, models, labels = validation_side_by_side(args.cards, args.structures)
    # (family, kind, reference) -> truths, per-card estimates, local FSC estimates (raw only)
    maps: dict[tuple[str, str, str], dict] = {}
    for sid in ids:
        for family in FAMILIES:
            _, arrays, voxel, variants = scored_maps(sid, groups[sid], family, 0, EVALUATION_SEED)
            for variant in variants:
                region = variant.label > 0
                readings = [cryores.predict(variant.density, voxel, region, model=model) for model in models]
                reference = "with" if readings[0].noise_reference else "without"
                entry = maps.setdefault((family, variant.kind, reference),
                                        {"truth": [], "cards": [[] for _ in models], "fsc": []})
                entry["truth"].append(variant.label[region])
                for c, reading in enumerate(readings):
                    entry["cards"][c].append(reading.resolution[region])
                if variant.kind == "raw":
                    entry["fsc"].append(local_fsc(arrays["half1"], arrays["half2"], voxel, region).resolution[region])
    print(f"{len(ids)} validation structures, seed {EVALUATION_SEED} index 0, mask given")
    for (family, kind, reference), entry in sorted(maps.items()):
        truths = entry["truth"]
        print(f"{family}, {kind}, {reference} a noise reference ({len(truths)} maps)")
        for c, estimates in enumerate(entry["cards"]):
            print(line(labels[c], truths, estimates))
        first = whole_map_offsets(truths, entry["cards"][0])
        if len(models) > 1:
            ensemble = [np.exp(np.mean(np.log(np.stack(per_map)), axis=0)) for per_map in zip(*entry["cards"])]
            print(line(f"geometric mean of the {len(models)} cards", truths, ensemble))
            alike = [np.corrcoef(first, whole_map_offsets(truths, e))[0, 1] for e in entry["cards"][1:]]
            print("  offsets' Pearson with the first card's: " + ", ".join(f"{r:.2f}" for r in alike))
        if entry["fsc"]:
            fsc = whole_map_offsets(truths, entry["fsc"])
            print(f"  local FSC (half maps): mean offset {fsc.mean():+.3f}, RMS about it {fsc.std():.3f}, "
                  f"Pearson with the first card's offsets {np.corrcoef(fsc, first)[0, 1]:.2f}")


if __name__ == "__main__":
    main()
