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
noise" shows as such (it then reads against that ringing as if it were noise).

Usage: python benchmarks/resampled_real_maps.py [CARD] [--factors 1.5 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import cryores
from cryores.model_card import load_model
from cryores.mrc_io import read_map
from cryores.resample import fourier_resample
from cryores_train.evaluate_v3 import REAL_MAPS


def cropped(data: np.ndarray, voxel: tuple[float, float, float], factor: float):
    """(the map Fourier-cropped by ``factor``, its voxel size): the same box, fewer voxels."""
    shape = tuple(int(round(n / factor)) for n in data.shape)
    return (fourier_resample(data, shape).astype(np.float32),
            tuple(v * n / m for v, n, m in zip(voxel, data.shape, shape)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("card", nargs="?", default=None, help="model card (default: the installed model)")
    parser.add_argument("--factors", type=float, nargs="+", default=[1.5, 2.0])
    args = parser.parse_args()
    model = load_model(args.card)
    print(f"model {model.card['name']}; medians and 5-95 % in Å over the automatic mask")
    print(f"{'map':22s} {'Å/px':>6s} {'Nyquist':>7s} {'reference':>9s} {'median':>7s} {'5-95 %':>13s} {'s':>5s}")
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
            print(f"{name if factor == 1.0 else '  × ' + format(factor, 'g'):22s} {max(voxel):6.3f} "
                  f"{2 * max(voxel):7.2f} {reference:>9s} {median:7.2f} {p5:6.2f}-{p95:6.2f} {seconds:5.1f}",
                  flush=True)


if __name__ == "__main__":
    main()
