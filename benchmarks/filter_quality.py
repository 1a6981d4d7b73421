"""Quality, speed and memory of ``cryores.filter_map`` on maps of known local resolution.

Quality: a protein-like map (Gaussian 'atoms') whose half x < n/2 is resolved to 3 Å and the
other half to 8 Å (ideal low-passes), plus white noise at several levels. Prints the
correlation with the noise-free truth inside the mask for the noisy input, the best single
global low-pass (scanned 2.5-10 Å in 0.25 Å steps, same filter shape as cryores') and the local
filter at a few smoothing widths. Speed/memory: one run on an n^3 map in a fresh process.

    python benchmarks/filter_quality.py [--size 96] [--big 256]

Not a test: the numbers are for docs and for choosing defaults.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
import scipy.fft
from scipy import ndimage

from cryores import filter_map
from cryores.fourier import spatial_frequency
from cryores.local_filter import BYTES_PER_VOXEL


def top_hat(volume: np.ndarray, resolution: float) -> np.ndarray:
    spectrum = scipy.fft.rfftn(volume)
    spectrum[spatial_frequency(volume.shape, (1.0, 1.0, 1.0)) > 1.0 / resolution] = 0
    return scipy.fft.irfftn(spectrum, s=volume.shape).astype(np.float32)


def known_map(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    atoms = np.zeros((n, n, n), np.float32)
    np.add.at(atoms, tuple(rng.integers(n // 8, n - n // 8, size=(int(0.06 * n ** 3), 3)).T), 1.0)
    atoms = ndimage.gaussian_filter(atoms, 0.6)
    left = np.zeros((n, n, n), bool)
    left[:, :, : n // 2] = True
    truth = np.where(left, top_hat(atoms, 3.0), top_hat(atoms, 8.0))
    mask = np.zeros((n, n, n), bool)
    inner = slice(n // 8, n - n // 8)
    mask[inner, inner, inner] = True
    locres = np.where(mask, np.where(left, 3.0, 8.0), 0.0).astype(np.float32)
    return truth, locres, mask, rng


def correlation(a, b, mask) -> float:
    return float(np.corrcoef(a[mask], b[mask])[0, 1])


def quality(n: int) -> None:
    truth, locres, mask, rng = known_map(n)
    noise = rng.normal(0, truth[mask].std(), truth.shape).astype(np.float32)
    print(f"{n}^3, halves at 3 and 8 Å; correlation with the truth inside the mask")
    print(f"{'noise/signal':>12} {'input':>6} {'best global':>16} {'local s=0':>10} {'s=1 (default)':>14} {'s=2':>6}")
    for level in (0.5, 1.0, 2.0, 4.0):
        noisy = truth + level * noise
        scan = {d: correlation(filter_map(noisy, np.full_like(locres, d), 1.0).density, truth, mask)
                for d in np.arange(2.5, 10.01, 0.25)}
        best = max(scan, key=scan.get)
        local = [correlation(filter_map(noisy, locres, 1.0, smooth=s).density, truth, mask) for s in (0.0, 1.0, 2.0)]
        print(f"{level:>12.1f} {correlation(noisy, truth, mask):>6.3f} {scan[best]:>9.3f} ({best:4.2f} Å)"
              f" {local[0]:>10.3f} {local[1]:>14.3f} {local[2]:>6.3f}")


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as stream:
        return next(int(line.split()[1]) for line in stream if line.startswith(field + ":"))


def worker(n: int) -> dict:
    """Wall time and the filter's own peak memory: Linux's peak-RSS counter is reset after the
    test data are made (/proc/self/clear_refs), so only filter_map's allocations count."""
    truth, locres, _, rng = known_map(n)
    noisy = truth + rng.normal(0, truth.std(), truth.shape).astype(np.float32)
    del truth
    with open("/proc/self/clear_refs", "w") as stream:
        stream.write("5")
    before = _status_kib("VmRSS")
    start = time.perf_counter()
    result = filter_map(noisy, locres, 1.0, bfactor=-50)
    wall = time.perf_counter() - start
    return {"wall_s": wall, "levels": len(result.levels), "filter_gib": (_status_kib("VmHWM") - before) / 2**20,
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--big", type=int, default=256, help="map side for the speed/memory run (0: skip)")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker)))
        return
    quality(args.size)
    if args.big:
        proc = subprocess.run([sys.executable, __file__, "--worker", str(args.big)], capture_output=True, text=True,
                              check=True)
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"\n{args.big}^3, 3-8 Å ({r['levels']} levels), B -50: {r['wall_s']:.1f} s; memory added by "
              f"filter_map {r['filter_gib']:.2f} GiB (the guard budgets {BYTES_PER_VOXEL * args.big ** 3 / 2**30:.2f} "
              f"GiB); whole process peak {r['peak_rss_gib']:.2f} GiB (Linux only)")


if __name__ == "__main__":
    main()
