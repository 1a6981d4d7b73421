"""Does a map's spectrum (its Guinier B, its fall-off, where it ends) tell how far the model reads
the map off as a whole?

The test split's MAE is mostly each map's overall scale on maps without a noise reference
(``docs/evaluation.md``: offset RMS 0.095 there, 0.049 with one). The one input not yet tried
against it was the map's Guinier B beside the band percentiles. Before remaking every training
row for it, this measures whether such map-level spectrum numbers predict the offsets at all.

For each validation structure (never the test split; families ``bfactor`` and ``cliff``,
samples 0 and 1, seed 7, the raw and deposited-style variants, mask given) the card reads the
map; its whole-map offset is the median ln(estimate / truth). Then, apart for maps with and
without a noise reference, the offsets are predicted from map-level numbers by ridge regression
and by 10 nearest neighbours (both 5 folds by structure, so a structure's maps never predict each
other) and the RMS left is printed beside the offsets' RMS about their mean (what a calibration
shift cannot remove). Predictor sets:

* ``reading``: the card's own median reading (ln Å), ln voxel size, deposit or raw, family;
* ``+ spectrum``: also the radially averaged power at 12, 10, 8, 6.5, 5, 4, 3.3 and 2.7 Å (or
  just inside Nyquist) relative to 15 Å, the Guinier B between 15 Å and the content edge and over
  the upper half of that range (``cryores_train.variants.guinier_b``), and ln(content edge /
  voxel size): everything a Guinier-B input would tell the network, and more;
* ``+ processing (oracle)``: instead, what the simulator did to a deposit: ln(low-pass cut / true
  median), its sharpening B, whether it was masked. No method can know these.
* ``+ nuisance (oracle)``: instead, what the simulator drew that is not the answer: the noise
  colour and level, global B, flattening, whether d(x) is radial or patchy, the flexible domain
  and bumps, the cliff family's decay. If a masked map's offset came from a hidden setting (such
  as a noise colour its solvent no longer shows), these would predict it.
* ``+ design (oracle, leaks the truth)``: instead, the design of d(x) itself (core and periphery
  resolution, radial power, the spread of the atoms' extra B). Beside the card's reading these
  tell the truth's scale, so they predict the offset by construction: a ceiling, not a candidate.

If ``+ spectrum`` leaves about what ``reading`` leaves, a Guinier-B input has nothing to add.

Last, how much the offsets are shared between maps of one structure (Pearson over structures):
the raw and deposited-style variants of one sample, and samples 0 and 1 of one family. Near 0,
an offset belongs to the one map (its noise, its design, its processing), not to the structure.

Usage: python benchmarks/offset_predictors.py [CARD] [--structures N] [--save MAPS.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

import cryores
from cryores.model_card import load_model
from cryores.spectral import content_edge, map_spectrum
from cryores_train.evaluate_v3 import STRUCTURES, whole_map_offsets
from cryores_train.rows import EVALUATION_SEED, scored_maps, structures_in_splits
from cryores_train.simulate import radial_power
from cryores_train.variants import guinier_b

SHAPE_AT_A = (12.0, 10.0, 8.0, 6.5, 5.0, 4.0, 3.3, 2.7)
FOLDS = 5


def spectrum_numbers(density: np.ndarray, voxel: float) -> list[float]:
    """The map's radial power at SHAPE_AT_A relative to 15 Å (log10), its Guinier B (hundreds of
    Å²) to the content edge and over that range's upper half, and ln(content edge / voxel)."""
    _, power = radial_power(density, voxel)
    s = np.arange(len(power)) / (density.shape[0] * voxel)
    log_power = np.log10(np.maximum(power, 1e-30))
    nyquist = 0.5 / voxel
    at = [float(np.interp(min(1.0 / d, 0.95 * nyquist), s, log_power)) for d in SHAPE_AT_A]
    reference = float(np.interp(1.0 / 15.0, s, log_power))
    edge = max(content_edge(map_spectrum(density), density.shape, (voxel,) * 3), 2.1 * voxel)
    middle = 2.0 / (1.0 / 15.0 + 1.0 / edge)  # Å: halfway between 1/15 and 1/edge in frequency
    return ([a - reference for a in at] + [guinier_b(density, voxel, edge) / 100.0,
            guinier_b(density, voxel, edge, middle) / 100.0, float(np.log(edge / voxel))])


def processing_numbers(note: dict, true_median: float) -> list[float]:
    """What the simulator did to a deposited-style map (0 for a raw one)."""
    cut = note.get("lowpass")
    return [float(np.log(cut / true_median)) if cut else 0.0, float(note.get("bfactor", 0.0)) / 100.0,
            float(note.get("masked", 0.0)), float(cut is not None)]


def nuisance_numbers(params: dict) -> list[float]:
    """What the simulator drew for a sample besides d(x)'s scale (a setting one family lacks reads 0)."""
    noise = params.get("cliff_noise") or params["noise_factor"]  # cliff maps' level is set by cliff_noise
    return [float(params["noise_colour"]), float(np.log(noise)), float(params["global_b"]) / 100.0,
            float(params["flatten"]), float(params.get("design") == "patchy"), float(params["domain_extra"]),
            float(params["n_bumps"]), float(params.get("cliff_decay", 0.0))]


def design_numbers(params: dict) -> list[float]:
    """The design of d(x): with the card's reading, the truth's scale (so the offset) by construction."""
    b_extra = params.get("b_extra_percentiles") or [0.0, 0.0, 0.0]
    return [float(np.log(params["core_resolution"])), float(np.log(params["periphery_resolution"])),
            float(params["radial_power"])] + [b / 100.0 for b in b_extra]


def fold_of(groups: np.ndarray) -> np.ndarray:
    names = np.unique(groups)
    order = np.random.default_rng(0).permutation(len(names))
    return order[np.searchsorted(names, groups)] % FOLDS


def standardised(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, std = train.mean(axis=0), train.std(axis=0) + 1e-9
    return (train - mean) / std, (test - mean) / std


def ridge_left(x: np.ndarray, y: np.ndarray, folds: np.ndarray, strength: float = 10.0) -> float:
    """RMS of y left by cross-validated ridge regression on x (an intercept, not penalised)."""
    predicted = np.empty_like(y)
    for k in range(FOLDS):
        test = folds == k
        a, b = standardised(x[~test], x[test])
        a, b = np.c_[np.ones(len(a)), a], np.c_[np.ones(len(b)), b]
        penalty = strength * np.diag([0.0] + [1.0] * x.shape[1])
        predicted[test] = b @ np.linalg.solve(a.T @ a + penalty, a.T @ y[~test])
    return float(np.sqrt(np.mean((y - predicted) ** 2)))


def neighbours_left(x: np.ndarray, y: np.ndarray, folds: np.ndarray, k: int = 10) -> float:
    """RMS of y left by the mean of the k nearest training maps (standardised x), cross-validated:
    a check that the ridge's straight lines do not miss a curved relation."""
    predicted = np.empty_like(y)
    for fold in range(FOLDS):
        test = folds == fold
        a, b = standardised(x[~test], x[test])
        distance = ((b[:, None, :] - a[None, :, :]) ** 2).sum(axis=2)
        nearest = np.argsort(distance, axis=1)[:, :k]
        predicted[test] = y[~test][nearest].mean(axis=1)
    return float(np.sqrt(np.mean((y - predicted) ** 2)))


def shared(maps: list[dict], family: str, across: str) -> float:
    """Pearson of the offsets of pairs of one structure's maps of ``family`` that differ only in
    ``across`` ("kind": raw and deposit of one sample; "index": samples 0 and 1 of one kind)."""
    pairs: dict[tuple, list[float]] = {}
    for m in maps:
        if m["family"] == family:
            key = (m["structure"],) + tuple(m[k] for k in ("index", "kind") if k != across)
            pairs.setdefault(key, []).append(m["offset"])
    a, b = np.array([v for v in pairs.values() if len(v) == 2]).T
    return float(np.corrcoef(a, b)[0, 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("card", type=Path, nargs="?", help="model card (default: the shipped one)")
    parser.add_argument("--structures", type=int, help="only the first N validation structures (default: all)")
    parser.add_argument("--save", type=Path, help="also write each map's offset and numbers to this JSON file")
    args = parser.parse_args()
    model = load_model(args.card) if args.card else None
    groups, ids = structures_in_splits(STRUCTURES, ("val",), args.structures)
    maps: list[dict] = []
    for sid in ids:
        for family in ("bfactor", "cliff"):
            for index in (0, 1):
                params, _, voxel, variants = scored_maps(sid, groups[sid], family, index, EVALUATION_SEED)
                for variant in variants:
                    region = variant.label > 0
                    reading = cryores.predict(variant.density, voxel, region, model=model)
                    estimate, truth = reading.resolution[region], variant.label[region]
                    median = float(np.median(truth))
                    maps.append({"structure": sid, "family": family, "index": index, "kind": variant.kind,
                                 "reference": reading.noise_reference,
                                 "offset": float(whole_map_offsets([truth], [estimate])[0]),
                                 "reading": [float(np.median(np.log(estimate))), float(np.log(voxel)),
                                             float(variant.kind == "deposit"), float(family == "cliff")],
                                 "spectrum": spectrum_numbers(variant.density, voxel),
                                 "processing": processing_numbers(variant.note, median),
                                 "nuisance": nuisance_numbers(params), "design": design_numbers(params)})
    if args.save:
        args.save.write_text(json.dumps(maps))
    print(f"{len(ids)} validation structures, bfactor and cliff, samples 0-1, seed {EVALUATION_SEED}, "
          "raw and deposited-style")
    for reference in (True, False):
        chosen = [m for m in maps if m["reference"] == reference]
        y = np.array([m["offset"] for m in chosen])
        folds = fold_of(np.array([m["structure"] for m in chosen]))
        print(f"{'with' if reference else 'without'} a noise reference: {len(chosen)} maps, offset mean "
              f"{y.mean():+.3f}, RMS about it {y.std():.3f}; RMS left (ridge / 10 nearest neighbours):")
        reading = np.array([m["reading"] for m in chosen])
        for name, extra in (("reading", None), ("+ spectrum", "spectrum"), ("+ processing (oracle)", "processing"),
                            ("+ nuisance (oracle)", "nuisance"), ("+ design (oracle, leaks the truth)", "design")):
            x = reading if extra is None else np.c_[reading, np.array([m[extra] for m in chosen])]
            print(f"  {name:36s} {ridge_left(x, y, folds):.3f} / {neighbours_left(x, y, folds):.3f}")
    print("offsets shared within a structure (Pearson over structures, all maps):")
    for family in ("bfactor", "cliff"):
        print(f"  {family}: raw against deposited-style, one sample {shared(maps, family, 'kind'):+.2f}; "
              f"sample 0 against 1, one kind {shared(maps, family, 'index'):+.2f}")


if __name__ == "__main__":
    main()
