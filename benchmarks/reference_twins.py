"""What a noise reference is worth, map by map: one deposit read masked and unmasked.

On the test split the maps whose solvent holds noise read at 0.50 Å and those without a noise
reference (masked, flattened) at 0.69 Å (``docs/evaluation.md``), but those are different maps.
Here each map is its own control. For every structure (``bfactor``, sample 0, seed 7, the maps
``evaluate-v3``'s scoring draws, :func:`cryores_train.rows.scored_maps`) the deposited-style
variant is made twice from one random state (:func:`cryores_train.variants.deposit_variant`):
the same cut and sharpening, once masked or zoned as deposits are, once with its solvent (and its
noise) kept. Samples whose raw map was flattened are skipped, since their unmasked twin has no
noise in its solvent either. Both twins are read with the mask given; per twin the MAE, bias,
the whole-map offsets' mean and RMS (median ln(estimate / truth) per map) and the MAE left once
each map's offset is removed (an oracle); then how far the two twins' offsets go together.

If the masked twins read much worse than their unmasked twins with everything else the same,
the missing noise reference, not the maps or the processing, is what costs the accuracy.

Two more readings of the same deposits show what a user holding the unmasked half maps can do
instead: cryores on the half maps' average (its solvent holds their noise), and half-map local
FSC. Both read the reconstruction's own resolution d, finer than the deposit's low-pass cut X
where d < X, while a deposit's label is max(d, X) (nothing finer than X is left in it). So every
reading is also scored floored at X: like for like. That is how `--lowpass-cut X` reads a map with
a noise reference; a masked one it also scales so that its best-resolved fifth reads X
(:mod:`cryores.cut_scale`), a further row.

Usage: python benchmarks/reference_twins.py [CARD] [--structures N] [--split val|test]
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import numpy as np

import cryores
from cryores.localfsc import local_fsc
from cryores.model_card import load_model
from cryores.spectral_inference import Z90
from cryores_train.evaluate_v3 import STRUCTURES, error_table, interval_coverage, map_offsets, whole_map_offsets
from cryores_train.rows import EVALUATION_SEED, VARIANT_SALT, make_sample, structures_in_splits
from cryores_train.variants import deposit_variant


def twins(structure_id: str, paths: list[Path]) -> tuple[float, list, tuple] | None:
    """(voxel size, [masked twin, unmasked twin], (half map 1, half map 2)) of one structure's
    sample 0, or None when its raw map was flattened (then neither twin's solvent holds noise)."""
    params, arrays = make_sample(structure_id, paths, 0, EVALUATION_SEED, "bfactor")
    if params["flatten"]:
        return None
    voxel = float(params["voxel_size"])
    rng = np.random.default_rng(params["seed"] + VARIANT_SALT)
    other = copy.deepcopy(rng)  # the same draws: cut, sharpening, then masked or not
    mask = arrays["mask"] > 0.5
    masked = deposit_variant(arrays["map"], arrays["truth"], mask, voxel, rng, masked_share=1.0)
    kept = deposit_variant(arrays["map"], arrays["truth"], mask, voxel, other, masked_share=0.0)
    return voxel, [masked, kept], (arrays["half1"], arrays["half2"])


def summary(truths: list[np.ndarray], estimates: list[np.ndarray]) -> str:
    """One line of evaluate-v3's numbers for these maps (error_table, whole_map_offsets, map_offsets)."""
    table = error_table(np.concatenate(truths), np.concatenate(estimates))
    offsets = whole_map_offsets(truths, estimates)
    split = map_offsets(truths, estimates)
    return (f"MAE {table['mae']:.3f} Å, bias {table['bias']:+.3f} Å, "
            f"offsets mean {offsets.mean():+.3f} RMS {split['offset_rms']:.3f}, "
            f"MAE without offsets {split['mae_without_offset']:.3f} Å")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("card", type=Path, nargs="?", help="model card (default: the shipped one)")
    parser.add_argument("--structures", type=int, help="only the first N structures of the split (default: all)")
    parser.add_argument("--split", choices=("val", "test"), default="val")
    args = parser.parse_args()
    model = load_model(args.card) if args.card else None
    groups, ids = structures_in_splits(STRUCTURES, (args.split,), args.structures)
    truths: list[np.ndarray] = []
    cuts: list[np.float32] = []
    readings: dict[str, list[np.ndarray]] = {"masked": [], "kept": [], "average": [], "fsc": [], "masked_cut": []}
    sigmas: dict[str, list[np.ndarray]] = {"masked": [], "masked_cut": []}  # the uncertainty, as read and scaled
    skipped = 0
    for sid in ids:
        made = twins(sid, groups[sid])
        if made is None:
            skipped += 1
            continue
        voxel, (masked, kept), (half1, half2) = made
        region = masked.label > 0
        read = [cryores.predict(v.density, voxel, region, model=model) for v in (masked, kept)]
        if read[0].noise_reference or not read[1].noise_reference:
            skipped += 1  # not a pair that differs by the reference alone
            continue
        truths.append(masked.label[region])
        readings["masked"].append(read[0].resolution[region])
        readings["kept"].append(read[1].resolution[region])
        readings["average"].append(cryores.predict((half1 + half2) / 2, voxel, region, model=model).resolution[region])
        readings["fsc"].append(local_fsc(half1, half2, voxel, region).resolution[region])
        cuts.append(np.float32(masked.note["lowpass"]))  # the deposit's low-pass: nothing finer is left in it
        given = cryores.predict(masked.density, voxel, region, model=model, lowpass_cut=float(masked.note["lowpass"]))
        readings["masked_cut"].append(given.resolution[region])
        sigmas["masked"].append(read[0].uncertainty[region])
        sigmas["masked_cut"].append(given.uncertainty[region])
    print(f"{len(ids)} {args.split} structures, bfactor sample 0, seed {EVALUATION_SEED}: {len(truths)} deposits "
          f"read masked and unmasked ({skipped} skipped: flattened, or the twins' references not as meant)")
    names = {"kept": "unmasked (solvent noise kept, a noise reference)",
             "masked": "masked or zoned (no noise reference)",
             "average": "the unmasked half maps' average", "fsc": "half-map local FSC"}
    for floored in (False, True):
        print("  floored at the deposit's cut:" if floored else "  as read:")
        for key, name in names.items():
            values = [np.maximum(v, c) for v, c in zip(readings[key], cuts)] if floored else readings[key]
            print(f"    {name + ':':52s} {summary(truths, values)}")
    print(f"    {'masked, read with --lowpass-cut (scaled to the cut):':52s} "
          f"{summary(truths, readings['masked_cut'])}")
    for key, name in (("masked", "masked, as read"), ("masked_cut", "masked, read with --lowpass-cut")):
        held = interval_coverage(truths, readings[key], sigmas[key])["coverage_90"]
        print(f"  90 % interval (±{Z90:.3f} σ), {name}: holds {100 * held:.1f} % of the voxels")
    offsets = {k: whole_map_offsets(truths, v) for k, v in readings.items() if k in ("masked", "kept")}
    print(f"  twins' offsets: Pearson {np.corrcoef(offsets['kept'], offsets['masked'])[0, 1]:+.2f}, "
          f"RMS of their difference {np.sqrt(np.mean((offsets['masked'] - offsets['kept']) ** 2)):.3f}")


if __name__ == "__main__":
    main()
