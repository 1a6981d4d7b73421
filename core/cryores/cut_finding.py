"""Finding the low-pass cut a masked map was filtered at, in its own spectrum.

Why: a map without a noise reference (masked, flattened or zoned) is read least well as a whole,
and the cut it was low-passed at, its global resolution, sets its scale well
(:mod:`cryores.cut_scale`). Users often do not know it; the map still shows it. In an unmasked
deposit the power past the cut is gone (the content edge, :func:`cryores.spectral.content_edge`,
finds it), but a mask's edge spreads power past the cut, so the spectrum of a masked deposit
falls only a decade or two there, then keeps falling smoothly. What stays sharp is the *knee*:
the shell where the spectrum's slope turns downward.

The finder fits one straight line to log10 shell power against ln frequency over
:data:`HALF_WIDTH` below each shell (or :data:`MIN_SHELLS` shells, where the shells are sparser)
and one above it. The knee is the shell where the slope falls most. It is taken as a cut when the
slope falls by at least :data:`MIN_DROP` (decades per unit of ln frequency). The cut is placed
between the knee, where the filter starts to fall, and the steepest step within the same span
beyond it, where it ends: the middle of the filter's edge, where post-processing puts the
resolution it filters at.

Measured on 320 validation maps (``benchmarks/cut_detection.py``, ``docs/benchmarks.md``): a cut
is found in 65 of the 104 masked deposits, all within 5 % of the true cut (mid-edge, it reads
0.95-1.03 x the simulator's cut, which starts its fall there), and in every one of the 56
unmasked deposits. No cut is found in any of the 160 raw maps. Most masked deposits it
misses are cut at 8-14 Å, where the spectrum of a strongly sharpened map already falls and the
mask's edge fills in the rest: no knee shows. Candidates are searched from :data:`COARSEST_A` to
:data:`NYQUIST_MARGIN` x Nyquist: closer to Nyquist, the box's corners and the roll-off of
resampled maps make knees of their own (searched up to Nyquist, EMD-5625 and β-galactosidase
show knees falling by 12-13 decades there).
"""

from __future__ import annotations

import numpy as np

from .fourier import shell_means, shell_width
from .spectral import map_spectrum

HALF_WIDTH = 0.12  # ln-frequency span of each of the two fitted lines (12 %) ...
MIN_SHELLS = 4  # ... or of this many shells, where the shells are sparser (coarse cuts in small boxes)
MIN_DROP = 6.0  # fall of the slope (log10 power per unit ln f) that makes a knee a cut
COARSEST_A = 20.0  # no cut is looked for coarser than this
NYQUIST_MARGIN = 1.1  # nor finer than this x Nyquist (1.05 finds 2 more of 104 masked validation deposits)
BEYOND_NYQUIST = 1.6  # shells are read up to this x the Nyquist frequency (the box's corners hold them)
MIN_SHELL_COEFFICIENTS = 20  # fewer Fourier coefficients than this: the shell's mean is too noisy


def shell_power(density: np.ndarray, voxel_size: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """(frequency 1/Å, mean power) of the map's Fourier shells (:func:`cryores.fourier.shell_means`,
    the mean removed), up to :data:`BEYOND_NYQUIST` x the coarsest axis's Nyquist frequency. Shells
    with fewer than :data:`MIN_SHELL_COEFFICIENTS` coefficients or no power are left out."""
    width = shell_width(density.shape, voxel_size)
    last = int(np.floor(BEYOND_NYQUIST * 0.5 / max(voxel_size) / width))
    counts, mean = shell_means(map_spectrum(density), density.shape, voxel_size, last)
    f = np.arange(last + 1) * width
    usable = (counts >= MIN_SHELL_COEFFICIENTS) & (f > 0) & (mean > 0)
    return f[usable], mean[usable]


def fit_half_width(frequency: np.ndarray) -> np.ndarray:
    """The ln-frequency span of the lines fitted on either side of each shell: :data:`HALF_WIDTH`,
    or :data:`MIN_SHELLS` shells where that holds fewer. Why: a cut at 10 Å in a 36-voxel box
    lies near shell 10, where 12 % spans one shell, and a line through one shell is no slope;
    with at least 4 shells a side the finder reads 65 rather than 44 of 104 masked validation
    deposits, all within 5 % of the true cut, and still no raw map (``benchmarks/cut_detection.py``)."""
    width = float(np.min(np.diff(frequency)))  # the shells are multiples of one width
    # half a shell more, so that the last shell is inside whatever the rounding of ln f
    return np.maximum(HALF_WIDTH, np.log1p((MIN_SHELLS + 0.5) * width / frequency))


def spectrum_knee(frequency: np.ndarray, power: np.ndarray, nyquist: float) -> tuple[int | None, float]:
    """(index of the knee shell, slope change there): the shell between :data:`COARSEST_A` and
    :data:`NYQUIST_MARGIN` x ``nyquist`` (Å) where the slope of log10 ``power`` against ln
    ``frequency``, fitted over :func:`fit_half_width` on either side, falls most. (None, 0.0)
    when no shell has room on both sides or the slope nowhere falls."""
    if frequency.size < 8:  # too few shells for two lines of 3
        return None, 0.0
    log_f, log_p = np.log(frequency), np.log10(power)
    half = fit_half_width(frequency)
    finest = 1.0 / (NYQUIST_MARGIN * nyquist)
    best, knee = 0.0, None
    for i in np.flatnonzero((frequency >= 1.0 / COARSEST_A) & (frequency <= finest)):
        below = (log_f >= log_f[i] - half[i]) & (log_f <= log_f[i])
        above = (log_f >= log_f[i]) & (log_f <= log_f[i] + half[i])
        if below.sum() < 3 or above.sum() < 3 or log_f[-1] < log_f[i] + half[i]:
            continue
        change = float(np.polyfit(log_f[above], log_p[above], 1)[0] - np.polyfit(log_f[below], log_p[below], 1)[0])
        if change < best:
            best, knee = change, int(i)
    return knee, best


def find_lowpass_cut(density: np.ndarray, voxel_size: tuple[float, float, float]) -> float | None:
    """The low-pass cut (Å) ``density`` was filtered at, or None where its spectrum shows none
    (no knee falling by :data:`MIN_DROP`, or a cut within :data:`NYQUIST_MARGIN` of Nyquist): the
    middle, in ln frequency, between the knee and the steepest step of the spectrum within
    :func:`fit_half_width` beyond it."""
    frequency, power = shell_power(density, voxel_size)
    knee, change = spectrum_knee(frequency, power, 2.0 * max(voxel_size))
    if knee is None or change > -MIN_DROP:
        return None
    log_f, log_p = np.log(frequency), np.log10(power)
    edge = np.flatnonzero((log_f >= log_f[knee]) & (log_f <= log_f[knee] + fit_half_width(frequency)[knee]))
    steps = np.diff(log_p[edge]) / np.diff(log_f[edge])
    steepest = edge[int(np.argmin(steps))]
    end = 0.5 * (log_f[steepest] + log_f[steepest + 1])  # the steepest step's middle
    cut = float(np.exp(-0.5 * (log_f[knee] + end)))
    return cut if cut >= NYQUIST_MARGIN * 2.0 * max(voxel_size) else None
