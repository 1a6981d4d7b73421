"""HDF5 patch datasets for training, split by structure: ``cryores-train dataset``.

Each labelled map (see :mod:`cryores_train.labels`) is optionally resampled to one voxel size
(the map by Fourier cropping/padding, mask and label by trilinear interpolation, exactly like
inference does), cut into cubic patches on a regular grid, and the patches that hold enough
molecule are appended to the split of the map's structure. Only one map is in memory at a time;
patches go to growable, chunked, compressed datasets in small batches.

Layout of the file (N = patches in a split, P = patch side)::

    /            attrs: format="cryores-patches", format_version=1, patch_size, stride,
                        min_mask_fraction, fractions (train, val, test), seed, n_maps,
                        resample_to (Å, NaN = native grid), normalisation="masked-zscore",
                        label_units="angstrom", created (UTC ISO 8601), cryores_version,
                        cryores_train_version
    /train, /val, /test   attrs: n_patches, n_structures, structures (list of ids)
        density       (N,P,P,P) float32   raw density (not normalised)
        label         (N,P,P,P) float32   local resolution in Å, 0 = no value
        mask          (N,P,P,P) uint8     1 = inside the molecular mask
        norm_mean     (N,)      float32   mean of the map inside its mask
        norm_std      (N,)      float32   std of the map inside its mask
        voxel_size    (N,)      float32   Å, of the (resampled) grid the patch was cut from
        origin_index  (N,3)     int32     first voxel of the patch on that grid
        structure_id, label_kind, source, map_path   (N,) UTF-8 strings

Training applies ``(density - norm_mean) / norm_std``: the same masked z-score inference uses
(statistics of the whole map inside its mask, not of the patch). A patch that runs past the far
end of the box is filled with the map's solvent median (density) and 0 (label, mask), as in
inference. Patches whose mask fraction is below ``min_mask_fraction`` (solvent) or that hold no
labelled voxel are dropped. Every split group always exists, possibly with N = 0.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np

import cryores
import cryores_train
from cryores.errors import CryoResError
from cryores.masking import automatic_mask
from cryores.mrc_io import atomic_path, check_output_path
from cryores.normalise import METHOD as NORMALISATION
from cryores.normalise import masked_statistics
from cryores.resample import fourier_resample, linear_resample, shape_for_voxel_size

from .labels import (
    SAMPLE_LABELS,
    LabelledMap,
    LoadedLabelledMap,
    check_entry,
    entries_from_samples,
    load_labelled_map,
    read_manifest,
    resample_label,
)

SPLITS = ("train", "val", "test")
DEFAULT_FRACTIONS = (0.7, 0.15, 0.15)
FORMAT = "cryores-patches"
FORMAT_VERSION = 1
WRITE_BATCH = 16  # patches buffered per split before a write: bounds memory to a few MB
COMPRESSION = "gzip"
COMPRESSION_LEVEL = 4


# ---------------------------------------------------------------------------- split

def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    values = tuple(float(f) for f in fractions)
    if len(values) != 3 or not all(np.isfinite(v) and v >= 0 for v in values):
        raise CryoResError(f"split fractions {fractions} must be three non-negative numbers (train, val, test)")
    if values[0] <= 0 or abs(sum(values) - 1.0) > 1e-6:
        raise CryoResError(f"split fractions {fractions} must sum to 1 with a positive train fraction")
    return values


def _split_counts(n: int, fractions: tuple[float, float, float]) -> list[int]:
    """Structures per split: largest remainders, then one for every wanted split when n allows."""
    exact = [n * f for f in fractions]
    counts = [math.floor(x) for x in exact]
    by_remainder = sorted(range(3), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    wanted = [i for i in range(3) if fractions[i] > 0]
    if n >= len(wanted):
        for i in wanted:
            if counts[i] == 0:
                donor = max(range(3), key=lambda j: (counts[j], -j))
                counts[donor] -= 1
                counts[i] += 1
    return counts


def _hash_key(structure_id: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{structure_id}".encode()).hexdigest()


def split_by_structure(structure_ids: Iterable[str], fractions: Sequence[float] = DEFAULT_FRACTIONS,
                       seed: int = 0) -> dict[str, str]:
    """Assign every distinct structure id to 'train', 'val' or 'test'.

    Deterministic for a seed, whatever the order or repetition of the ids: structures are
    ordered by a seeded SHA-256 of their id and cut by counts from ``fractions`` (largest
    remainders; with at least as many structures as non-empty splits, each gets one). Raises
    CryoResError for fractions that are not three non-negative numbers summing to 1.
    """
    fractions = _check_fractions(fractions)
    unique = sorted(set(structure_ids), key=lambda s: _hash_key(s, seed))
    counts = _split_counts(len(unique), fractions)
    assignment = {}
    start = 0
    for split, count in zip(SPLITS, counts):
        for structure in unique[start:start + count]:
            assignment[structure] = split
        start += count
    return assignment


# ---------------------------------------------------------------------------- patches

def patch_starts(length: int, patch_size: int, stride: int) -> list[int]:
    """Starts 0, stride, 2·stride, ... up to the first patch that reaches the end of the axis."""
    starts = [0]
    while starts[-1] + patch_size < length:
        starts.append(starts[-1] + stride)
    return starts


def patch_grid(shape: tuple[int, ...], patch_size: int, stride: int) -> Iterator[tuple[int, int, int]]:
    """Every patch start (3 indices) of a regular grid covering ``shape``."""
    axes = [patch_starts(n, patch_size, stride) for n in shape]
    for i in axes[0]:
        for j in axes[1]:
            for k in axes[2]:
                yield i, j, k


def cut_patch(volume: np.ndarray, start: tuple[int, int, int], patch_size: int, fill: float) -> np.ndarray:
    """A ``patch_size``³ copy of ``volume`` from ``start``, filled with ``fill`` past the box end."""
    region = tuple(slice(s, min(s + patch_size, n)) for s, n in zip(start, volume.shape))
    piece = volume[region]
    if piece.shape == (patch_size,) * 3:
        return np.array(piece)
    out = np.full((patch_size,) * 3, fill, dtype=volume.dtype)
    out[tuple(slice(0, n) for n in piece.shape)] = piece
    return out


# ---------------------------------------------------------------------------- one map

@dataclass
class PreparedMap:
    """A labelled map on the grid patches are cut from, with its normalisation statistics."""

    density: np.ndarray
    label: np.ndarray
    mask: np.ndarray
    voxel_size: float
    norm_mean: float
    norm_std: float
    pad_value: float


def prepare_map(loaded: LoadedLabelledMap, resample_to: float | None) -> PreparedMap:
    """Resample (if asked) and compute the masked statistics of one loaded map."""
    density, label, mask = loaded.density.data, loaded.label, loaded.mask
    voxel = loaded.density.voxel_size
    if resample_to is not None:
        grid = shape_for_voxel_size(density.shape, voxel, resample_to)
        if grid != density.shape:
            fine = linear_resample(mask.astype(np.float32), grid)
            new_mask = fine >= 0.5 if (fine >= 0.5).any() else fine > 0
            label = resample_label(label, new_mask, grid)
            voxel = tuple(n * v / m for n, v, m in zip(density.shape, voxel, grid))
            density, mask = fourier_resample(density, grid), new_mask
    # Normalise as inference does without a user mask: with the automatic mask's statistics.
    try:
        norm_mask = automatic_mask(density, (float(np.mean(voxel)),) * 3)
    except CryoResError:
        norm_mask = mask
    mean, std = masked_statistics(density, norm_mask)
    pad_value = float(np.median(density[~norm_mask])) if not norm_mask.all() else mean
    return PreparedMap(density, label, mask, float(np.mean(voxel)), mean, std, pad_value)


# ---------------------------------------------------------------------------- HDF5 writing

_VOLUMES = {"density": np.float32, "label": np.float32, "mask": np.uint8}
_SCALARS = {"norm_mean": np.float32, "norm_std": np.float32, "voxel_size": np.float32}
_STRINGS = ("structure_id", "label_kind", "source", "map_path")


def _create_split(group: h5py.Group, patch_size: int) -> None:
    """Empty growable datasets of one split, one patch per chunk, compressed."""
    cube = (patch_size,) * 3
    for name, dtype in _VOLUMES.items():
        group.create_dataset(name, shape=(0,) + cube, maxshape=(None,) + cube, dtype=dtype, chunks=(1,) + cube,
                             compression=COMPRESSION, compression_opts=COMPRESSION_LEVEL, shuffle=True)
    for name, dtype in _SCALARS.items():
        group.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dtype, chunks=(1024,))
    group.create_dataset("origin_index", shape=(0, 3), maxshape=(None, 3), dtype=np.int32, chunks=(1024, 3))
    for name in _STRINGS:
        group.create_dataset(name, shape=(0,), maxshape=(None,), dtype=h5py.string_dtype(), chunks=(1024,),
                             compression=COMPRESSION)


@dataclass
class _Buffer:
    """Patches of one split waiting to be appended."""

    rows: dict = field(default_factory=lambda: {name: [] for name in
                                                 (*_VOLUMES, *_SCALARS, "origin_index", *_STRINGS)})

    def __len__(self) -> int:
        return len(self.rows["density"])


class PatchWriter:
    """Appends patches to the split groups of an open HDF5 file in batches of ``WRITE_BATCH``."""

    def __init__(self, h5: h5py.File, patch_size: int):
        self.h5 = h5
        self.buffers = {split: _Buffer() for split in SPLITS}
        self.counts = dict.fromkeys(SPLITS, 0)
        for split in SPLITS:
            _create_split(h5.create_group(split), patch_size)

    def add(self, split: str, values: dict) -> None:
        """Queue one patch; ``values`` has one entry per dataset name of a split group."""
        buffer = self.buffers[split]
        for name, rows in buffer.rows.items():
            rows.append(values[name])
        if len(buffer) >= WRITE_BATCH:
            self.flush(split)

    def flush(self, split: str | None = None) -> None:
        """Write queued patches (of one split, or of all) to the file."""
        for name in SPLITS if split is None else (split,):
            buffer = self.buffers[name]
            if not len(buffer):
                continue
            group, start, n = self.h5[name], self.counts[name], len(buffer)
            for key, rows in buffer.rows.items():
                dataset = group[key]
                dataset.resize(start + n, axis=0)
                dataset[start:start + n] = np.stack(rows) if key in _VOLUMES or key == "origin_index" else rows
            self.counts[name] += n
            self.buffers[name] = _Buffer()


def _write_map_patches(writer: PatchWriter, split: str, prepared: PreparedMap, entry: LabelledMap,
                       patch_size: int, stride: int, min_mask_fraction: float) -> tuple[int, int]:
    """Cut, filter and queue the patches of one map; return (kept, dropped)."""
    kept = dropped = 0
    for start in patch_grid(prepared.density.shape, patch_size, stride):
        mask = cut_patch(prepared.mask, start, patch_size, False)
        label = cut_patch(prepared.label, start, patch_size, 0.0)
        if mask.mean() < min_mask_fraction or not (label > 0).any():
            dropped += 1
            continue
        writer.add(split, {
            "density": cut_patch(prepared.density, start, patch_size, prepared.pad_value),
            "label": label, "mask": mask.astype(np.uint8), "norm_mean": prepared.norm_mean,
            "norm_std": prepared.norm_std, "voxel_size": prepared.voxel_size,
            "origin_index": np.asarray(start, dtype=np.int32), "structure_id": entry.structure_id,
            "label_kind": entry.label_kind, "source": entry.source, "map_path": str(entry.map)})
        kept += 1
    return kept, dropped


# ---------------------------------------------------------------------------- build

@dataclass
class DatasetSummary:
    """What :func:`build_dataset` wrote: patches and structures per split."""

    path: Path
    patches: dict[str, int]
    structures: dict[str, int]
    n_maps: int
    dropped: int

    def line(self) -> str:
        parts = ", ".join(f"{s} {self.patches[s]} ({self.structures[s]} structures)" for s in SPLITS)
        return (f"{sum(self.patches.values())} patches from {self.n_maps} maps: {parts}; "
                f"{self.dropped} solvent or unlabelled patches dropped -> {self.path}")


def _check_options(patch_size: int, stride: int, min_mask_fraction: float, resample_to: float | None) -> None:
    if patch_size < 1 or stride < 1:
        raise CryoResError(f"patch size {patch_size} and stride {stride} must be positive")
    if not 0.0 <= min_mask_fraction <= 1.0:
        raise CryoResError(f"minimum mask fraction {min_mask_fraction} must lie in [0, 1]")
    if resample_to is not None and not (np.isfinite(resample_to) and resample_to > 0):
        raise CryoResError(f"voxel size {resample_to} must be a positive number of Å")


def _file_attrs(patch_size: int, stride: int, min_mask_fraction: float, fractions: tuple[float, float, float],
                seed: int, n_maps: int, resample_to: float | None) -> dict:
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "patch_size": patch_size, "stride": stride,
            "min_mask_fraction": min_mask_fraction, "fractions": np.asarray(fractions), "seed": seed,
            "n_maps": n_maps, "resample_to": float("nan") if resample_to is None else float(resample_to),
            "normalisation": NORMALISATION, "label_units": "angstrom",
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "cryores_version": cryores.__version__, "cryores_train_version": cryores_train.__version__}


def _progress(entries: list, enabled: bool):
    if not enabled:
        return entries
    from tqdm import tqdm
    return tqdm(entries, unit="map", desc="dataset", leave=False, dynamic_ncols=True)


def build_dataset(entries: Sequence[LabelledMap], output_h5: str | os.PathLike, *, patch_size: int = 64,
                  stride: int | None = None, min_mask_fraction: float = 0.05, resample_to: float | None = None,
                  fractions: Sequence[float] = DEFAULT_FRACTIONS, seed: int = 0, force: bool = False,
                  progress: bool = False) -> DatasetSummary:
    """Write the HDF5 patch dataset described in this module's docstring; return its summary.

    ``stride`` defaults to ``patch_size`` (no overlap). ``resample_to`` (Å) puts every map on
    that voxel size first. Checks everything it can before reading any map (options, output
    path, files, grid shapes from headers); the file appears only when complete. Raises
    CryoResError for bad options, an existing output without ``force``, missing or mismatched
    inputs, empty masks or constant maps.
    """
    entries = list(entries)
    stride = patch_size if stride is None else stride
    _check_options(patch_size, stride, min_mask_fraction, resample_to)
    fractions = _check_fractions(fractions)
    if not entries:
        raise CryoResError("no labelled maps to build a dataset from")
    inputs = tuple(path for entry in entries for path in entry.files())
    output = check_output_path(output_h5, force=force, role="output", protected=inputs)
    for entry in entries:
        check_entry(entry)
    assignment = split_by_structure((e.structure_id for e in entries), fractions, seed)
    dropped = 0
    try:
        with atomic_path(output) as tmp, h5py.File(tmp, "w") as h5:
            h5.attrs.update(_file_attrs(patch_size, stride, min_mask_fraction, fractions, seed,
                                        len(entries), resample_to))
            writer = PatchWriter(h5, patch_size)
            for entry in _progress(entries, progress):
                prepared = prepare_map(load_labelled_map(entry), resample_to)
                dropped += _write_map_patches(writer, assignment[entry.structure_id], prepared, entry,
                                              patch_size, stride, min_mask_fraction)[1]
                del prepared
            writer.flush()
            structures = _annotate_splits(h5, assignment)
    except OSError as error:
        raise CryoResError(f"cannot write {output}: {error.strerror or error}") from None
    return DatasetSummary(output, dict(writer.counts), structures, len(entries), dropped)


def _annotate_splits(h5: h5py.File, assignment: dict[str, str]) -> dict[str, int]:
    """Record per split group its patch count and structure ids; return structures per split."""
    counts = {}
    for split in SPLITS:
        ids = sorted(s for s, side in assignment.items() if side == split)
        group = h5[split]
        group.attrs["n_patches"] = group["density"].shape[0]
        group.attrs["n_structures"] = len(ids)
        group.attrs["structures"] = ids
        counts[split] = len(ids)
    return counts


# ---------------------------------------------------------------------------- command line

def register(subparsers) -> None:
    """Add the ``dataset`` sub-command."""
    p = subparsers.add_parser(
        "dataset", help="cut labelled maps into an HDF5 patch dataset split by structure",
        description="Patches of (map, label, mask) into HDF5, split 70/15/15 by structure id.")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--samples", metavar="ROOT", help="folder of simulated samples (cryores-train simulate)")
    source.add_argument("--manifest", metavar="CSV",
                        help="CSV with map,label,label_kind,structure_id[,mask][,voxel_size][,source]")
    p.add_argument("--label", choices=SAMPLE_LABELS, default="truth", help="label of the samples (default truth)")
    p.add_argument("-o", "--output", required=True, help="output HDF5 file")
    p.add_argument("--patch-size", type=int, default=64, help="patch side in voxels (default 64)")
    p.add_argument("--stride", type=int, help="distance between patch starts (default: patch size)")
    p.add_argument("--min-mask-fraction", type=float, default=0.05,
                   help="drop patches with less molecule than this (default 0.05)")
    p.add_argument("--voxel-size", type=float, help="resample every map to this voxel size (Å)")
    p.add_argument("--seed", type=int, default=0, help="seed of the structure split (default 0)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    p.add_argument("--quiet", action="store_true", help="no progress bar (the summary line stays)")
    p.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    if args.manifest is not None:
        entries = read_manifest(args.manifest)
    else:
        entries = entries_from_samples(args.samples, args.label)
    summary = build_dataset(entries, args.output, patch_size=args.patch_size, stride=args.stride,
                            min_mask_fraction=args.min_mask_fraction, resample_to=args.voxel_size,
                            seed=args.seed, force=args.force, progress=not args.quiet)
    print(summary.line())
    return 0
