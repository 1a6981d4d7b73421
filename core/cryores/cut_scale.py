"""Setting a masked map's overall scale from the low-pass cut its user gives.

Why: without a noise reference (masked, flattened or zoned deposits) the network reads the
map's overall scale least well: whole maps read 10 % too fine or too coarse (ln offsets with an
RMS of about 0.1), and that, not the reading within each map, is most of their error. Deposits
are low-pass filtered at their global resolution (FSC 0.143), which the map's better-resolved
part reaches. So where the user gives that cut, the reading is scaled so that the best-resolved
fifth of the mask reads the cut: on simulated deposits without a noise reference that moved the
MAE from 0.71 (floored at the cut) to 0.57 Å on 56 validation deposits and from 0.73 to 0.50 Å
on the test split's 28 (training/README.md, "the low-pass cut as a masked map's scale"). With a
noise reference the network reads the scale well and the same scaling made those maps worse
(0.51 -> 0.55 Å on validation), so there the cut only floors the reading.

A cut far finer than the reading's best-resolved fifth (which reads more than twice as coarse)
is not taken as the map's global resolution (a map filtered at a cut finer than anything it
holds): then the cut only floors the reading, and a caution says so. The margin is wide because
real masked maps read coarse: with the card of the sixteenth session, EMD-3488 (3.2 Å reported,
low-passed near 3.1 Å) had its best fifth at 4.7 Å and EMD-1997 (7.0 Å) a median of 9.3 Å; the
shipped card reads their medians at 4.7 and 9.0 Å (README, model section).
"""

from __future__ import annotations

import numpy as np

PINNED_PERCENTILE = 20.0  # the share of the mask (%) that reads the cut: the map's best-resolved fifth
FAR_FINER = 2.0  # the best fifth reading more than this many times the cut: the cut is not the map's resolution


def scale_for_cut(resolution: np.ndarray, mask: np.ndarray, cut: float,
                  voxel_size: tuple[float, float, float]) -> tuple[float | None, str | None]:
    """(factor, caution) for a map read without a noise reference and given the low-pass ``cut``:
    the factor that makes the :data:`PINNED_PERCENTILE` th percentile of ``resolution`` (Å) over
    ``mask`` equal the cut, or Nyquist where the cut is finer (a binned deposit given its reported
    resolution: nothing reads finer than Nyquist). When that percentile is more than
    :data:`FAR_FINER` times the target, the cut is refused: None and the caution that says so
    (None and None for an empty mask)."""
    if not mask.any():
        return None, None
    best = float(np.percentile(resolution[mask], PINNED_PERCENTILE))
    target = max(float(cut), 2.0 * max(voxel_size))
    if 0 < best <= FAR_FINER * target:
        return target / best, None
    return None, (f"the low-pass cut {cut:g} Å is far finer than the map's best-resolved fifth ({best:.2f} Å), so it "
                  "is not taken as the map's global resolution and only keeps values from reading finer; if the map "
                  "was filtered at its global resolution, check the value you gave")
