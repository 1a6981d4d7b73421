"""What users hold, made from one simulated map: raw, deposited-style, low-passed, noisier.

Most deposited maps are sharpened, low-pass filtered at their global resolution and masked or
zoned (57-82 % exact zeros in several real entries), so their solvent holds no noise; users
also hold raw maps. Each variant comes with its label on the map's grid:

* ``raw``: the simulated map; label = the designed resolution d(x).
* ``deposit``: sharpened (B in [-150, 0] Å²), low-passed at a global resolution X_g (the map's
  10-50th percentile of d, as FSC reports a map's better part), multiplied by a soft mask or
  cut by a hard zone, scaled; label = max(d, X_g): nothing finer than X_g is left.
* ``lowpass``: low-passed at a random X; label = max(d, X).
* ``noisier``: white noise added (0.3-2 x the map's std inside the mask), to a raw or a
  deposit variant; the label is a **lower bound** (the old label): more noise never means more
  information, but how much worse it gets is not known.

Low-pass filters pass everything up to 1/X and fall with a raised cosine to 0 at 1.05/X.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from cryores.fourier import spatial_frequency
from cryores.local_filter import raised_cosine
from cryores.masking import dilate

from .simulate import fourier_filter

KINDS = ("raw", "deposit", "lowpass", "noisier")


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


def sharpen(density: np.ndarray, voxel: float, bfactor: float) -> np.ndarray:
    """Amplitudes x exp(-B s²/4) (B < 0 sharpens, as RELION)."""
    frequency = spatial_frequency(density.shape, (voxel,) * 3)
    return fourier_filter(density, np.exp(-bfactor * frequency ** 2 / 4.0))


def _mask_like_a_deposit(density: np.ndarray, mask: np.ndarray, voxel: float, rng: np.random.Generator) -> np.ndarray:
    """A soft mask (extended 3-8 Å, soft edge 2-6 Å) or a hard zone (extended 1-4 Å)."""
    if rng.random() < 0.6:
        extended = dilate(mask, (rng.uniform(3.0, 8.0) / voxel,) * 3)
        soft = ndimage.gaussian_filter(extended.astype(np.float32), rng.uniform(1.0, 3.0) / voxel)
        return density * soft
    return np.where(dilate(mask, (rng.uniform(1.0, 4.0) / voxel,) * 3), density, 0.0).astype(np.float32)


def make_variants(density: np.ndarray, truth: np.ndarray, mask: np.ndarray, voxel: float,
                  rng: np.random.Generator) -> list[Variant]:
    """One variant of each kind (see the module docstring) from a simulated map."""
    inside = truth > 0
    d = truth[inside]
    nyquist_margin = 2.2 * voxel
    out = [Variant("raw", density, truth, False, {})]

    x_global = max(float(np.percentile(d, rng.uniform(10, 50))) * rng.uniform(0.95, 1.1), nyquist_margin)
    bfactor = float(rng.uniform(-150.0, 0.0))
    deposit = lowpass(sharpen(density, voxel, bfactor), voxel, x_global)
    deposit = _mask_like_a_deposit(deposit, mask, voxel, rng)
    deposit = deposit * float(10 ** rng.uniform(-2, 2)) + float(rng.uniform(-1, 1))
    out.append(Variant("deposit", deposit, np.where(inside, np.maximum(truth, x_global), 0.0).astype(np.float32),
                       False, {"lowpass": x_global, "bfactor": bfactor}))

    x_cut = float(np.exp(rng.uniform(np.log(max(float(d.min()), nyquist_margin)), np.log(20.0))))
    source = out[int(rng.integers(0, 2))]
    cut = lowpass(source.density, voxel, x_cut)
    out.append(Variant("lowpass", cut, np.where(inside, np.maximum(source.label, x_cut), 0.0).astype(np.float32),
                       False, {"lowpass": x_cut, "from": source.kind}))

    source = out[int(rng.integers(0, 2))]
    spread = float(source.density[inside].std())
    level = float(rng.uniform(0.3, 2.0))
    noisy = source.density + rng.normal(0.0, level * spread, density.shape).astype(np.float32)
    out.append(Variant("noisier", noisy, source.label, True, {"noise": level, "from": source.kind}))
    return out
