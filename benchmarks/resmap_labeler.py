"""Accuracy and runtime of the ResMap-style labeler against half-map local FSC on designed maps.

Maps: random densities in a soft sphere, sharply low-passed at a designed cutoff (one cutoff, or
3.5 Å / 7 Å halves joined over about 4 Å), unit std inside the mask, white noise at a real-space
SNR, as two half maps. Prints one line per case; numbers go into docs/resmap_labeler.md.

    .venv/bin/python benchmarks/resmap_labeler.py
"""

from __future__ import annotations

import time

import numpy as np
import scipy.fft

from cryores import local_fsc
from cryores_train.resmap import resmap_local_resolution


def lowpass(volume: np.ndarray, cutoff: float) -> np.ndarray:
    f = [np.fft.fftfreq(n) for n in volume.shape[:2]] + [np.fft.rfftfreq(volume.shape[2])]
    radius2 = f[0][:, None, None] ** 2 + f[1][None, :, None] ** 2 + f[2][None, None, :] ** 2
    return scipy.fft.irfftn(scipy.fft.rfftn(volume) * (radius2 <= 1.0 / cutoff ** 2), s=volume.shape).astype(np.float32)


def envelope(shape: tuple[int, int, int], radius_fraction: float) -> np.ndarray:
    c = [np.arange(n) - n / 2 for n in shape]
    d = np.sqrt(c[0][:, None, None] ** 2 + c[1][None, :, None] ** 2 + c[2][None, None, :] ** 2)
    return (0.5 * (1 - np.tanh((d - radius_fraction * min(shape)) / 2.0))).astype(np.float32)


def designed(shape, cutoffs: tuple[float, float], snr: float, seed: int):
    """Half maps, mask and truth (Å); cutoffs[0] for array axis 0 < 0, cutoffs[1] beyond."""
    rng = np.random.default_rng(seed)
    env = envelope(shape, 0.36)
    mask = env > 0.5
    white = env * rng.standard_normal(shape).astype(np.float32)
    x = np.arange(shape[0]) - shape[0] / 2
    blend = (0.5 * (1 + np.tanh(x / 2.0)))[:, None, None].astype(np.float32)
    if cutoffs[0] == cutoffs[1]:
        signal = lowpass(white, cutoffs[0])
    else:
        signal = (1 - blend) * lowpass(white, cutoffs[0]) + blend * lowpass(white, cutoffs[1])
    signal /= signal[mask].std()
    halves = tuple(signal + rng.normal(0, np.sqrt(2.0) / snr, shape).astype(np.float32) for _ in range(2))
    truth = np.where(x[:, None, None] < 0, cutoffs[0], cutoffs[1]) * np.ones(shape, np.float32)
    return halves, mask, truth


def scores(estimate: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> str:
    assigned = mask & (estimate > 0)
    error = estimate[assigned] - truth[assigned]
    x = np.arange(mask.shape[0])[:, None, None] - mask.shape[0] / 2
    left, right = assigned & (x < -4), assigned & (x > 4)
    return (f"median {np.median(estimate[left]):.2f}/{np.median(estimate[right]):.2f} MAE {np.abs(error).mean():.2f} "
            f"bias {error.mean():+.2f} assigned {assigned.sum() / mask.sum():.3f}")


def run_case(shape, cutoffs, snr, seed, with_fsc=True) -> None:
    halves, mask, truth = designed(shape, cutoffs, snr, seed)
    full = 0.5 * (halves[0] + halves[1])
    rows = []
    for name, kwargs in (("resmap single", {}), ("resmap halves", {"half_maps": halves})):
        start = time.perf_counter()
        result = resmap_local_resolution(full, 1.0, mask, **kwargs)
        rows.append((name, time.perf_counter() - start, result))
    if with_fsc:
        start = time.perf_counter()
        result = local_fsc(halves[0], halves[1], 1.0, mask).resolution
        rows.append(("local FSC", time.perf_counter() - start, result))
    for name, seconds, result in rows:
        print(f"{shape[0]}^3 cutoffs {cutoffs[0]:g}/{cutoffs[1]:g} Å snr {snr:g} seed {seed} {name:14s} "
              f"{scores(result, truth, mask)} {seconds:.1f} s", flush=True)


def main() -> None:
    for cutoffs in ((4.0, 4.0), (8.0, 8.0), (3.5, 7.0)):
        for snr in (0.5, 1.0, 2.0):
            for seed in (0, 1):
                run_case((64, 64, 64), cutoffs, snr, seed)
    run_case((100, 100, 100), (3.5, 7.0), 1.0, 0)
    run_case((100, 100, 100), (3.5, 7.0), 0.5, 0)


if __name__ == "__main__":
    main()
