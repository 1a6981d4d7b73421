"""What users hold, made from one simulated map: raw, deposited-style, low-passed, noisier.

Most deposited maps are sharpened, low-pass filtered at their global resolution and masked or
zoned (57-82 % exact zeros in several real entries), so their solvent holds no noise; users
also hold raw maps. Each variant comes with its label on the map's grid:

* ``raw``: the simulated map; label = the designed resolution d(x).
* ``deposit``: sharpened as deposits are (B = -0.3 to -1.3 x the map's Guinier B between
  15 Å and X_g, so its spectrum ends up from still falling to flat or rising, as
  auto-sharpening tools leave it; at most 1000x at X_g), low-passed at a global resolution X_g (the map's 10-50th
  percentile of d, as FSC reports a map's better part), multiplied by a soft mask or cut by a
  hard zone (70 %; the others keep their solvent noise, as unmasked sharpened maps do),
  scaled; label = max(d, X_g): nothing finer than X_g is left.
* ``lowpass``: low-passed at a random X; label = max(d, X).
* ``noisier``: white noise added (0.3-2 x the map's std inside the mask), to a raw or a
  deposit variant; the label is a **lower bound** (the old label): more noise never means more
  information, but how much worse it gets is not known.
* ``sharp`` (when the simulator's noiseless signal is given): the signal low-passed at X, then
  noise of the map's own spectrum at 0.1-1 x its amplitude (half the half maps' difference, a
  realisation independent of the map's noise), sometimes masked like a deposit. The signal-to-
  noise ratio then stays high up to X and drops to nothing beyond it, where the per-atom B
  family's falls off smoothly: real maps have both shapes, and a model that saw only one
  extrapolates the fall-off instead of finding where the signal ends. Since the noise is at most
  the designed one, wherever d <= X the SNR at X is still above the FSC-0.143 level: label X.
  Where d > X the label is unknown (the SNR changed) and left out.

Low-pass filters pass everything up to 1/X and fall with a raised cosine to 0 at 1.05/X.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from cryores.fourier import spatial_frequency
from cryores.local_filter import raised_cosine
from cryores.masking import dilate
from cryores.resample import fourier_resample

from .labels import resample_label
from .simulate import fourier_filter, radial_power

KINDS = ("raw", "deposit", "lowpass", "noisier", "sharp", "real")  # "real": rows of real maps (real_rows)
MAX_SHARPENING = 1000.0  # a deposit's amplitudes are boosted at most this much at its cut-off
NYQUIST_MARGIN = 2.2  # no variant is cut finer than this many voxels (Nyquist is 2)
LABEL_COVERAGE = 0.99  # a label resampled onto a coarser grid keeps only the voxels its values cover fully
CROP_FACTORS = (1.2, 2.0)  # rows --cropped: each map Fourier-cropped by a factor drawn from this range
CROP_MAX_VOXEL_A = 6.0  # ... but never past the coarsest voxel size trained on (simulate.V3_COARSE_VOXEL_A)
CROP_MIN_FACTOR = 1.1  # ... and at least by this much, within that bound


@dataclass
class Variant:
    """A map and its label (Å, 0 outside the labelled region); ``lower_bound`` marks inequality labels."""

    kind: str
    density: np.ndarray
    label: np.ndarray
    lower_bound: bool
    note: dict


def lowpass(density: np.ndarray, voxel: float, resolution: float) -> np.ndarray:
    """Low-pass at ``resolution`` Å: gain 1 up to 1/X, raised-cosine fall to 0 at 1.05/X."""
    frequency = spatial_frequency(density.shape, (voxel,) * 3)
    return fourier_filter(density, raised_cosine(frequency, 1.0 / resolution, 0.05 / resolution))


def sharpen(density: np.ndarray, voxel: float, bfactor: float, up_to: float | None = None) -> np.ndarray:
    """Amplitudes x exp(-B s²/4) (B < 0 sharpens, as RELION); with ``up_to`` (1/Å) the gain stays
    at its value there beyond it: before a low-pass ending at ``up_to`` nothing changes, and a
    deposit's B would otherwise overflow float32 towards Nyquist."""
    frequency = spatial_frequency(density.shape, (voxel,) * 3)
    if up_to is not None:
        frequency = np.minimum(frequency, np.float32(up_to))
    return fourier_filter(density, np.exp(-bfactor * frequency ** 2 / 4.0))


def guinier_b(density: np.ndarray, voxel: float, finest: float, coarsest: float = 15.0) -> float:
    """The map's B-factor (Å², amplitudes ~ exp(-B s²/4)) from the slope of ln(power) against s²
    between 1/coarsest and 1/finest (0 if the range holds fewer than 3 shells or the power rises)."""
    _, power = radial_power(density, voxel)
    s = np.arange(len(power)) / (density.shape[0] * voxel)
    chosen = (s >= 1.0 / coarsest) & (s <= 1.0 / finest) & (power > 0)
    if chosen.sum() < 3:
        return 0.0
    slope = np.polyfit(s[chosen] ** 2, np.log(power[chosen]), 1)[0]  # ln P = c - B s² / 2
    return max(-2.0 * float(slope), 0.0)


def _mask_like_a_deposit(density: np.ndarray, mask: np.ndarray, voxel: float, rng: np.random.Generator) -> np.ndarray:
    """A soft mask (extended 3-8 Å, soft edge 2-6 Å) or a hard zone (extended 1-4 Å)."""
    if rng.random() < 0.6:
        extended = dilate(mask, (rng.uniform(3.0, 8.0) / voxel,) * 3)
        soft = ndimage.gaussian_filter(extended.astype(np.float32), rng.uniform(1.0, 3.0) / voxel)
        return density * soft
    return np.where(dilate(mask, (rng.uniform(1.0, 4.0) / voxel,) * 3), density, 0.0).astype(np.float32)


def deposit_variant(density: np.ndarray, truth: np.ndarray, mask: np.ndarray, voxel: float,
                    rng: np.random.Generator, percentiles: tuple[float, float] = (10.0, 50.0),
                    sharpening: tuple[float, float] = (0.3, 1.3), masked_share: float = 0.7) -> Variant:
    """``deposit`` (see the module docstring): cut at the ``percentiles`` range of d (x 0.95-1.1),
    sharpened by ``sharpening`` x the map's Guinier B, masked or zoned in ``masked_share`` of draws.

    The defaults are what deposits look like (and what the evaluation scores); wider ranges
    (:func:`processing_variants`) make the cut and the sharpening vary apart from the map's
    resolution, so a network cannot take one for the other."""
    inside = truth > 0
    d = truth[inside]
    x_global = max(float(np.percentile(d, rng.uniform(*percentiles))) * rng.uniform(0.95, 1.1), NYQUIST_MARGIN * voxel)
    bfactor = -float(rng.uniform(*sharpening)) * guinier_b(density, voxel, x_global)
    bfactor = max(bfactor, -4.0 * np.log(MAX_SHARPENING) * x_global ** 2)
    deposit = lowpass(sharpen(density, voxel, bfactor, up_to=1.05 / x_global), voxel, x_global)
    masked = bool(rng.random() < masked_share)
    if masked:
        deposit = _mask_like_a_deposit(deposit, mask, voxel, rng)
    deposit = deposit * float(10 ** rng.uniform(-2, 2)) + float(rng.uniform(-1, 1))
    return Variant("deposit", deposit, np.where(inside, np.maximum(truth, x_global), 0.0).astype(np.float32),
                   False, {"lowpass": x_global, "bfactor": bfactor, "masked": masked})


def processing_variants(density: np.ndarray, truth: np.ndarray, mask: np.ndarray, voxel: float,
                        rng: np.random.Generator, count: int) -> list[Variant]:
    """``count`` more deposits of one map whose processing varies apart from its resolution: cut
    anywhere between the 5th and 90th percentile of d, sharpened by 0-2 x its Guinier B (from
    none to far past flat), masked or zoned in 85 % of draws.

    Without a noise reference, cryores-v3's whole-map offsets followed the processing (Spearman
    +0.50 with the cut over the true median, +0.38 with the sharpening B; training/README.md):
    in plain deposits both follow the map's resolution, so the network could read them for it.
    The label stays max(d, X): a linear filter changes no signal-to-noise ratio."""
    return [deposit_variant(density, truth, mask, voxel, rng, (5.0, 90.0), (0.0, 2.0), 0.85) for _ in range(count)]


def make_variants(density: np.ndarray, truth: np.ndarray, mask: np.ndarray, voxel: float,
                  rng: np.random.Generator, signal: np.ndarray | None = None,
                  noise: np.ndarray | None = None) -> list[Variant]:
    """One variant of each kind (see the module docstring) from a simulated map; ``sharp`` only
    when ``signal`` (noiseless) and ``noise`` (a realisation of the map's noise) are given."""
    inside = truth > 0
    d = truth[inside]
    out = [Variant("raw", density, truth, False, {})]

    out.append(deposit_variant(density, truth, mask, voxel, rng))

    x_cut = float(np.exp(rng.uniform(np.log(max(float(d.min()), NYQUIST_MARGIN * voxel)), np.log(20.0))))
    source = out[int(rng.integers(0, 2))]
    cut = lowpass(source.density, voxel, x_cut)
    out.append(Variant("lowpass", cut, np.where(inside, np.maximum(source.label, x_cut), 0.0).astype(np.float32),
                       False, {"lowpass": x_cut, "from": source.kind}))

    source = out[int(rng.integers(0, 2))]
    spread = float(source.density[inside].std())
    level = float(rng.uniform(0.3, 2.0))
    noisy = source.density + rng.normal(0.0, level * spread, density.shape).astype(np.float32)
    out.append(Variant("noisier", noisy, source.label, True, {"noise": level, "from": source.kind}))
    if signal is not None and noise is not None:
        out.append(sharp_variant(signal, noise, truth, mask, voxel, rng))
    return out


def sharp_variant(signal: np.ndarray, noise: np.ndarray, truth: np.ndarray, mask: np.ndarray, voxel: float,
                  rng: np.random.Generator) -> Variant:
    """``sharp`` (see the module docstring): X between the 30th percentile of d and 1.5 x its
    95th (at most 20 Å), noise amplitude 0.1-1 x the map's."""
    inside = truth > 0
    d = truth[inside]
    low = max(float(np.percentile(d, 30)), NYQUIST_MARGIN * voxel)
    high = max(min(1.5 * float(np.percentile(d, 95)), 20.0), 1.2 * low)
    x_cut = float(np.exp(rng.uniform(np.log(low), np.log(high))))
    level = float(np.exp(rng.uniform(np.log(0.1), 0.0)))
    density = lowpass(signal, voxel, x_cut) + level * noise
    masked = bool(rng.random() < 0.4)
    if masked:
        density = _mask_like_a_deposit(density, mask, voxel, rng)
    label = np.where(inside & (truth <= x_cut), x_cut, 0.0).astype(np.float32)
    return Variant("sharp", density.astype(np.float32), label, False,
                   {"lowpass": x_cut, "noise": level, "masked": masked})


def crop_size(truth: np.ndarray, voxel: float, rng: np.random.Generator) -> tuple[int, float]:
    """(box side, voxel size Å) of a map on ``truth``'s cubic grid Fourier-cropped by a factor
    drawn from :data:`CROP_FACTORS`: the same box in fewer voxels, as RELION's or cryoSPARC's
    down-sampling leaves a map. Users crop to a Nyquist below their map's resolution, so the new
    voxel stays at most the median of d / :data:`NYQUIST_MARGIN`, though the factor is at least
    :data:`CROP_MIN_FACTOR`; never past :data:`CROP_MAX_VOXEL_A` (a map already that coarse is
    not cropped). Simulated boxes are cubic (``simulate``), so one side serves all three axes."""
    n = truth.shape[0]
    coarsest = min(CROP_MAX_VOXEL_A, float(np.median(truth[truth > 0])) / NYQUIST_MARGIN)
    least = max(min(CROP_MIN_FACTOR, CROP_MAX_VOXEL_A / voxel), 1.0)
    factor = max(min(float(rng.uniform(*CROP_FACTORS)), coarsest / voxel), least)
    side = max(int(round(n / factor)), 2)
    return side, voxel * n / side


def cropped_variant(variant: Variant, side: int, voxel: float) -> Variant:
    """``variant`` Fourier-cropped to a side³ grid of ``voxel`` Å: every frequency below the new
    Nyquist unchanged, the rest gone. The label is resampled onto the new grid (kept where the
    old one covers a voxel fully) and floored at the new Nyquist, since nothing finer is left.

    Cropping is not resampling-neutral for what the reading leans on: a masked map's edge rings
    through its flattened solvent (which then looks like a noise reference), and a raw map's
    band next to its new Nyquist holds what the old grid carried there, not what a simulation at
    the coarse voxel would."""
    shape = (side,) * 3
    density = fourier_resample(variant.density, shape)
    label = resample_label(variant.label.astype(np.float32), None, shape, coverage=LABEL_COVERAGE)
    label = np.where(label > 0, np.maximum(label, 2.0 * voxel), 0.0).astype(np.float32)
    return Variant(variant.kind, density, label, variant.lower_bound, {**variant.note, "cropped_to": voxel})
