"""``cryores-train real-rows``: lower-bound training rows from real EMDB maps.

Simulators only approximate real maps. What is certain about a real map is an inequality: once
it is low-pass filtered at X Å, nothing finer than X is left anywhere in it, so its local
resolution is at least X everywhere, whatever the map looked like before. Each map gives
``per_map`` variants: cut at X (log-uniform between max(``MIN_CUT_A``, ``NYQUIST_FACTOR`` x
Nyquist) and ``MAX_CUT_A``; half by a brick wall, half by a raised cosine ending at 1/X), then
sometimes white noise (0.1-1 x the map's std inside the mask; noise adds no information) and
sometimes a soft mask on the solvent (deposited-style). Their rows (features exactly as for
simulated samples, :func:`cryores_train.rows.feature_rows`) carry label X as a lower bound.

The maps come from a folder (``training/real_maps``) whose README records their sources; none of
them is one of the evaluation's real maps (``evaluate_v3.REAL_MAPS``), so the real-map checks
stay on maps the model never saw. All rows are in the training split. Finished files are
skipped, so a killed run resumes.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np
from scipy import ndimage

from cryores.errors import CryoResError
from cryores.fourier import spatial_frequency
from cryores.local_filter import raised_cosine
from cryores.masking import automatic_mask
from cryores.mrc_io import read_map

from .rows import ROW_LAYOUTS, ROWS_PER_VARIANT, feature_rows, refuse_other_width
from .simulate import fourier_filter
from .variants import KINDS

MAP_SUFFIXES = (".mrc", ".map", ".mrc.gz", ".map.gz", ".ccp4", ".ccp4.gz")
MIN_CUT_A = 4.0
MAX_CUT_A = 20.0
NYQUIST_FACTOR = 1.5
NOISE_SHARE = 0.5
MASK_SHARE = 0.3


def real_map_files(folder: Path) -> list[Path]:
    """The map files in ``folder`` (by name), or an error naming the folder when it is missing or
    holds none."""
    if not Path(folder).is_dir():
        raise CryoResError(f"{folder}: not a folder of real maps")
    files = sorted(p for p in Path(folder).iterdir() if p.name.lower().endswith(MAP_SUFFIXES))
    if not files:
        raise CryoResError(f"{folder}: no map files ({', '.join(MAP_SUFFIXES)})")
    return files


def map_id(path: Path) -> str:
    """The file name without its map suffix: the id the rows record as their 'structure'."""
    name = path.name
    for suffix in sorted(MAP_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def cut(density: np.ndarray, voxel: tuple[float, float, float], resolution: float, brick_wall: bool) -> np.ndarray:
    """``density`` with nothing finer than ``resolution`` Å: a brick wall at 1/X, or gain 1 up to
    0.85/X falling with a raised cosine to 0 at 1/X. The evaluation's real-map checks
    (``evaluate_v3``) cut their maps with the same brick wall."""
    frequency = spatial_frequency(density.shape, voxel)
    if brick_wall:
        gain = (frequency <= 1.0 / resolution).astype(np.float32)
    else:
        gain = raised_cosine(frequency, 0.85 / resolution, 0.15 / resolution).astype(np.float32)
    return fourier_filter(density, gain)


def lower_bound_variants(density: np.ndarray, voxel: float, count: int,
                         rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray, float, dict]]:
    """``count`` (map, mask, X, note): the map cut at X, sometimes noisier, sometimes masked; none
    when its Nyquist leaves no X between the limits.

    The maps are not resampled to coarser voxels: with only lower bounds there, and few exact
    simulated labels beyond 4 Å/px, a model trained so read real 4-6 Å/px maps at its ceiling.
    """
    low = max(MIN_CUT_A, NYQUIST_FACTOR * 2.0 * voxel)
    if low >= MAX_CUT_A:
        return []
    mask = automatic_mask(density, (voxel,) * 3)
    spread = float(density[mask].std())
    soft = ndimage.gaussian_filter(mask.astype(np.float32), 3.0 / voxel)
    out = []
    for _ in range(count):
        x = float(np.exp(rng.uniform(np.log(low), np.log(MAX_CUT_A))))
        note = {"lowpass": x, "brick_wall": bool(rng.random() < 0.5), "noise": 0.0, "masked": False}
        variant = cut(density, (voxel,) * 3, x, note["brick_wall"])
        if rng.random() < NOISE_SHARE:
            note["noise"] = float(rng.uniform(0.1, 1.0))
            variant = variant + rng.normal(0.0, note["noise"] * spread, variant.shape).astype(np.float32)
        if rng.random() < MASK_SHARE:
            note["masked"] = True
            variant = variant * soft
        out.append((variant.astype(np.float32), mask, x, note))
    return out


def build_real_rows(task: tuple) -> str:
    """Rows of one real map (all its variants) in ``<output>/<map id>.npz``; skipped if present."""
    path, output, per_map, seed, layout = task
    path, output = Path(path), Path(output)
    target = output / f"{map_id(path)}.npz"
    if target.is_file():
        with np.load(target) as data:
            refuse_other_width(target, data["x"].shape[1], layout, "real rows")
        return target.name
    loaded = read_map(path)
    voxel = tuple(float(v) for v in loaded.voxel_size)
    if max(voxel) - min(voxel) > 0.01 * max(voxel):
        raise CryoResError(f"{path}: anisotropic voxels {voxel}; real-map rows need isotropic ones")
    rng = np.random.default_rng([seed, zlib.crc32(map_id(path).encode())])
    blocks: dict[str, list] = {"x": [], "y": [], "bound": [], "kind": [], "variant": []}
    for variant, mask, x, _ in lower_bound_variants(loaded.data.astype(np.float32), voxel[0], per_map, rng):
        label = np.where(mask, np.float32(x), np.float32(0.0))
        features, labels = feature_rows(variant, label, voxel[0], mask, ROWS_PER_VARIANT, rng, layout)
        blocks["x"].append(features)
        blocks["y"].append(labels)
        blocks["bound"].append(np.ones(len(labels), bool))
        blocks["kind"].append(np.full(len(labels), KINDS.index("real"), dtype=np.int8))
        blocks["variant"].append(np.full(len(labels), len(blocks["variant"]), dtype=np.int16))
    if not blocks["y"]:
        raise CryoResError(f"{path}: no cut between {MIN_CUT_A:g} and {MAX_CUT_A:g} Å fits its Nyquist "
                           f"({2 * voxel[0]:.1f} Å)")
    output.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")  # not *.npz: load_rows never sees a half-written file
    with open(tmp, "wb") as stream:
        np.savez_compressed(stream, **{k: np.concatenate(v) for k, v in blocks.items()},
                            voxel=voxel[0], structure=map_id(path), split="train")
    os.replace(tmp, target)
    return target.name


def register(subparsers) -> None:
    p = subparsers.add_parser("real-rows", help="v3 lower-bound rows from real maps cut at X Å",
                              description=__doc__.splitlines()[0])
    p.add_argument("maps", type=Path, help="folder of real maps (training/real_maps)")
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("--per-map", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--inputs", choices=ROW_LAYOUTS, default="context",
                   help="network inputs per row, as for cryores-train rows")
    p.add_argument("--jobs", type=int)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=_run)


def _run(args) -> int:
    from .simulate import run_tasks

    tasks = [(str(p), str(args.output), args.per_map, args.seed, args.inputs) for p in real_map_files(args.maps)]
    done = run_tasks(build_real_rows, tasks, args.jobs, "real rows", not args.quiet)
    print(f"{len(done)} real maps in {args.output}")
    return 0
