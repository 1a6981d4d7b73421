"""How often cryores finds a masked map's low-pass cut in its spectrum, how close, and what it is worth.

Where a user gives a map's low-pass cut (``--lowpass-cut``), a map without a noise reference is
scaled so that its best-resolved fifth reads it (:mod:`cryores.cut_scale`). Where they give none,
``cryores.predict`` looks for it in the map's spectrum (:mod:`cryores.cut_finding`). An earlier
probe had found no cut in masked deposits, looking for a 2-decade drop within 3 shells; the
finder looks for the knee where the spectrum's slope turns down.

For each validation structure (never the test split; families ``bfactor`` and ``cliff``, samples
0 and 1, seed 7, the raw and deposited-style variants, mask given) it prints, for knees falling by
at least 4, 6 (the finder's :data:`~cryores.cut_finding.MIN_DROP`) and 8 decades per unit ln f,
how many masked and unmasked deposits get a cut and how close it is to their true one, and how
many raw maps (which have none) get one. Then each card reads every map twice: without the search
(``find_cut=False``) and as ``cryores.predict`` reads it by default; as a ceiling, maps without a
noise reference are also read as if each deposit's true cut had been given. Last, the real maps
of the evaluation: the cut found beside the one their authors reported, and the medians.

Usage: python benchmarks/cut_detection.py [CARD ...] [--structures N]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import cryores
from cryores.cut_finding import MIN_DROP, NYQUIST_MARGIN, find_lowpass_cut, shell_power, spectrum_knee
from cryores.cut_scale import scale_for_cut
from cryores.model_card import load_model
from cryores.mrc_io import read_map
from cryores_train.evaluate_v3 import REAL_MAPS, STRUCTURES, card_labels
from cryores_train.rows import EVALUATION_SEED, scored_maps, structures_in_splits

DROPS = (4.0, MIN_DROP, 8.0)
DEFAULT_CARDS = [Path("core/cryores/models/default.json")]


def knee_and_cut(density: np.ndarray, voxel: float) -> tuple[float, float | None, float | None]:
    """(slope change at the knee, the knee's Å, the cut the finder returns): the knee whatever
    its drop, so that other thresholds can be tried."""
    frequency, power = shell_power(density, (voxel,) * 3)
    knee, change = spectrum_knee(frequency, power, 2.0 * voxel)
    return change, (None if knee is None else float(1.0 / frequency[knee])), find_lowpass_cut(density, (voxel,) * 3)


def with_true_cut(reading: np.ndarray, cut: float | None, voxel: float, ceiling: float) -> np.ndarray:
    """A reading without a noise reference as ``cryores.predict`` returns it given ``cut``: scaled so
    that its best-resolved fifth reads it (:func:`cryores.cut_scale.scale_for_cut`), floored, clipped."""
    if cut is None:
        return reading
    factor, _ = scale_for_cut(reading, np.ones(reading.shape, bool), cut, (voxel,) * 3)
    return np.clip(reading * np.float32(factor or 1.0), max(2.0 * voxel, cut), ceiling)


def detection_table(maps: list[dict]) -> None:
    print("| knee drop ≥ | raw maps with a cut | masked deposits with a cut | within 5 % | found / true (range) "
          "| unmasked deposits with a cut | within 5 % |")
    print("|---|---|---|---|---|---|---|")
    n_raw = sum(m["kind"] == "raw" for m in maps)
    for drop in DROPS:
        # the knee's Å for other thresholds; at the finder's own, the cut it returns
        taken = [(m, m["cut_found"] if drop == MIN_DROP else m["knee"]) for m in maps
                 if m["change"] <= -drop and (m["cut_found"] if drop == MIN_DROP else m["knee"]) is not None
                 and (drop == MIN_DROP or m["knee"] >= NYQUIST_MARGIN * 2.0 * m["voxel"])]
        raw = sum(m["kind"] == "raw" for m, _ in taken)
        cells = []
        for masked in (True, False):
            group = [m for m in maps if m["kind"] == "deposit" and m["masked"] == masked]
            ratios = np.array([x / m["cut"] for m, x in taken if m["kind"] == "deposit" and m["masked"] == masked])
            near = int(np.sum(np.abs(ratios - 1.0) <= 0.05))
            spread = f"{ratios.min():.2f}–{ratios.max():.2f}" if ratios.size else "–"
            cells.append((f"{ratios.size} / {len(group)}", str(near), spread))
        mark = " (the finder)" if drop == MIN_DROP else " (knee)"
        print(f"| {drop:g}{mark} | {raw} / {n_raw} | {cells[0][0]} | {cells[0][1]} | {cells[0][2]} "
              f"| {cells[1][0]} | {cells[1][1]} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cards", nargs="*", type=Path, default=DEFAULT_CARDS)
    parser.add_argument("--structures", type=int, default=None, help="first N validation structures (default all)")
    args = parser.parse_args()
    models = [load_model(card) for card in args.cards]
    labels = card_labels(args.cards)
    groups, ids = structures_in_splits(STRUCTURES, ("val",), args.structures)

    maps = []
    for family in ("bfactor", "cliff"):
        for index in (0, 1):
            for sid in ids:
                _, _, voxel, variants = scored_maps(sid, groups[sid], family, index, EVALUATION_SEED)
                for variant in variants:
                    region = variant.label > 0
                    change, knee, found = knee_and_cut(variant.density, voxel)
                    readings = []  # per card: (without the search, as predict reads it, noise reference)
                    for model in models:
                        plain = cryores.predict(variant.density, voxel, region, model=model, find_cut=False)
                        default = cryores.predict(variant.density, voxel, region, model=model)
                        readings.append((plain.resolution[region], default.resolution[region],
                                         bool(plain.noise_reference), default.found_cut is not None))
                    maps.append({"kind": variant.kind, "cut": variant.note.get("lowpass"),
                                 "masked": bool(variant.note.get("masked")), "voxel": voxel, "change": change,
                                 "knee": knee, "cut_found": found, "truth": variant.label[region],
                                 "readings": readings})
                print(f"{family} {index} {sid}", flush=True)

    print(f"\n{len(maps)} validation maps of {len(ids)} structures\n")
    detection_table(maps)

    print("\nMAE (Å) read by each card: without the search, as `cryores predict` reads by default (the cut "
          "found sets the scale of maps without a noise reference), and the ceiling (every such deposit given "
          "its true cut):\n")
    print("| card | maps | without the search | by default | true cuts | maps without a noise reference: "
          "without | by default | true cuts | of them, read with a found cut |")
    print("|---|---|---|---|---|---|---|---|---|")
    for c, label in enumerate(labels):
        errors = {"plain": [], "default": [], "true": []}
        no_ref = {"plain": [], "default": [], "true": []}
        used = 0
        for m in maps:
            plain, default, has_reference, found = m["readings"][c]
            true_cut = m["cut"] if (m["kind"] == "deposit" and not has_reference) else None
            ceiling = with_true_cut(plain, true_cut, m["voxel"], models[c].max_resolution)
            used += found
            for name, reading in (("plain", plain), ("default", default), ("true", ceiling)):
                e = np.abs(reading - m["truth"])
                errors[name].append(e)
                if not has_reference:
                    no_ref[name].append(e)
        mae = {k: float(np.mean(np.concatenate(v))) for k, v in errors.items()}
        mae_n = {k: float(np.mean(np.concatenate(v))) for k, v in no_ref.items()}
        print(f"| {label} | {len(maps)} | {mae['plain']:.3f} | {mae['default']:.3f} | {mae['true']:.3f} "
              f"| {mae_n['plain']:.3f} | {mae_n['default']:.3f} | {mae_n['true']:.3f} "
              f"| {used} of {len(no_ref['plain'])} |")

    print("\nReal maps (automatic mask), median Å without the search / by default:\n")
    print("| map | Å/px | reported Å | knee Å (drop) | cut found | " +
          " | ".join(f"{label}" for label in labels) + " |")
    print("|---|---|---|---|---|" + "---|" * len(labels))
    for name, path, reported, _ in REAL_MAPS:
        density = read_map(path)
        voxel = max(density.voxel_size)
        change, knee, found = knee_and_cut(density.data, voxel)
        cells = []
        for model in models:
            plain = cryores.predict(density.data, density.voxel_size, model=model, find_cut=False)
            default = cryores.predict(density.data, density.voxel_size, model=model)
            used = "" if default.found_cut is None else " (scaled)"
            reference = "" if plain.noise_reference is not True else ", noise reference"
            cells.append(f"{plain.summary.median:.2f} / {default.summary.median:.2f}{used}{reference}")
        knee_text = f"{knee:.2f} ({-change:.1f})" if knee is not None else "–"
        print(f"| {name} | {voxel:.3g} | {reported if reported is not None else '–'} | {knee_text} "
              f"| {'–' if found is None else f'{found:.2f}'} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
