"""Wall time of half-map local FSC (``cryores.local_fsc``) on 128^3 and 256^3 maps on the CPU.

Half maps have a designed per-shell SNR (crossing FSC 0.143 at 4 Å) and the mask is a sphere
of 60 % of the box diameter, a typical particle. Prints the median of repeated runs and the
median resolution found (should be near 4 Å). Target from the issue: 256^3 in <= 30 s.

    python benchmarks/localfsc_speed.py [--sizes 128 256] [--repeats 3] [--window 30]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import scipy.fft

from cryores import local_fsc


def designed_halves(n: int, resolution: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    freqs = [np.fft.fftfreq(n)] * 2 + [np.fft.rfftfreq(n)]
    k = np.sqrt(sum(g ** 2 for g in np.meshgrid(*freqs, indexing="ij", sparse=True)))
    envelope = np.exp(-30 * k ** 2)
    noise_gain = envelope / np.sqrt(0.1667 * (1.0 / resolution / np.maximum(k, 1e-3)) ** 4)

    def shaped(gain):
        return scipy.fft.irfftn(scipy.fft.rfftn(rng.normal(size=(n, n, n)).astype(np.float32)) * gain,
                                s=(n, n, n), workers=-1).astype(np.float32)

    signal = shaped(envelope)
    return signal + shaped(noise_gain), signal + shaped(noise_gain)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--window", type=float, default=30.0)
    args = parser.parse_args()
    print(f"{'map':>6} {'wall s (median)':>16} {'median Å':>9}")
    for n in args.sizes:
        half1, half2 = designed_halves(n, 4.0)
        grid = np.indices((n, n, n), sparse=True)
        mask = sum((g - n / 2) ** 2 for g in grid) < (0.3 * n) ** 2
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            result = local_fsc(half1, half2, 1.0, mask, window=args.window)
            times.append(time.perf_counter() - start)
        print(f"{n:>5}³ {statistics.median(times):>16.1f} {result.summary.median:>9.2f}")


if __name__ == "__main__":
    main()
