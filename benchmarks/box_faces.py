"""Maps whose molecule the box cuts, read with the band powers mirrored past the faces and
wrapped around the box as before (``cryores.box_faces``), side by side in one run.

Simulated maps, truth known: the raw and deposited-style maps of N validation structures
(``bfactor``, sample 0, seed 7, as the benchmarks draw them), each cut along its first axis 20 %
of the labelled region's extent inside either end, so the molecule runs through two faces as a
filament or a crop does. Mask given (the labelled region). MAE and bias (Å) within 10 Å of the
two cut faces and further in, and how many maps read better (by more than 0.02 Å) either way.
Real maps: the evaluation's real maps (``evaluate_v3.REAL_MAPS``) whose automatic mask the gate
takes for cut, medians within 10 Å of a face and further in.

Usage: python benchmarks/box_faces.py [CARD] [--structures N]
"""

from __future__ import annotations

import argparse
from contextlib import contextmanager

import numpy as np

import cryores
import cryores.spectral as spectral
from cryores.box_faces import cut_by_box, read_past_faces
from cryores.masking import automatic_mask
from cryores.model_card import load_model
from cryores.mrc_io import read_map
from cryores_train.evaluate_v3 import REAL_MAPS, STRUCTURES
from cryores_train.rows import EVALUATION_SEED, scored_maps, structures_in_splits

CUT_SHARE = 0.2  # of the labelled extent, cut away inside each end of the first axis
FACE_A = 10.0  # "near a face": within this many Å


@contextmanager
def wrapped_band_powers():
    """Read as before the mirroring: no map is taken for cut by its box."""
    gate = spectral.read_past_faces
    spectral.read_past_faces = lambda mask, reference: False
    try:
        yield
    finally:
        spectral.read_past_faces = gate


def near_faces(shape: tuple[int, ...], voxel: float, axes: tuple[int, ...]) -> np.ndarray:
    k = max(1, int(np.ceil(FACE_A / voxel)))
    near = np.zeros(shape, bool)
    for axis in axes:
        index = [slice(None)] * 3
        index[axis] = np.r_[0:k, shape[axis] - k:shape[axis]]
        near[tuple(index)] = True
    return near


def cut_along_first_axis(density: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    along = np.flatnonzero((label > 0).any(axis=(1, 2)))
    lo, hi = along[0], along[-1] + 1
    trim = int(CUT_SHARE * (hi - lo))
    return np.ascontiguousarray(density[lo + trim:hi - trim]), label[lo + trim:hi - trim]


def simulated(model, structures: int) -> None:
    groups, ids = structures_in_splits(STRUCTURES, ("val",), structures)
    scores: dict[tuple[str, str], list[tuple[float, float, float, float, float, float]]] = {}
    for sid in ids:
        _, _, voxel, variants = scored_maps(sid, groups[sid], "bfactor", 0, EVALUATION_SEED)
        for variant in variants:
            density, label = cut_along_first_axis(variant.density, variant.label)
            region = label > 0
            near = near_faces(density.shape, voxel, (0,))
            gated = read_past_faces(region, spectral.reference_region(density, (voxel,) * 3, region))
            for how in ("wrapped", "mirrored"):
                if how == "wrapped":
                    with wrapped_band_powers():
                        reading = cryores.predict(density, (voxel,) * 3, region, model=model).resolution
                else:
                    reading = cryores.predict(density, (voxel,) * 3, region, model=model).resolution
                error = reading - label
                scores.setdefault((variant.kind, how), []).append((
                    float(np.abs(error[region & near]).mean()), float(error[region & near].mean()),
                    float(np.abs(error[region & ~near]).mean()), float(error[region & ~near].mean()),
                    float(np.abs(error[region]).mean()), float(gated)))
    print(f"validation maps ({len(ids)} structures) cut along the first axis, mask given: MAE (bias) Å")
    print(f"{'maps':8s} {'read':9s} {'n':>3s} {'gate':>4s} {'near faces':>15s} {'further in':>15s} {'all':>6s} "
          f"{'better':>6s} {'worse':>6s}")
    for kind in ("raw", "deposit"):
        base = np.array(scores[(kind, "wrapped")])
        for how in ("wrapped", "mirrored"):
            rows = np.array(scores[(kind, how)])
            mean = rows.mean(axis=0)
            better = int((rows[:, 4] < base[:, 4] - 0.02).sum()) if how == "mirrored" else 0
            worse = int((rows[:, 4] > base[:, 4] + 0.02).sum()) if how == "mirrored" else 0
            print(f"{kind:8s} {how:9s} {len(rows):3d} {int(rows[:, 5].sum()):4d} {mean[0]:6.3f} ({mean[1]:+.2f}) "
                  f"{mean[2]:6.3f} ({mean[3]:+.2f}) {mean[4]:6.3f} {better:6d} {worse:6d}", flush=True)


def real(model) -> None:
    print("\nreal maps the gate takes for cut by their box: medians (Å) near a face / further in")
    for name, path, _, _ in REAL_MAPS:
        density = read_map(path)
        mask = automatic_mask(density.data, density.voxel_size)
        if not cut_by_box(mask):
            continue
        near = near_faces(mask.shape, density.voxel_size[0], (0, 1, 2))
        with wrapped_band_powers():
            before = cryores.predict(density.data, density.voxel_size, mask, model=model).resolution
        after = cryores.predict(density.data, density.voxel_size, mask, model=model).resolution
        print(f"{name:20s} wrapped {np.median(before[mask & near]):6.2f} / {np.median(before[mask & ~near]):6.2f}   "
              f"mirrored {np.median(after[mask & near]):6.2f} / {np.median(after[mask & ~near]):6.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("card", nargs="?", default=None, help="model card (default: the installed model)")
    parser.add_argument("--structures", type=int, default=24)
    args = parser.parse_args()
    model = load_model(args.card)
    print(f"model {model.card['name']}, weights sha256 {model.card['sha256'][:8]}…")
    real(model)
    print()
    simulated(model, args.structures)


if __name__ == "__main__":
    main()
