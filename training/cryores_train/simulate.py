"""Simulated cryo-EM maps whose local resolution is known by construction.

Physics of the design. Two half maps share a signal and carry independent noise, so in a
local window the half-map FSC per shell k is ``S(k) / (S(k) + N(k))`` and crosses 0.143 where
the signal-to-noise ratio S/N is 1/6. We make that happen at the designed resolution d(x):

* Noise is stationary, as in a reconstruction, with power ``n(k) = n0 * c(k) * w(k)`` per
  Fourier coefficient: ``n0`` sets the level, ``c(k) = exp(gamma * (k / k_Nyquist)^2)`` the
  colour, and ``w(k) <= 1`` follows the wiggles of the protein spectrum (below).
* ``p(k)`` is the monotone upper envelope of the power of the model's density at a small
  reference B-factor, divided by the protein fraction of the box (the power of "pure
  protein"); ``w(k)`` is the actual power over that envelope. Without ``w`` the SNR would dip
  below 1/6 near 5-7 Å, where protein spectra have a minimum, and FSC would cross there first.
* A window around a point holds a protein fraction ``f`` (the molecular mask averaged over a
  30 Å local-FSC window: the surface has less signal), so with an extra B-factor B its SNR
  is ``f p(k) exp(-B k^2 / 2) / n(k)``: high at low frequency, as in real maps, falling
  monotonically, and equal to 1/6 at k = 1/d when
  ``B = 2 d^2 ln(f p(1/d) / (n(1/d) / 6))``. Every atom gets that B from d and f at its position.
* ``n0`` is drawn below the largest value that gives B >= 8 d^2 for 98 % of atoms, so that the
  SNR falls at least 10x between 1.4 d and d and the FSC crosses 0.143 cleanly (a flat SNR
  near 1/6 lets estimator noise cross early); lone surface atoms (2 %) may get less.

The designed field d(x) looks like real maps: a better core and worse periphery (radial
power law; for v3 half the maps instead get patches with no radial trend), optionally a
flexible domain (one chain or file blurred by 1-4 Å more) and a few worse loops/patches
(Gaussian bumps), clipped to [max(2 Å, 2.2 voxels), 12 Å].

Then what varies in real data is randomised: voxel size 0.6-2.0 Å, box padding, orientation,
noise level and colour, a global sharpening/blurring B applied to all maps, solvent flattening
(30 % of samples), intensity scale and offset. Outputs per sample follow training/README.md.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import shutil
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import gemmi
import numpy as np
import scipy.fft
from scipy import ndimage
from scipy.spatial.transform import Rotation

from cryores.errors import CryoResError
from cryores.fourier import spatial_frequency
from cryores.localfsc import spherical_window
from cryores.masking import dilate
from cryores.mrc_io import DensityMap, write_maps

from .structures import AtomModel, discover, load_model

FSC_WINDOW_A = 30.0
SNR_AT_THRESHOLD = 1.0 / 6.0  # FSC = SNR / (1 + SNR) = 0.143
MAX_RESOLUTION_A = 12.0
STEEPNESS = 8.0  # minimum extra B-factor in units of d^2 (see simulate())
CLIFF_STEP = 1.12  # ratio between the rungs of the per-atom cliff family (simulate_atom_cliff)
CLIFF_DECAY = (0.0, 4.0)  # its extra B in units of d^2
CLIFF_NOISE = (2.5, 25.0)  # its noise: this many times below the 2 %-of-atoms SNR-1/6 level (log-uniform)
MAX_BOX = 256
FILES = ("map.mrc", "half1.mrc", "half2.mrc", "truth.mrc", "mask.mrc")


@dataclass(frozen=True)
class Ranges:
    """Ranges of the random choices (uniform unless said otherwise)."""

    voxel_size: tuple[float, float] = (0.6, 2.0)
    padding: tuple[float, float] = (1.2, 1.6)  # box side / molecule diameter
    core_resolution: tuple[float, float] = (2.0, 4.5)
    periphery_extra: tuple[float, float] = (0.5, 5.0)
    radial_power: tuple[float, float] = (1.0, 3.0)
    domain_probability: float = 0.5
    domain_extra: tuple[float, float] = (1.0, 4.0)
    bumps: tuple[int, int] = (0, 3)
    bump_extra: tuple[float, float] = (0.5, 3.0)
    bump_sigma: tuple[float, float] = (6.0, 12.0)
    noise_factor: tuple[float, float] = (1.0, 3.0)  # largest admissible noise power / n0
    noise_colour: tuple[float, float] = (-1.0, 1.0)
    global_b_probability: float = 0.7
    global_b: tuple[float, float] = (-80.0, 40.0)
    flatten_probability: float = 0.3
    log10_scale: tuple[float, float] = (-2.0, 2.0)


# cryores-v3: what users hold. Voxel sizes 0.5-4 Å (drawn after the core resolution, so the
# map can hold it: 2.2-5 voxels per core resolution), local resolution 1.8-20 Å, smaller boxes.
RANGES_V3 = Ranges(core_resolution=(1.8, 9.0), periphery_extra=(0.5, 10.0), bump_extra=(0.5, 4.0),
                   global_b=(-60.0, 60.0))
V3_RESOLUTION_A = (1.8, 20.0)
V3_VOXEL_A = (0.5, 4.0)
V3_MAX_BOX = 128
# How steeply the SNR falls to 1/6 at the local resolution (minimum extra B in units of d^2). Real
# FSC curves fall from 0.5 to 0.143 over 1.15-1.5x in resolution (about 6-15 in these units); a
# model trained at one steepness reads the spectrum's shape, not its information, and is off by
# 2-4 Å at 4 or 20 (training/README). A share of the samples draws it log-uniformly from this range.
V3_STEEPNESS = (5.0, 20.0)
# Coarse maps (``coarse=True``): old and small-particle deposits at 4-6 Å/px (EMD-1832 is 5.7)
# hold only the bands from 8 Å up. Without them the network extrapolates there (training/README):
# a noisy 5.7 Å/px map read finer than the same map clean. Their own core range, voxel range and
# label clip (the coarsest band is 26 Å, so labels up to 30 Å can still be told apart). They start
# at 4 Å/px, where the plain samples stop, so that at 3-4 Å/px the plain samples' 8-9 Å cores are
# not outnumbered by coarse ones. (That was not what pulled the β-gal map, 3.54 Å/px, published
# median 8.7 Å, from 9.2 to 12.0 Å: from 4 Å/px it still reads 11.5 Å; training/README.)
RANGES_V3_COARSE = Ranges(core_resolution=(9.0, 16.0), periphery_extra=(0.5, 10.0), bump_extra=(0.5, 4.0),
                          global_b=(-60.0, 60.0))
V3_COARSE_VOXEL_A = (4.0, 6.0)
V3_COARSE_RESOLUTION_A = (1.8, 30.0)


def draw_parameters_v3(rng: np.random.Generator, family: str, sharp_share: float = 0.0,
                       steep_share: float = 0.0, coarse: bool = False) -> dict:
    """v3 choices: :data:`RANGES_V3`, a voxel size that suits the core resolution, a family.

    ``family`` is ``"bfactor"`` (per-atom B-factors plus noise, :func:`simulate`),
    ``"cliff"`` (per-atom low-pass plus noise, :func:`simulate_atom_cliff`; same designs) or
    ``"lowpass"`` (regional low-pass plus noise, :func:`simulate_regional_lowpass`; held out).
    ``sharp_share`` of the bfactor samples get the "blocks" design (:func:`blocks_design`, sharp
    boundaries); the rest are split evenly between "patchy" and "radial". The draws are the same
    whatever the share (one uniform number picks the design), so a share of 0 gives the samples
    the evaluation and calibration have always used. Likewise ``steep_share`` of the bfactor
    samples get a ``steepness`` drawn from :data:`V3_STEEPNESS`, the rest :data:`STEEPNESS`; its
    draws come last, so no other choice depends on the share. ``coarse`` draws from
    :data:`RANGES_V3_COARSE`, :data:`V3_COARSE_VOXEL_A` and :data:`V3_COARSE_RESOLUTION_A` instead
    (the same number of draws, so the other choices keep their meaning).
    """
    ranges, voxels, clip = ((RANGES_V3_COARSE, V3_COARSE_VOXEL_A, V3_COARSE_RESOLUTION_A) if coarse else
                            (RANGES_V3, V3_VOXEL_A, V3_RESOLUTION_A))
    params = draw_parameters(rng, ranges)
    core = params["core_resolution"]
    low, high = max(voxels[0], core / 5.0), min(voxels[1], core / 2.2)
    params.update(voxel_size=float(np.exp(rng.uniform(np.log(low), np.log(max(high, low))))),
                  family=family, max_box=V3_MAX_BOX, resolution_clip=list(clip),
                  field_sigma=float(rng.uniform(10.0, 25.0)), noise_snr=float(rng.uniform(0.4, 3.0)))
    pick = rng.random()  # bfactor and cliff families; lowpass has its own
    params["design"] = ("blocks" if pick < sharp_share else
                        "patchy" if pick < sharp_share + 0.5 * (1.0 - sharp_share) else "radial")
    steep, steepness = rng.random(), float(np.exp(rng.uniform(*np.log(V3_STEEPNESS))))
    params["steepness"] = steepness if steep < steep_share and family == "bfactor" else STEEPNESS
    if family == "cliff":  # drawn last, so the other families' draws do not depend on it
        params.update(cliff_decay=float(rng.uniform(*CLIFF_DECAY)),
                      cliff_noise=float(np.exp(rng.uniform(*np.log(CLIFF_NOISE)))))
    return params


def sample_seed(seed: int, structure_id: str, index: int) -> int:
    """A seed for one sample that does not depend on the order samples are made in."""
    return int.from_bytes(np.random.SeedSequence([seed, index, *structure_id.encode()]).generate_state(2).tobytes()[:8],
                          "little") % (2**63)


def draw_parameters(rng: np.random.Generator, ranges: Ranges = Ranges()) -> dict:
    """Every random choice of one sample except those that depend on the structure."""
    u = rng.uniform
    core = u(*ranges.core_resolution)
    return {
        "voxel_size": u(*ranges.voxel_size),
        "padding": u(*ranges.padding),
        "rotation": Rotation.random(random_state=rng).as_quat().tolist(),
        "core_resolution": core,
        "periphery_resolution": core + u(*ranges.periphery_extra),
        "radial_power": u(*ranges.radial_power),
        "domain_extra": u(*ranges.domain_extra) if rng.random() < ranges.domain_probability else 0.0,
        "n_bumps": int(rng.integers(ranges.bumps[0], ranges.bumps[1] + 1)),
        "bump_extra": [u(*ranges.bump_extra) for _ in range(3)],
        "bump_sigma": [u(*ranges.bump_sigma) for _ in range(3)],
        "noise_factor": u(*ranges.noise_factor),
        "noise_colour": u(*ranges.noise_colour),
        "global_b": u(*ranges.global_b) if rng.random() < ranges.global_b_probability else 0.0,
        "flatten": bool(rng.random() < ranges.flatten_probability),
        "scale": 10 ** u(*ranges.log10_scale),
        "offset": u(-1.0, 1.0),
    }


def _frequency(shape: tuple[int, int, int], voxel: float) -> np.ndarray:
    """|k| in 1/Å on an rfft grid, in float64 (the simulator's spectra are float64)."""
    return spatial_frequency(shape, (voxel,) * 3, dtype=np.float64)


def radial_power(volume: np.ndarray, voxel: float) -> tuple[np.ndarray, np.ndarray]:
    """(shell index per rfft coefficient, mean |F|^2 per shell); shells 1/(n voxel) wide."""
    n = volume.shape[0]
    shell = np.rint(_frequency(volume.shape, voxel) * n * voxel).astype(np.int64)
    power = np.abs(scipy.fft.rfftn(volume)) ** 2
    totals = np.bincount(shell.ravel(), weights=power.ravel())
    counts = np.maximum(np.bincount(shell.ravel()), 1)
    return shell, totals / counts


def _density(model: AtomModel, b_factors: np.ndarray, n: int, voxel: float) -> np.ndarray:
    """Electron-scattering density of the model on an n^3 box, array order (z, y, x)."""
    calc = gemmi.DensityCalculatorE()
    calc.d_min = 2 * voxel
    calc.blur = 0.0
    first = True
    for atom, b in zip(model.atoms(), b_factors):
        atom.b_iso = float(b)
    for st in model.structures:
        st.cell = gemmi.UnitCell(n * voxel, n * voxel, n * voxel, 90, 90, 90)
        st.spacegroup_hm = "P 1"
        if first:
            calc.grid.setup_from(st)
            calc.grid.set_size(n, n, n)
            calc.grid.fill(0.0)
            first = False
        calc.add_model_density_to_grid(st[0])
    calc.grid.symmetrize_sum()
    return np.array(calc.grid, copy=True).transpose(2, 1, 0).astype(np.float32)


def _place(model: AtomModel, params: dict) -> tuple[np.ndarray, int, float]:
    """Rotate and centre the atoms in a padded cubic box; returns positions (x, y, z), n, voxel."""
    centred = model.positions - model.positions.mean(axis=0)
    rotated = Rotation.from_quat(params["rotation"]).apply(centred)
    diameter = 2.0 * float(np.linalg.norm(rotated, axis=1).max()) + 8.0
    side = diameter * params["padding"]
    voxel = max(params["voxel_size"], side / params.get("max_box", MAX_BOX))
    n = int(math.ceil(side / voxel / 2.0)) * 2
    positions = rotated + n * voxel / 2.0
    for atom, xyz in zip(model.atoms(), positions):
        atom.pos = gemmi.Position(*xyz)
    return positions, n, voxel


def _grid_coordinates(n: int, voxel: float) -> list[np.ndarray]:
    """Sparse (z, y, x) coordinates in Å of voxel centres of an n^3 box (voxel i at i * voxel)."""
    axis = np.arange(n, dtype=np.float32) * voxel
    return [axis[:, None, None], axis[None, :, None], axis[None, None, :]]


def atom_voxels(positions: np.ndarray, n: int, voxel: float) -> tuple[np.ndarray, ...]:
    """Index (z, y, x arrays) of the voxel nearest each atom of (x, y, z) positions in Å, clipped
    to the n^3 box: ``volume[atom_voxels(...)]`` is the value at every atom."""
    return tuple(np.clip(np.rint(positions[:, ::-1] / voxel).astype(int), 0, n - 1).T)


def molecular_mask(positions: np.ndarray, n: int, voxel: float) -> np.ndarray:
    """Voxels within about 2 Å of the atoms' envelope (no dilation), array order (z, y, x)."""
    occupancy = np.zeros((n, n, n), np.float32)
    index = atom_voxels(positions, n, voxel)
    np.add.at(occupancy, index, 1.0)
    blurred = ndimage.gaussian_filter(occupancy, 1.5 / voxel, mode="constant")
    at_atoms = blurred[index]
    return ndimage.binary_fill_holes(blurred > 0.25 * float(np.median(at_atoms)))


def window_fraction(mask: np.ndarray, voxel: float, diameter: float = FSC_WINDOW_A) -> np.ndarray:
    """Protein fraction seen by a local-FSC window around each voxel (periodic FFT convolution).

    Weighted by the square of local FSC's own taper (:func:`cryores.localfsc.spherical_window`),
    since the FSC sums powers: this is the fraction of the window's signal power that is protein.
    """
    n = mask.shape[0]
    size = min(n - (n % 2), int(np.ceil(diameter / voxel)) + int(np.ceil(diameter / voxel)) % 2)
    taper = spherical_window(size, size / 2.0, max(2.0, 0.15 * size)) ** 2
    kernel = np.zeros(mask.shape, np.float32)
    kernel[:size, :size, :size] = taper / taper.sum()
    kernel = np.roll(kernel, shift=(-(size // 2),) * 3, axis=(0, 1, 2))  # centre at the origin
    product = scipy.fft.rfftn(mask.astype(np.float32)) * scipy.fft.rfftn(kernel)
    return np.clip(scipy.fft.irfftn(product, s=mask.shape), 0.0, 1.0).astype(np.float32)


def patchy_design(positions: np.ndarray, n: int, voxel: float, rng: np.random.Generator) -> np.ndarray:
    """A design with no radial trend, in [0, 1] over the atoms: 3-8 patches (sigma 8-20 Å) centred
    on random atoms, each better or worse. Real maps are often best at the core, but a model that
    learned "far from the centre means worse" would read that prior instead of the evidence."""
    z, y, x = _grid_coordinates(n, voxel)
    field = np.zeros((n, n, n), np.float32)
    for _ in range(int(rng.integers(3, 9))):
        where = positions[int(rng.integers(0, len(positions)))]
        sigma = float(rng.uniform(8.0, 20.0))
        distance2 = (x - where[0]) ** 2 + (y - where[1]) ** 2 + (z - where[2]) ** 2
        field += np.float32(rng.uniform(-1.0, 1.0)) * np.exp(-0.5 * distance2 / sigma ** 2).astype(np.float32)
    at_atoms = field[atom_voxels(positions, n, voxel)]
    low, high = float(at_atoms.min()), float(at_atoms.max())
    return np.clip((field - low) / max(high - low, 1e-6), 0.0, 1.0)


def blocks_design(positions: np.ndarray, n: int, voxel: float, rng: np.random.Generator) -> np.ndarray:
    """A design with sharp boundaries, in [0, 1]: the box cut into 3-8 regions (each voxel goes
    to the nearest of as many random atoms), each region one level, the best 0 and the worst 1.

    The smooth designs rarely put a coarse region right beside a much finer one (real maps have
    such steps where a flexible domain meets a rigid core). Tried against the finer neighbour's
    power that leaks into a coarse voxel: with a share of 0.3 it did not reduce that error, since
    a voxel's own features cannot tell the leak from its own power (training/README).
    """
    z, y, x = _grid_coordinates(n, voxel)
    seeds = positions[rng.choice(len(positions), size=int(rng.integers(3, 9)), replace=False)]
    nearest = np.zeros((n, n, n), np.int8)
    best = np.full((n, n, n), np.inf, np.float32)
    for i, where in enumerate(seeds):
        distance2 = ((x - where[0]) ** 2 + (y - where[1]) ** 2 + (z - where[2]) ** 2).astype(np.float32)
        closer = distance2 < best
        nearest[closer], best[closer] = i, distance2[closer]
    levels = rng.uniform(0.0, 1.0, len(seeds))
    levels[np.argmin(levels)], levels[np.argmax(levels)] = 0.0, 1.0
    return levels.astype(np.float32)[nearest]


def resolution_bounds(params: dict, voxel: float) -> tuple[float, float]:
    """(finest, coarsest) designed resolution in Å: the sample's ``resolution_clip`` (default
    2-12 Å), never finer than 2.2 voxels (a map cannot hold detail near its Nyquist)."""
    low, high = params.get("resolution_clip", (2.0, MAX_RESOLUTION_A))
    return max(low, 2.2 * voxel), high


def designed_resolution(model: AtomModel, positions: np.ndarray, n: int, voxel: float, params: dict,
                        rng: np.random.Generator) -> np.ndarray:
    """The designed local-resolution field d(x) in Å on the whole box, array order (z, y, x)."""
    z, y, x = _grid_coordinates(n, voxel)
    core, edge = params["core_resolution"], params["periphery_resolution"]
    if params.get("design") == "patchy":
        field = core + (edge - core) * patchy_design(positions, n, voxel, rng)
    elif params.get("design") == "blocks":
        field = core + (edge - core) * blocks_design(positions, n, voxel, rng)
    else:
        centre = positions.mean(axis=0)
        radius = np.sqrt((x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2)
        r_max = float(np.percentile(np.linalg.norm(positions - centre, axis=1), 95))
        field = core + (edge - core) * np.clip(radius / r_max, 0, 1.5) ** params["radial_power"]
    if params["domain_extra"] > 0 and model.group.max() > 0:
        chosen = int(rng.integers(0, model.group.max() + 1))
        members = positions[model.group == chosen]
        occupancy = np.zeros((n, n, n), np.float32)
        occupancy[atom_voxels(members, n, voxel)] = 1.0
        weight = ndimage.gaussian_filter(occupancy, 6.0 / voxel)
        field = field + params["domain_extra"] * weight / max(float(weight.max()), 1e-12)
        params["domain_group"] = chosen
    for i in range(params["n_bumps"]):
        where = positions[int(rng.integers(0, len(positions)))]
        sigma = params["bump_sigma"][i]
        distance2 = (x - where[0]) ** 2 + (y - where[1]) ** 2 + (z - where[2]) ** 2
        field = field + params["bump_extra"][i] * np.exp(-0.5 * distance2 / sigma ** 2)
    return np.clip(field, *resolution_bounds(params, voxel)).astype(np.float32)


def _finish(volumes: list[np.ndarray], mask: np.ndarray, field: np.ndarray, voxel: float,
            params: dict) -> tuple[list[np.ndarray], np.ndarray]:
    """What every simulator does last: optional solvent flattening, the random scale and offset
    (the same for every volume given, half maps and signal; the scale comes from the first), and
    the truth (designed field inside the mask, 0 outside)."""
    if params["flatten"]:
        soft = ndimage.gaussian_filter(dilate(mask, (4.0 / voxel,) * 3).astype(np.float32), 1.5 / voxel)
        volumes = [v * soft for v in volumes]
    spread = float(np.std(volumes[0]))
    scale, offset = params["scale"] / max(spread, 1e-12), params["offset"] * params["scale"]
    return [v * scale + offset for v in volumes], np.where(mask, field, 0.0).astype(np.float32)


def fourier_filter(volume: np.ndarray, gain: np.ndarray) -> np.ndarray:
    """``volume`` with its rfft coefficients multiplied by ``gain`` (float32)."""
    return scipy.fft.irfftn(scipy.fft.rfftn(volume) * gain, s=volume.shape).astype(np.float32)


def _noise_model(model: AtomModel, envelope: np.ndarray, n: int, voxel: float, gamma: float):
    """(colour c(k), pure-protein power p(k), wiggles w(k) per rfft coefficient, protein fraction
    of the box, reference B) of the module docstring, from the model's density at a small B."""
    k_nyquist = 0.5 / voxel

    def colour(k):
        return np.exp(gamma * (k / k_nyquist) ** 2)

    b_reference = 10.0 * voxel ** 2
    reference = _density(model, np.full(len(model.positions), b_reference), n, voxel)
    shell, power = radial_power(reference, voxel)
    f_box = float(envelope.mean())

    # The protein spectrum dips near 5-7 Å (between secondary-structure and backbone peaks); with
    # plain noise the local SNR would dip below 1/6 there first and FSC would cross early. The
    # noise follows those dips (power / envelope <= 1), so the SNR falls monotonically.
    envelope_power = np.maximum.accumulate(power[::-1])[::-1]

    def protein_power(k):  # |F|^2 per coefficient of a box full of protein (monotone envelope), 1/Å
        return np.interp(k * n * voxel, np.arange(len(power)), envelope_power) / f_box

    dips = power[shell] / np.maximum(envelope_power[shell], 1e-30)
    return colour, protein_power, dips, f_box, b_reference


def _placed_in_box(model: AtomModel, params: dict):
    """What the per-atom families start from: the atoms placed (:func:`_place`; ``params`` gets the
    box and voxel size), the molecular envelope, the mask (envelope + 2 Å) and each voxel's
    protein fraction in a local-FSC window."""
    positions, n, voxel = _place(model, params)
    params.update(box=n, voxel_size=voxel)
    envelope = molecular_mask(positions, n, voxel)
    return positions, n, voxel, envelope, dilate(envelope, (2.0 / voxel,) * 3), window_fraction(envelope, voxel)


def simulate(model: AtomModel, params: dict, seed: int) -> dict[str, np.ndarray]:
    """Make one sample: map, half maps, designed truth (Å, 0 outside the mask) and mask.

    ``params`` (from :func:`draw_parameters`) is completed in place with what the structure
    decided (box, voxel size actually used, noise level, B-factor range).
    """
    rng = np.random.default_rng(seed)
    positions, n, voxel, envelope, mask, fraction = _placed_in_box(model, params)
    field = designed_resolution(model, positions, n, voxel, params, rng)
    at_atoms = atom_voxels(positions, n, voxel)
    d_atom = field[at_atoms].astype(np.float64)
    f_atom = np.maximum(fraction[at_atoms].astype(np.float64), 1e-3)

    colour, protein_power, dips, f_box, b_reference = _noise_model(model, envelope, n, voxel, params["noise_colour"])

    # B = 2 d^2 ln(A / n0) with A = f p(1/d) / (SNR* c(1/d)). B >= S d^2 (S = the steepness,
    # STEEPNESS unless drawn; at 8 the SNR falls >= 10x between 1.4 d and d, so FSC crosses
    # cleanly) needs n0 <= A exp(-S / 2); 98 % of atoms must allow it.
    allowed = f_atom * protein_power(1.0 / d_atom) / (SNR_AT_THRESHOLD * colour(1.0 / d_atom))
    steepness = params.get("steepness", STEEPNESS)
    n0 = float(np.percentile(allowed, 2)) * math.exp(-steepness / 2.0) / params["noise_factor"]
    b_extra = np.maximum(2.0 * d_atom ** 2 * np.log(allowed / n0), 0.0)
    signal = _density(model, b_reference + b_extra, n, voxel)

    params.update(noise_power=n0, f_box=f_box, b_reference=b_reference,
                  b_extra_percentiles=np.percentile(b_extra, [5, 50, 95]).round(1).tolist(),
                  n_atoms=int(len(positions)))
    return _noisy_outputs(signal, np.sqrt(n0 * colour(_frequency(signal.shape, voxel)) * dips / signal.size),
                          mask, field, voxel, params, rng)


def _noisy_outputs(signal: np.ndarray, noise_gain: np.ndarray, mask: np.ndarray, field: np.ndarray, voxel: float,
                   params: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Two half maps (``signal`` plus noise of amplitude ``noise_gain`` per rfft coefficient),
    the drawn global B on all of them, then :func:`_finish`: the per-atom families' last steps."""
    halves = [signal + fourier_filter(rng.standard_normal(signal.shape, dtype=np.float32), noise_gain)
              for _ in range(2)]
    if params["global_b"]:
        gain = np.exp(-params["global_b"] * _frequency(signal.shape, voxel) ** 2 / 4.0)
        halves = [fourier_filter(h, gain) for h in halves]
        signal = fourier_filter(signal, gain)
    (*halves, signal), truth = _finish([*halves, signal], mask, field, voxel, params)
    return _outputs(halves, signal, truth, mask)


def quantised_levels(field: np.ndarray, step: float, low: float) -> np.ndarray:
    """``field`` rounded to a geometric ladder of ratio ``step`` (in ln), never below ``low``:
    the per-atom cliff family filters each rung once, so its labels are the rungs."""
    rungs = np.exp(np.rint(np.log(field) / math.log(step)) * math.log(step))
    return np.maximum(rungs, low).astype(np.float32)


def simulate_atom_cliff(model: AtomModel, params: dict, seed: int) -> dict[str, np.ndarray]:
    """The third degradation family (trained on): each atom's own information ends at its d.

    The designed field (the ``bfactor`` family's designs) is rounded to rungs ``CLIFF_STEP``
    apart; the atoms of each rung are rendered alone with B = 10 voxel² + ``cliff_decay`` d²
    (0-4: from no fall-off to a gentle one) and low-passed at the rung (gain 1 up to 1/d,
    raised cosine to 0 at 1.05/d), and the rungs are summed. So the SNR stays high up to d and
    drops to nothing beyond it, where the ``bfactor`` family's falls smoothly to 1/6 at d: the
    model must find where the signal ends, not extrapolate its fall-off. Stationary noise of the
    simulator's colour and wiggles is set ``cliff_noise`` (2.5-25x) below the level where 2 % of
    atoms would have an SNR under 1/6 at their d, so 98 % of atoms keep an SNR >= 0.4 up to the
    cliff and the information ends there, not before (with a flat SNR near 1/6, half-map FSC crosses
    early). Half-map local FSC reads these maps too fine where the SNR is high: its 30 Å window
    mixes finer atoms' signal in, as on the held-out family; the label is each atom's cliff.
    Unlike the held-out ``lowpass`` family (a smooth random field, the whole map filtered voxel
    by voxel), the filtering is per atom and the designs are radial or patchy (or blocks, with
    ``sharp_share``). Every atom is drawn in its rung at the file's own occupancy, as the noise
    level is set from (before 2026-12-05 at full occupancy, so alternate conformers overlapped).
    """
    from cryores.local_filter import raised_cosine

    rng = np.random.default_rng(seed)
    positions, n, voxel, envelope, mask, fraction = _placed_in_box(model, params)
    field = quantised_levels(designed_resolution(model, positions, n, voxel, params, rng), CLIFF_STEP,
                             resolution_bounds(params, voxel)[0])
    at_atoms = atom_voxels(positions, n, voxel)
    d_atom = field[at_atoms].astype(np.float64)
    f_atom = np.maximum(fraction[at_atoms].astype(np.float64), 1e-3)
    colour, protein_power, dips, f_box, b_reference = _noise_model(model, envelope, n, voxel, params["noise_colour"])

    decay = params["cliff_decay"]
    k = _frequency((n, n, n), voxel)
    atoms = list(model.atoms())
    occupancy = [atom.occ for atom in atoms]
    signal = np.zeros((n, n, n), np.float32)
    try:
        for rung in np.unique(d_atom):
            chosen = d_atom == rung
            for atom, occ, on in zip(atoms, occupancy, chosen):
                atom.occ = occ if on else 0.0  # at the file's own occupancy (alternate conformers share)
            rendered = _density(model, np.full(len(atoms), b_reference + decay * rung ** 2), n, voxel)
            signal += fourier_filter(rendered, raised_cosine(k, 1.0 / rung, 0.05 / rung))
    finally:  # the model is cached between samples
        for atom, occ in zip(atoms, occupancy):
            atom.occ = occ
    # SNR at d of an atom: f p(1/d) exp(-decay / 2) / n(1/d) (the rung's B at k = 1/d).
    allowed = f_atom * protein_power(1.0 / d_atom) * math.exp(-decay / 2.0) / (SNR_AT_THRESHOLD * colour(1.0 / d_atom))
    n0 = float(np.percentile(allowed, 2)) / params["cliff_noise"]
    params.update(noise_power=n0, f_box=f_box, b_reference=b_reference, n_atoms=int(len(positions)),
                  rungs=int(np.unique(d_atom).size))
    return _noisy_outputs(signal, np.sqrt(n0 * colour(k) * dips / signal.size), mask, field, voxel, params, rng)


def _outputs(halves: list[np.ndarray], signal: np.ndarray, truth: np.ndarray,
             mask: np.ndarray) -> dict[str, np.ndarray]:
    """A simulator's outputs; ``signal`` is the noiseless map, under the same filters, flattening,
    scale and offset as the halves (variants re-noise it)."""
    return {"map": 0.5 * (halves[0] + halves[1]), "half1": halves[0], "half2": halves[1],
            "truth": truth, "mask": mask.astype(np.float32), "signal": signal}


def random_field(n: int, voxel: float, params: dict, rng: np.random.Generator) -> np.ndarray:
    """A smooth random local-resolution field (the low-pass family's design, unlike the radial
    one): Gaussian noise smoothed at ``field_sigma`` Å, ranked onto [core, periphery]."""
    noise = ndimage.gaussian_filter(rng.standard_normal((n, n, n)).astype(np.float32), params["field_sigma"] / voxel,
                                    mode="wrap")
    ranks = (np.argsort(np.argsort(noise.ravel())) / (noise.size - 1)).reshape(noise.shape).astype(np.float32)
    core, edge = params["core_resolution"], params["periphery_resolution"]
    return np.clip(core + (edge - core) * ranks ** 1.5, *resolution_bounds(params, voxel)).astype(np.float32)


def simulate_regional_lowpass(model: AtomModel, params: dict, seed: int) -> dict[str, np.ndarray]:
    """The held-out degradation family: information removed region by region, then noise.

    The density (small uniform B) is low-passed voxel by voxel at a smooth random field d(x)
    with :func:`cryores.local_filter.filter_map` (nothing beyond d survives), then stationary
    noise is added, coloured like the simulator's, at a level where the SNR at the core's
    resolution is ``noise_snr`` (>= 0.4: half maps keep FSC above 0.143 up to d everywhere). Half maps
    carry independent noise. Same outputs as :func:`simulate`.
    """
    from cryores.local_filter import filter_map

    rng = np.random.default_rng(seed)
    positions, n, voxel = _place(model, params)
    params.update(box=n, voxel_size=voxel)
    envelope = molecular_mask(positions, n, voxel)
    mask = dilate(envelope, (2.0 / voxel,) * 3)
    field = random_field(n, voxel, params, rng)
    density = _density(model, np.full(len(positions), 10.0 * voxel ** 2), n, voxel)
    signal = filter_map(density, field, (voxel,) * 3).density.astype(np.float32)
    _, power = radial_power(density, voxel)
    k = _frequency(signal.shape, voxel)
    core = max(float(field[mask].min()), 2.2 * voxel)
    signal_at_core = float(np.interp(n * voxel / core, np.arange(len(power)), power))
    colour = np.exp(params["noise_colour"] * (k * 2 * voxel) ** 2)
    n0 = signal_at_core / params["noise_snr"] / math.exp(params["noise_colour"] * (2.0 * voxel / core) ** 2)
    gain = np.sqrt(2.0 * n0 * colour / signal.size)  # half maps: twice the noise of their mean
    halves = [signal + fourier_filter(rng.standard_normal(signal.shape, dtype=np.float32), gain) for _ in range(2)]
    (*halves, signal), truth = _finish([*halves, signal], mask, field, voxel, params)
    params.update(noise_power=n0, n_atoms=int(len(positions)))
    return _outputs(halves, signal, truth, mask)


def write_sample(folder: Path, arrays: dict[str, np.ndarray], params: dict) -> None:
    """Write a sample folder atomically: into a hidden temporary folder, then rename."""
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    voxel = float(params["voxel_size"])
    like = DensityMap(arrays["map"], (voxel,) * 3)
    # float16 (int8 for the mask) keeps a sample at 40 % of float32's size; the noise is far
    # above float16's 1e-3 relative precision and the truth needs 0.01 Å.
    write_maps([(tmp / f"{name}.mrc", arrays[name], f"cryores-train simulate {name}") for name in
                ("map", "half1", "half2", "truth", "mask")], like,
               dtypes={"map.mrc": np.float16, "half1.mrc": np.float16, "half2.mrc": np.float16,
                       "truth.mrc": np.float16, "mask.mrc": np.int8})
    (tmp / "params.json").write_text(json.dumps(params, indent=1, default=float) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)


@lru_cache(maxsize=4)
def _cached_model(structure_id: str, paths: tuple[Path, ...]) -> AtomModel:
    return load_model(structure_id, list(paths))


def make_sample(task: tuple[str, tuple[Path, ...], int, int, str]) -> str:
    """Worker: simulate and write one sample unless it is finished. Returns its id."""
    structure_id, paths, index, seed, root = task
    sample_id = f"{structure_id}_{index:03d}"
    folder = Path(root) / sample_id
    if (folder / "params.json").is_file():
        return sample_id
    own_seed = sample_seed(seed, structure_id, index)
    rng = np.random.default_rng(own_seed)
    params = draw_parameters(rng)
    params.update(structure_id=structure_id, sample_id=sample_id, seed=own_seed, master_seed=seed,
                  sources=[p.name for p in paths])
    arrays = simulate(_cached_model(structure_id, paths), params, own_seed + 1)
    write_sample(folder, arrays, params)
    return sample_id


def run_simulation(structures: Path, output: Path, *, per_structure: int = 1, limit: int | None = None,
                   seed: int = 0, jobs: int | None = None, progress: bool = True) -> list[str]:
    """Simulate ``per_structure`` samples for each structure (the first ``limit`` by id).

    Finished samples are skipped, half-written ones redone, so an interrupted run resumes.
    """
    groups = discover(structures)
    ids = sorted(groups)[:limit] if limit else sorted(groups)
    output.mkdir(parents=True, exist_ok=True)
    for stale in output.glob(".*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)
    tasks = [(sid, tuple(groups[sid]), i, seed, str(output)) for sid in ids for i in range(per_structure)]
    return sorted(run_tasks(make_sample, tasks, jobs, "simulate", progress))


def run_tasks(function, tasks: list, jobs: int | None, desc: str, progress: bool) -> list:
    """``function`` over ``tasks`` in ``jobs`` spawned processes of one thread each (default: one
    per core), in any order, with a progress bar; the results as they come."""
    from tqdm import tqdm

    jobs = jobs or min(len(tasks), os.cpu_count() or 1)
    done = []
    bar = tqdm(total=len(tasks), unit="sample", desc=desc, disable=not progress)
    if jobs <= 1:
        for task in tasks:
            done.append(function(task))
            bar.update()
    else:
        with multiprocessing.get_context("spawn").Pool(jobs, initializer=_limit_threads) as pool:
            for result in pool.imap_unordered(function, tasks):
                done.append(result)
                bar.update()
    bar.close()
    return done


def _limit_threads() -> None:
    """One thread per worker process: the processes already use every core."""
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


def register(subparsers) -> None:
    """Add the ``simulate`` sub-command."""
    p = subparsers.add_parser("simulate", help="simulate maps with known local resolution",
                              description=__doc__.splitlines()[0])
    p.add_argument("structures", type=Path, help="folder of PDB/mmCIF files (BM5 pairs combined) or one file")
    p.add_argument("-o", "--output", type=Path, required=True, help="folder for the sample folders")
    p.add_argument("--per-structure", type=int, default=1, help="samples per structure (default 1)")
    p.add_argument("--limit", type=int, help="use only the first N structures (sorted by id)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, help="worker processes (default: all cores)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=_run)


def _run(args) -> int:
    if args.per_structure < 1:
        raise CryoResError("--per-structure must be at least 1")
    done = run_simulation(args.structures, args.output, per_structure=args.per_structure, limit=args.limit,
                          seed=args.seed, jobs=args.jobs, progress=not args.quiet)
    print(f"{len(done)} samples in {args.output}")
    return 0
