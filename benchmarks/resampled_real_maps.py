"""Real maps read again after Fourier cropping to coarser voxels: is the reading right in Å at any
voxel size, on maps the model never saw?

Fourier cropping (what RELION's and cryoSPARC's down-sampling do) keeps every frequency below the
new Nyquist unchanged and drops the rest. So a map cropped by a factor f holds the same
information coarser than 2 × f × its voxel size, and a well-behaved reading moves only where the
original read finer than the new Nyquist: its median should stay near max(original median, a
little above the new Nyquist).

Cropping also ends a masked map's flattened solvent: the mask's edge rings through the box, so
no value is exactly the constant any more. This prints, per map and factor, whether the map was
read with a noise reference, so a masked deposit that the cropping turns into one "with solvent
noise" shows as such (it then reads against that ringing as if it were noise), and how far its
solvent's values spread (``cryores.spectral.solvent_spread``), with a star where that is below
``cryores.cautions.FAINT_SOLVENT`` and the prediction says so.

With ``--simulated N`` the same is done, with the truth known, on the deposited-style maps of N
validation structures (``bfactor``, sample 0, seed 7, as the benchmarks draw them): each read as
it is and cropped, its label resampled onto the cropped grid as the training rows' are
(``cryores_train.labels.resample_label``, kept where the old label covers a voxel fully) and
floored at that grid's Nyquist (nothing finer is left in the map, and no reading is finer),
scored by MAE, bias and the
median ln(reading / label), apart for the masked ones, which lose their missing reference, with
how many were cautioned for a faint solvent.

Usage: python benchmarks/resampled_real_maps.py [CARD] [--factors 1.5 2] [--simulated N]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import cryores
from cryores.cautions import faint_solvent
from cryores.model_card import load_model
from cryores.mrc_io import read_map
from cryores.resample import fourier_resample
from cryores_train.evaluate_v3 import REAL_MAPS, STRUCTURES
from cryores_train.labels import resample_label
from cryores_train.rows import EVALUATION_SEED, scored_maps, structures_in_splits
from cryores_train.variants import LABEL_COVERAGE


def cropped(data: np.ndarray, voxel: tuple[float, float, float], factor: float):
    """(the map Fourier-cropped by ``factor``, its voxel size): the same box, fewer voxels."""
    shape = tuple(int(round(n / factor)) for n in data.shape)
    return (fourier_resample(data, shape).astype(np.float32),
            tuple(v * n / m for v, n, m in zip(voxel, data.shape, shape)))


def faint(result: cryores.Prediction) -> bool:
    """Whether the prediction cautions that the solvent it was read against is faint."""
    return faint_solvent(result.noise_reference, result.solvent_spread) and any(
        "solvent is faint" in c for c in result.cautions)


def simulated_deposits(model, structures: int, factors: list[float]) -> None:
    """MAE, bias (Å) and the median ln(reading / label) of validation deposits, as they are and cropped."""
    groups, ids = structures_in_splits(STRUCTURES, ("val",), structures)
    scores: dict[tuple[bool, float], list[tuple[float, float, float, bool]]] = {}
    for sid in ids:
        _, _, voxel, variants = scored_maps(sid, groups[sid], "bfactor", 0, EVALUATION_SEED)
        deposit = next(v for v in variants if v.kind == "deposit")
        masked = bool(deposit.note.get("masked"))
        for factor in [1.0] + factors:
            if factor == 1.0:
                data, size, label = deposit.density, (voxel,) * 3, deposit.label
            else:
                data, size = cropped(deposit.density, (voxel,) * 3, factor)
                # as the training rows do: normalised at the labelled region's edge, kept where the
                # old label covers a voxel fully
                label = resample_label(deposit.label.astype(np.float32), None, data.shape, coverage=LABEL_COVERAGE)
            region = label > 0
            # nothing finer than the grid's Nyquist exists in the map (and no reading is finer): a
            # label finer than the cropped grid's Nyquist is read at it
            label = np.where(region, np.maximum(label, 2.0 * max(size)), 0.0)
            result = cryores.predict(data, size, region, model=model)
            error = result.resolution[region] - label[region]
            scores.setdefault((masked, factor), []).append(
                (float(np.abs(error).mean()), float(error.mean()),
                 float(np.median(np.log(result.resolution[region] / label[region]))), faint(result)))
    print(f"\nvalidation deposits ({len(ids)} structures), mask given: MAE / bias Å, median ln offset (mean over maps)")
    for (masked, factor), rows in sorted(scores.items()):
        mae, bias, offset, cautioned = np.mean(rows, axis=0)
        print(f"{'masked or zoned' if masked else 'solvent kept':16s} x {factor:<4g} {len(rows):3d} maps  "
              f"MAE {mae:.3f}  bias {bias:+.3f}  offset {offset:+.3f}  faint solvent {cautioned * len(rows):.0f}",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("card", nargs="?", default=None, help="model card (default: the installed model)")
    parser.add_argument("--factors", type=float, nargs="+", default=[1.5, 2.0])
    parser.add_argument("--simulated", type=int, default=0, metavar="N",
                        help="also score the deposits of N validation structures, cropped alike")
    args = parser.parse_args()
    model = load_model(args.card)
    print(f"model {model.card['name']}; medians and 5-95 % in Å over the automatic mask")
    print(f"{'map':22s} {'Å/px':>6s} {'Nyquist':>7s} {'reference':>9s} {'spread':>8s} {'median':>7s} {'5-95 %':>13s} "
          f"{'s':>5s}")
    for name, path, _, _ in REAL_MAPS:
        density = read_map(path)
        for factor in [1.0] + list(args.factors):
            data, voxel = (density.data, density.voxel_size) if factor == 1.0 else cropped(
                density.data, density.voxel_size, factor)
            started = time.perf_counter()
            result = cryores.predict(data, voxel, model=model)
            seconds = time.perf_counter() - started
            values = result.resolution[result.mask]
            p5, median, p95 = np.percentile(values, [5, 50, 95])
            reference = {True: "yes", False: "no", None: "-"}[result.noise_reference]
            spread = "-" if result.solvent_spread is None else (
                f"{result.solvent_spread:.1e}" + ("*" if faint(result) else " "))
            print(f"{name if factor == 1.0 else '  × ' + format(factor, 'g'):22s} {max(voxel):6.3f} "
                  f"{2 * max(voxel):7.2f} {reference:>9s} {spread:>8s} {median:7.2f} {p5:6.2f}-{p95:6.2f} "
                  f"{seconds:5.1f}", flush=True)
    if args.simulated:
        simulated_deposits(model, args.simulated, list(args.factors))


if __name__ == "__main__":
    main()
