"""``cryores-train rows``: training rows for cryores-v3, one file per simulated sample.

For each (structure, index): simulate a map of one degradation family
(:func:`~cryores_train.simulate.draw_parameters_v3`), make the variants users hold
(:mod:`cryores_train.variants`), and for each variant compute the spectral features exactly as
inference does (automatic mask, :func:`cryores.spectral.compute_features` on the map's own
grid). Feature-grid voxels inside the labelled region become rows: network inputs (the voxel's
features and the map's context, :func:`cryores.spectral.network_inputs`), label (Å) and
whether the label is only a lower bound. Maps are not kept (they are re-made from the seed when
needed), so a sample costs ~100 kB. Finished samples are skipped: a killed run resumes. With
``reference_only`` only the maps whose solvent gives a noise reference keep their rows; with
``cropped`` every variant is Fourier-cropped to a coarser grid first (:func:`~cryores_train.variants.cropped_variant`).

The split is by structure (:func:`split_of`), so no structure is in two splits.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from cryores.errors import CryoResError
from cryores.resample import linear_resample
from cryores.spectral import HAS_REFERENCE, LAYOUTS, compute_features, network_inputs, reference_region

from .labels import resample_label
from .simulate import (
    STEEPNESS,
    draw_parameters_v3,
    run_tasks,
    sample_seed,
    simulate,
    simulate_atom_cliff,
    simulate_regional_lowpass,
)
from .structures import discover, load_model
from .variants import KINDS, LABEL_COVERAGE, crop_size, cropped_variant, make_variants, processing_variants

ROWS_PER_VARIANT = 1500
# The shipped card's rows and calibration took band powers wrapped around the box, as every map was
# read before cryores.box_faces; kept so that `make model` remakes that card. A few simulated maps in
# tight boxes have an automatic mask on their faces (4I39's raw `cliff` map: 5 % of them): a next
# card may set this True, remaking its rows and calibration, so that it trains as it is read.
MIRROR_CUT_FACES = False
FAMILY_SEED_OFFSET = {"bfactor": 0, "cliff": 2000, "lowpass": 1000}  # each family its own draws
FAMILIES = tuple(FAMILY_SEED_OFFSET)
COARSE_SEED_OFFSET = 500  # coarse samples (--coarse) draw apart from the same family's plain ones
CROPPED_SEED_OFFSET = 700  # so do cropped ones (--cropped)
# what --inputs offers: not "features" (the first columns of any rows) nor "percentiles" (the fit
# derives a map's percentiles from its rows' neighbourhood columns: fit_spectral.load_percentile_rows)
ROW_LAYOUTS = tuple(layout for layout in LAYOUTS if layout not in ("features", "percentiles"))


def split_of(structure_id: str) -> str:
    """train / val / test (80/10/10) by a hash of the structure id: stable and disjoint."""
    bucket = int(hashlib.sha256(structure_id.upper().encode()).hexdigest(), 16) % 10
    return "test" if bucket == 0 else "val" if bucket == 1 else "train"


def structures_in_splits(roots: list[Path], splits: tuple[str, ...],
                         limit: int | None = None) -> tuple[dict[str, list[Path]], list[str]]:
    """(every structure's files under ``roots``, the sorted ids of those in ``splits``, the first
    ``limit`` of them): how each command picks its structures, so they agree on which are which."""
    groups: dict[str, list[Path]] = {}
    for root in roots:
        groups.update(discover(Path(root)))
    return groups, [sid for sid in sorted(groups) if split_of(sid) in splits][:limit]


def simulate_family(model, params: dict, seed: int) -> dict[str, np.ndarray]:
    if params["family"] == "lowpass":
        return simulate_regional_lowpass(model, params, seed)
    if params["family"] == "cliff":
        return simulate_atom_cliff(model, params, seed)
    return simulate(model, params, seed)


def sample_parameters(structure_id: str, index: int, seed: int, family: str, sharp_share: float = 0.0,
                      steep_share: float = 0.0, coarse: bool = False, cropped: bool = False) -> dict:
    """The random choices of one v3 sample (cheap: nothing is simulated), the same for the same
    arguments (the shares and ``coarse``: see :func:`~cryores_train.simulate.draw_parameters_v3`;
    ``cropped`` only moves the seed; evaluation and calibration keep the defaults)."""
    if family not in FAMILY_SEED_OFFSET:
        raise CryoResError(f"family {family!r}: not one of {', '.join(FAMILIES)}")
    offset = (FAMILY_SEED_OFFSET[family] + (COARSE_SEED_OFFSET if coarse else 0)
              + (CROPPED_SEED_OFFSET if cropped else 0))
    own_seed = sample_seed(seed + offset, structure_id, index)
    params = draw_parameters_v3(np.random.default_rng(own_seed), family, sharp_share, steep_share, coarse)
    params.update(structure_id=structure_id, index=index, seed=own_seed)
    return params


def simulate_sample(params: dict, paths: list[Path]) -> dict[str, np.ndarray]:
    """The maps of the sample that :func:`sample_parameters` drew (``paths``: its structure's
    files). The simulation's seed is derived here alone, so rows, evaluation and the benchmarks
    all make the same maps from the same choices."""
    return simulate_family(load_model(params["structure_id"], [Path(p) for p in paths]), params, params["seed"] + 1)


def make_sample(structure_id: str, paths: list[Path], index: int, seed: int, family: str,
                sharp_share: float = 0.0, steep_share: float = 0.0):
    """(params, arrays) of one v3 sample: :func:`sample_parameters`, simulated."""
    params = sample_parameters(structure_id, index, seed, family, sharp_share, steep_share)
    return params, simulate_sample(params, paths)


EVALUATION_SEED = 7  # evaluate-v3 (with its --seed 0) and the benchmarks draw their scored maps from this seed
VARIANT_SALT = 5  # scored_maps' default offset of the variants' generator from a sample's seed


def scored_maps(structure_id: str, paths: list[Path], family: str, index: int, seed: int,
                salt: int = VARIANT_SALT) -> tuple[dict, dict, float, list]:
    """(params, arrays, voxel size, [raw, deposited-style variant]) of one sample: the maps the
    evaluation, the calibration and the benchmarks score a model on, mask given.

    ``salt`` offsets the variants' generator from the sample's seed; one function, so every
    caller that names the same (sample, salt) scores the same two maps.
    """
    params, arrays = make_sample(structure_id, paths, index, seed, family)
    voxel = float(params["voxel_size"])
    rng = np.random.default_rng(params["seed"] + salt)
    variants = make_variants(arrays["map"], arrays["truth"], arrays["mask"] > 0.5, voxel, rng)[:2]
    return params, arrays, voxel, variants


def feature_rows(density: np.ndarray, label: np.ndarray, voxel: float, sim_mask: np.ndarray, rows: int,
                 rng: np.random.Generator, layout: str = "context") -> tuple[np.ndarray, np.ndarray]:
    """(network inputs (n, width) float16 in ``layout`` (:func:`cryores.spectral.input_layout`;
    by default the voxel's features and the map's context), labels (n,)) of one map, masked as
    inference would (the simulation's mask only where the automatic one refuses the map)."""
    mask = reference_region(density, (voxel,) * 3, sim_mask)
    features = compute_features(density, (voxel,) * 3, mask, reference=mask, mirror_cut_faces=MIRROR_CUT_FACES)
    grid = features.mask.shape
    grid_label = resample_label(label, None, grid, coverage=LABEL_COVERAGE) if grid != density.shape else label
    keep = grid_label > 0
    index = np.flatnonzero(keep)
    if index.size > rows:
        index = rng.choice(index, rows, replace=False)
    return network_inputs(features, index, layout).astype(np.float16), grid_label.ravel()[index].astype(np.float32)


def refuse_other_width(path: Path, width: int, layout: str, what: str = "rows") -> None:
    """A finished rows file of ``width`` inputs per row, found where rows of ``layout`` are being
    made, is refused (naming it): resumed beside it, the folder would mix widths."""
    if width != LAYOUTS[layout]:
        raise CryoResError(f"{what} {path}: {width} inputs per row, not {LAYOUTS[layout]} (--inputs {layout}); "
                           "write the rows to another folder or delete these")


def refuse_other_flag(path: Path, flag: str, made: bool, wanted: bool) -> None:
    """A finished rows file made with (or without) the switch ``--flag``, found where rows are being
    made the other way, is refused (naming the switch): the folder would mix two kinds of rows."""
    if made != wanted:
        raise CryoResError(f"rows {path}: made {'with' if made else 'without'} --{flag}; "
                           "write the rows to another folder or delete these")


def rows_folder(root: Path, family: str, processing: int = 0, coarse: bool = False, cropped: bool = False) -> Path:
    """Where a family's rows go: ``root/family``, or ``root/family-processing`` for the rows of
    extra deposits only (``--processing``), ``root/family-coarse`` for coarse maps (``--coarse``),
    ``root/family-cropped`` for cropped ones (``--cropped``); a fit lists those under ``more_rows``."""
    return Path(root) / (family + ("-processing" if processing else "") + ("-coarse" if coarse else "")
                         + ("-cropped" if cropped else ""))


def build_sample(task: tuple) -> str:
    (structure_id, paths, index, seed, family, root, sharp_share, steep_share, layout, processing, coarse,
     reference_only, cropped) = task
    path = rows_folder(root, family, processing, coarse, cropped) / f"{structure_id}_{index:03d}.npz"
    params = sample_parameters(structure_id, index, seed, family, sharp_share, steep_share, coarse, cropped)
    if path.is_file():  # finished; but a file of another sharp share or steepness is another sample
        with np.load(path) as data:
            made = float(data["sharp_share"]) if "sharp_share" in data else 0.0
            steepness = float(data["steepness"]) if "steepness" in data else STEEPNESS  # older rows: the default
            width = data["x"].shape[1]
            made_processing = int(data["processing"]) if "processing" in data else 0
            made_coarse = bool(data["coarse"]) if "coarse" in data else False
            made_reference_only = bool(data["reference_only"]) if "reference_only" in data else False
            made_cropped = bool(data["cropped"]) if "cropped" in data else False
        if made != sharp_share:
            raise CryoResError(f"rows {path}: made with --sharp-share {made:g}, not {sharp_share:g}; "
                               "write the rows to another folder or delete these")
        if steepness != params["steepness"]:
            raise CryoResError(f"rows {path}: made at steepness {steepness:g}, where --steep-share {steep_share:g} "
                               f"draws {params['steepness']:g}; write the rows to another folder or delete these")
        refuse_other_width(path, width, layout)
        if made_processing != processing:
            raise CryoResError(f"rows {path}: made with --processing {made_processing}, not {processing}; "
                               "write the rows to another folder or delete these")
        refuse_other_flag(path, "coarse", made_coarse, coarse)
        refuse_other_flag(path, "reference-only", made_reference_only, reference_only)
        refuse_other_flag(path, "cropped", made_cropped, cropped)
        return path.name
    arrays = simulate_sample(params, paths)
    voxel = float(params["voxel_size"])
    rng = np.random.default_rng(params["seed"] + 2)
    blocks = {"x": [], "y": [], "bound": [], "kind": [], "variant": []}
    mask = arrays["mask"] > 0.5
    if processing:  # its own draws: the same map's plain variants stay as they are
        variants = processing_variants(arrays["map"], arrays["truth"], mask, voxel,
                                       np.random.default_rng(params["seed"] + 7), processing)
    else:
        noise = 0.5 * (arrays["half1"] - arrays["half2"])  # the map's noise spectrum, independent of its noise
        variants = make_variants(arrays["map"], arrays["truth"], mask, voxel, rng, signal=arrays["signal"], noise=noise)
    if cropped:  # drawn the way a plain sample draws them; the crop has its own generator
        side, voxel = crop_size(arrays["truth"], voxel, np.random.default_rng(params["seed"] + 11))
        variants = [cropped_variant(variant, side, voxel) for variant in variants]
        mask = linear_resample(mask.astype(np.float32), (side,) * 3) > 0.5
    for number, variant in enumerate(variants):
        # every variant's rows are drawn, kept or not, so the kept ones are those of the full sample
        x, y = feature_rows(variant.density, variant.label, voxel, mask, ROWS_PER_VARIANT, rng, layout)
        if reference_only and not (len(x) and x[0, HAS_REFERENCE] > 0.5):
            continue
        blocks["x"].append(x)
        blocks["y"].append(y)
        blocks["bound"].append(np.full(len(y), variant.lower_bound))
        blocks["kind"].append(np.full(len(y), KINDS.index(variant.kind), dtype=np.int8))
        blocks["variant"].append(np.full(len(y), number, dtype=np.int16))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")  # not *.npz: load_rows never sees a half-written file
    with open(tmp, "wb") as stream:
        np.savez_compressed(stream, **{k: np.concatenate(v) for k, v in blocks.items()},
                            voxel=voxel, structure=structure_id, split=split_of(structure_id),
                            sharp_share=sharp_share, steepness=params["steepness"], processing=processing,
                            coarse=coarse, reference_only=reference_only, cropped=cropped)
    os.replace(tmp, path)
    return path.name


def run_rows(structures: list[Path], output: Path, *, family: str, per_structure: int, seed: int,
             splits: tuple[str, ...], limit: int | None = None, jobs: int | None = None,
             progress: bool = True, sharp_share: float = 0.0, steep_share: float = 0.0,
             layout: str = "context", processing: int = 0, coarse: bool = False,
             reference_only: bool = False, cropped: bool = False) -> list[str]:
    groups, ids = structures_in_splits(structures, splits, limit)
    tasks = [(sid, tuple(str(p) for p in groups[sid]), i, seed, family, str(output), sharp_share, steep_share, layout,
              processing, coarse, reference_only, cropped) for i in range(per_structure) for sid in ids]
    return run_tasks(build_sample, tasks, jobs, f"rows {family}", progress)


def load_rows(folders: Path | list[Path], split: str, variants: bool = False,
              transform: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Every row of one split in ``folders`` (one folder or several: simulated and real-map rows);
    a sample with non-finite features, or with another number of inputs than the rest (rows of an
    older version), is refused, naming its file. ``"variant"`` numbers each map the rows were drawn
    from across all files (:func:`row_variants`); with ``variants`` a file whose maps cannot be told
    apart is refused, naming it.

    ``transform(x, variant)`` (optional) turns one file's inputs into the inputs the caller keeps
    (a file's maps are all in that file); it is called once per file, in load order. Each file's
    result is written straight into one array sized beforehand, so only the kept rows are held
    (a fit's float32 rows beside the float16 ones of 20 M rows would not fit in 24 GB).
    """
    folders = [Path(folders)] if isinstance(folders, (str, Path)) else [Path(f) for f in folders]
    files = [path for folder in folders for path in sorted(folder.glob("*.npz"))]
    chosen = []
    for i, path in enumerate(files):  # first pass: which files, how many rows (x is not read)
        with np.load(path) as data:
            if str(data["split"]) == split:
                chosen.append((i, path, len(data["y"])))
    if not chosen:
        raise CryoResError(f"rows {', '.join(map(str, folders))}: no samples in split {split!r}")
    total = sum(n for _, _, n in chosen)
    blocks: dict[str, list] = {"y": [], "bound": [], "kind": [], "sample": [], "variant": []}
    x, width, first, n_variants, start = None, None, None, 0, 0
    for i, path, n in chosen:
        with np.load(path) as data:
            part = data["x"]
            if not np.isfinite(part).all():  # one NaN row turns every weight into NaN
                raise CryoResError(f"rows {path}: non-finite features; delete the file and make it again")
            if width is not None and part.shape[1] != width:
                raise CryoResError(f"rows {path}: {part.shape[1]} inputs per row where {first.name} has {width} "
                                   "(made by another version); delete the older rows and make them again")
            width, first = part.shape[1], first or path
            variant = row_variants(data, path, strict=variants)
            kept = part if transform is None else transform(part, variant)
            if x is None:
                x = np.empty((total, kept.shape[1]), dtype=kept.dtype)
            x[start:start + n] = kept
            start += n
            for key in ("y", "bound", "kind"):
                blocks[key].append(data[key])
            blocks["sample"].append(np.full(n, i, dtype=np.int32))
            blocks["variant"].append(variant + n_variants)
            n_variants += int(variant.max()) + 1 if variant.size else 0
    return {"x": x, **{k: np.concatenate(v) for k, v in blocks.items()}}


def row_variants(data, path: Path, strict: bool = False) -> np.ndarray:
    """(n,) int32: which of a rows file's maps (variants) each row was drawn from. Files made since
    2026-12-05 say so (key ``variant``); in older ones each map is a run of rows of one kind, which
    holds where no two maps in a row share a kind (the plain variants do). A run longer than
    ROWS_PER_VARIANT is several maps (real-map rows, ``--processing`` rows): with ``strict`` that
    file is refused, else it counts as one."""
    if "variant" in data:
        return np.asarray(data["variant"], dtype=np.int32)
    kind = np.asarray(data["kind"])
    starts = np.concatenate([[0], np.flatnonzero(np.diff(kind)) + 1]) if kind.size else np.zeros(0, np.intp)
    if strict and np.diff(np.append(starts, kind.size)).max(initial=0) > ROWS_PER_VARIANT:
        raise CryoResError(f"rows {path}: several maps of one kind and no variant index (made before "
                           "2026-12-05); delete the file and make it again")
    variant = np.zeros(kind.size, np.int32)
    variant[starts[1:]] = 1
    return np.cumsum(variant, dtype=np.int32)


def register(subparsers) -> None:
    p = subparsers.add_parser("rows", help="v3 training rows: simulate, make variants, spectral features",
                              description=__doc__.splitlines()[0])
    p.add_argument("structures", type=Path, nargs="+", help="folders of PDB/mmCIF files (BM5 pairs combined)")
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("--family", choices=FAMILIES, default="bfactor")
    p.add_argument("--per-structure", type=int, default=1)
    p.add_argument("--splits", default="train,val,test", help="comma-separated splits to make")
    p.add_argument("--limit", type=int, help="only the first N structures (by id) of those splits")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sharp-share", type=float, default=0.0,
                   help="share of bfactor samples with the sharp-boundary 'blocks' design (default 0)")
    p.add_argument("--steep-share", type=float, default=0.0,
                   help="share of bfactor samples whose SNR fall-off steepness is drawn from "
                        "simulate.V3_STEEPNESS instead of the fixed default (default 0)")
    p.add_argument("--inputs", choices=ROW_LAYOUTS, default="context",
                   help="network inputs per row: features and the map's context (default), also the "
                        "neighbourhood gap, or also the gap within a wider reach (cryores.spectral.input_layout)")
    p.add_argument("--processing", type=int, default=0, metavar="N",
                   help="instead of the usual variants, N deposits per map whose cut and sharpening vary apart "
                        "from its resolution (variants.processing_variants), in FAMILY-processing/ (default 0)")
    p.add_argument("--coarse", action="store_true",
                   help="coarse maps: 4-6 Å/px, local resolution 9-30 Å (simulate.RANGES_V3_COARSE), "
                        "in FAMILY-coarse/")
    p.add_argument("--reference-only", action="store_true",
                   help="keep only the rows of maps whose solvent gives a noise reference (raw-like maps); "
                        "the masked and flattened ones are drawn but dropped")
    p.add_argument("--cropped", action="store_true",
                   help="every map Fourier-cropped by 1.2-2x (variants.crop_size) before its rows are drawn, "
                        "labels floored at the new Nyquist, in FAMILY[-processing][-coarse]-cropped/")
    p.add_argument("--jobs", type=int)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=_run)


def _run(args) -> int:
    done = run_rows(args.structures, args.output, family=args.family, per_structure=args.per_structure,
                    seed=args.seed, splits=tuple(args.splits.split(",")), limit=args.limit, jobs=args.jobs,
                    progress=not args.quiet, sharp_share=args.sharp_share,
                    steep_share=args.steep_share, layout=args.inputs, processing=args.processing,
                    coarse=args.coarse, reference_only=args.reference_only, cropped=args.cropped)
    print(f"{len(done)} samples in {rows_folder(args.output, args.family, args.processing, args.coarse, args.cropped)}")
    return 0
