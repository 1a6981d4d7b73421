"""Local-resolution labels from any source, in one convention, and the lists of labelled maps.

**The convention.** A label is a float32 array on the map's grid holding the local resolution
in Å inside the molecular mask and exactly 0 wherever there is no value (outside the mask, or a
voxel the method left unassigned). Training treats 0 as "no value"; it is never a resolution.

**Conversions per label kind** (what each program writes where it has no value):

* ``resmap`` -- ResMap (``<map>_resmap.mrc``) sets every voxel outside its mask and every voxel
  that failed all its likelihood tests to 100 Å; after up-sampling it clips to at most 100.
  So 100 Å (and anything above) means "unassigned" and becomes 0. Voxels at the mask edge can
  hold blends between a real value and 100 (ResMap's own trilinear up-sampling): a mask that
  is not wider than ResMap's keeps them out.
* ``monores`` -- Xmipp MonoRes (``resolution_monogenic_signal``) starts from a map of zeros and
  writes a resolution only where a frequency was assigned, so unassigned voxels are 0 already;
  its ``--chimera_volume`` variant fills the outside with the median resolution instead. Give the
  mask MonoRes wrote (``--mask_out``) so the filled solvent is cut away.
* ``relion`` -- ``relion_postprocess --locres`` writes ``<out>_locres.mrc`` in Å everywhere its
  sampling spheres reached (solvent included, capped at ``--locres_minres``, 50 Å by default)
  and 0 where no sphere contributed. Needs a molecular mask: without one the automatic mask
  of :mod:`cryores.masking` decides what is molecule.
* ``blocres`` -- Bsoft ``blocres -box`` writes Å inside its ``-Mask`` and the ``-fill`` value
  (default 0) elsewhere; give the same mask when ``-fill`` was not 0.
* ``truth``, ``localfsc``, ``cryores`` -- the designed truth of ``cryores-train simulate``,
  ``cryores localfsc`` and ``cryores predict`` outputs are in the convention already.

Every kind also gets the common cleaning: NaN/Inf and negative values become 0, and everything
outside the mask (when one is known) becomes 0.

**Lists of labelled maps** (:class:`LabelledMap`) come from a CSV manifest
(:func:`read_manifest`) or from finished sample folders (:func:`entries_from_samples`).
Structure ids are compared case-insensitively (stored upper-case), so ``3l08`` and ``3L08`` are
one structure and always land on the same side of a train/validation/test split.
"""

from __future__ import annotations

import csv
import json
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import mrcfile
import numpy as np

from cryores.errors import CryoResError
from cryores.masking import automatic_mask, mask_from_array
from cryores.mrc_io import DensityMap, read_map
from cryores.resample import linear_resample

RESMAP_UNASSIGNED_A = 100.0


def resample_label(label: np.ndarray, mask: np.ndarray | None, shape: tuple[int, int, int],
                   coverage: float = 0.5) -> np.ndarray:
    """A label on another grid, trilinearly, keeping 'no value' out of the average: the label and
    the indicator of labelled voxels are interpolated and divided (normalised convolution), and
    a voxel stays 0 where less than ``coverage`` of its interpolation weight came from labelled
    voxels, or outside ``mask`` (if given)."""
    valid = linear_resample((label > 0).astype(np.float32), shape)
    total = linear_resample(label, shape)
    out = np.zeros(shape, dtype=np.float32)
    keep = valid >= coverage if mask is None else (valid >= coverage) & mask
    out[keep] = total[keep] / valid[keep]
    return out


def _keep(label: np.ndarray) -> np.ndarray:
    return label


def _resmap(label: np.ndarray) -> np.ndarray:
    label[label >= RESMAP_UNASSIGNED_A] = 0.0
    return label


# Kind -> in-place conversion applied after the common cleaning (non-finite/negative -> 0).
CONVERTERS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "truth": _keep,
    "localfsc": _keep,
    "cryores": _keep,
    "resmap": _resmap,
    "monores": _keep,
    "relion": _keep,
    "blocres": _keep,
}
LABEL_KINDS = tuple(CONVERTERS)
SAMPLE_LABELS = ("truth", "localfsc", "resmap")
MANIFEST_REQUIRED = ("map", "label", "label_kind", "structure_id")
MANIFEST_OPTIONAL = ("mask", "voxel_size", "source")


def check_label_kind(kind: str) -> str:
    """Return ``kind`` lower-cased; raise CryoResError naming the known kinds if it is unknown."""
    name = str(kind).strip().lower()
    if name not in CONVERTERS:
        raise CryoResError(f"unknown label kind {kind!r}; known kinds: {', '.join(LABEL_KINDS)}")
    return name


def normalise_structure_id(structure_id: str) -> str:
    """Upper-case, stripped structure id (PDB codes are case-insensitive). Raises if empty."""
    text = str(structure_id).strip().upper()
    if not text:
        raise CryoResError("empty structure id")
    return text


def normalise_label(values: np.ndarray, kind: str, mask: np.ndarray | None = None) -> np.ndarray:
    """Convert a label array of ``kind`` to the convention (float32 Å, 0 = no value); a new array.

    ``mask`` (bool, or > 0.5 inside, same shape) zeroes everything outside it. Raises
    CryoResError for an unknown kind or a mask of another shape.
    """
    convert = CONVERTERS[check_label_kind(kind)]
    label = np.array(values, dtype=np.float32, copy=True)
    label[~np.isfinite(label)] = 0.0
    label[label < 0] = 0.0
    label = convert(label)
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != label.shape:
            raise CryoResError(f"mask has shape {mask.shape} but the label has {label.shape}")
        inside = mask if mask.dtype == bool else mask > 0.5
        label[~inside] = 0.0
    return label


@dataclass(frozen=True)
class LabelledMap:
    """One training example on disk: a map, its label, optionally its mask, and where it came from.

    ``voxel_size`` (Å) overrides the map header when given. Raises CryoResError for an unknown
    label kind or an empty structure id.
    """

    map: Path
    label: Path
    mask: Path | None
    label_kind: str
    structure_id: str
    source: str
    voxel_size: float | None = None

    def __post_init__(self):
        object.__setattr__(self, "label_kind", check_label_kind(self.label_kind))
        object.__setattr__(self, "structure_id", normalise_structure_id(self.structure_id))
        if self.voxel_size is not None and not (np.isfinite(self.voxel_size) and self.voxel_size > 0):
            raise CryoResError(f"{self.map}: voxel size {self.voxel_size} must be a positive number of Å")

    def files(self) -> tuple[Path, ...]:
        """The input files of this entry (map, label, and mask if any)."""
        return tuple(p for p in (self.map, self.label, self.mask) if p is not None)


@dataclass
class LoadedLabelledMap:
    """A :class:`LabelledMap` read into memory: density, label in the convention, boolean mask."""

    entry: LabelledMap
    density: DensityMap
    label: np.ndarray
    mask: np.ndarray


# ---------------------------------------------------------------------------- reading entries

def _grid_shape(path: Path, role: str) -> tuple[int, int, int]:
    """(sections, rows, columns) from the MRC header alone; cheap check before any real work."""
    if not path.is_file():
        raise CryoResError(f"{role} {path}: no such file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with mrcfile.open(path, mode="r", header_only=True, permissive=True) as mrc:
                header = mrc.header
                return int(header.nz), int(header.ny), int(header.nx)
    except (ValueError, OSError, EOFError, AttributeError) as error:
        raise CryoResError(f"{role} {path}: not a readable MRC file ({error})") from None


def check_entry(entry: LabelledMap) -> None:
    """Fail early, from headers only, if a file is missing or the label/mask grid is not the map's."""
    shape = _grid_shape(entry.map, "map")
    for path, role in ((entry.label, "label"), (entry.mask, "mask")):
        if path is None:
            continue
        other = _grid_shape(path, role)
        if other != shape:
            raise CryoResError(f"{role} {path} has grid shape {other} but the map {entry.map} has {shape}")


def load_labelled_map(entry: LabelledMap) -> LoadedLabelledMap:
    """Read map, label and mask of ``entry``; normalise the label to the convention.

    Without a mask file the automatic mask of :mod:`cryores.masking` is used (the same one
    inference uses). Raises CryoResError for unreadable files, shape mismatches or empty masks.
    """
    density = read_map(entry.map, role="map", voxel_size=entry.voxel_size)
    like_voxel = min(density.voxel_size)
    raw_label = read_map(entry.label, role="label", voxel_size=like_voxel).data
    if raw_label.shape != density.data.shape:
        raise CryoResError(f"label {entry.label} has grid shape {raw_label.shape} "
                           f"but the map {entry.map} has {density.data.shape}")
    if entry.mask is not None:
        mask_data = read_map(entry.mask, role="mask", voxel_size=like_voxel).data
        mask = mask_from_array(mask_data, density.data.shape, role=f"mask {entry.mask}")
    else:
        mask = automatic_mask(density.data, density.voxel_size)
    label = normalise_label(raw_label, entry.label_kind, mask)
    return LoadedLabelledMap(entry, density, label, mask)


# ---------------------------------------------------------------------------- manifest (CSV)

def _resolve(folder: Path, text: str) -> Path:
    path = Path(os.path.expanduser(text.strip()))
    return path if path.is_absolute() else folder / path


def _check_columns(path: Path, columns: list[str] | None) -> None:
    if not columns:
        raise CryoResError(f"manifest {path} is empty; it needs a header line "
                           f"{','.join(MANIFEST_REQUIRED)}[,{','.join(MANIFEST_OPTIONAL)}]")
    missing = [c for c in MANIFEST_REQUIRED if c not in columns]
    if missing:
        raise CryoResError(f"manifest {path}: missing column(s) {', '.join(missing)}; "
                           f"required: {', '.join(MANIFEST_REQUIRED)}")
    unknown = [c for c in columns if c not in MANIFEST_REQUIRED + MANIFEST_OPTIONAL]
    if unknown:
        raise CryoResError(f"manifest {path}: unknown column(s) {', '.join(unknown)}; "
                           f"allowed: {', '.join(MANIFEST_REQUIRED + MANIFEST_OPTIONAL)}")


def _entry_from_row(row: dict[str, str], folder: Path) -> LabelledMap:
    """One manifest row as a LabelledMap; files are checked to exist here (not read)."""
    for column in MANIFEST_REQUIRED:
        if not row.get(column):
            raise CryoResError(f"empty {column}")
    voxel_text = row.get("voxel_size") or ""
    try:
        voxel_size = float(voxel_text) if voxel_text else None
    except ValueError:
        raise CryoResError(f"voxel_size {voxel_text!r} is not a number") from None
    entry = LabelledMap(
        map=_resolve(folder, row["map"]), label=_resolve(folder, row["label"]),
        mask=_resolve(folder, row["mask"]) if row.get("mask") else None,
        label_kind=row["label_kind"], structure_id=row["structure_id"],
        source=row.get("source") or row["map"], voxel_size=voxel_size)
    for file, role in zip(entry.files(), ("map", "label", "mask")):
        if not file.is_file():
            raise CryoResError(f"{role} {file}: no such file")
    return entry


def read_manifest(path: str | os.PathLike) -> list[LabelledMap]:
    """Entries of a CSV manifest ``map,label,label_kind,structure_id[,mask][,voxel_size][,source]``.

    Paths are relative to the manifest's folder (absolute ones are kept). An empty ``source``
    becomes the map path as written. Raises CryoResError, naming the line, for a missing or
    unknown column, a missing file, an unknown label kind, a bad voxel size or no rows at all.
    """
    path = Path(path)
    if not path.is_file():
        raise CryoResError(f"manifest {path}: no such file")
    entries = []
    with open(path, newline="", encoding="utf-8-sig") as stream:
        reader = csv.DictReader(stream, skipinitialspace=True)
        columns = [c.strip() for c in reader.fieldnames] if reader.fieldnames else None
        _check_columns(path, columns)
        reader.fieldnames = columns
        for row in reader:
            cleaned = {k: (v or "").strip() for k, v in row.items() if k is not None}
            if not any(cleaned.values()):
                continue
            try:
                entries.append(_entry_from_row(cleaned, path.parent))
            except CryoResError as error:
                raise CryoResError(f"manifest {path} line {reader.line_num}: {error}") from None
    if not entries:
        raise CryoResError(f"manifest {path} lists no maps")
    return entries


# ---------------------------------------------------------------------------- sample folders

def _read_params(params_path: Path) -> dict:
    try:
        params = json.loads(params_path.read_text())
    except (OSError, ValueError) as error:
        raise CryoResError(f"{params_path}: not readable JSON ({error})") from None
    if not isinstance(params, dict) or not params.get("structure_id"):
        raise CryoResError(f"{params_path}: no \"structure_id\"")
    return params


def _sample_entry(folder: Path, label_name: str) -> LabelledMap:
    params = _read_params(folder / "params.json")
    mask = folder / "mask.mrc"
    voxel_size = params.get("voxel_size")
    entry = LabelledMap(map=folder / "map.mrc", label=folder / f"{label_name}.mrc",
                        mask=mask if mask.is_file() else None, label_kind=label_name,
                        structure_id=params["structure_id"], source=folder.name,
                        voxel_size=float(voxel_size) if voxel_size is not None else None)
    for file, role in zip(entry.files(), ("map", "label", "mask")):
        if not file.is_file():
            hint = f" (run `cryores-train label --method {label_name}` first)" if role == "label" else ""
            raise CryoResError(f"sample {folder}: {role} {file.name} is missing{hint}")
    return entry


def entries_from_samples(root: str | os.PathLike, label_name: str = "truth") -> list[LabelledMap]:
    """Entries of every finished sample folder under ``root`` (those with ``params.json``).

    Uses ``map.mrc``, ``<label_name>.mrc`` (kind ``label_name``) and ``mask.mrc`` when present;
    structure id and voxel size come from ``params.json``; the source is the folder name.
    Sorted by folder name. Raises CryoResError if ``root`` is missing, holds no finished sample,
    or a finished sample lacks the label or map.
    """
    root = Path(root)
    if not root.is_dir():
        raise CryoResError(f"sample folder {root}: no such folder")
    if label_name not in SAMPLE_LABELS:
        raise CryoResError(f"unknown sample label {label_name!r}; choose one of {', '.join(SAMPLE_LABELS)}")
    folders = sorted(p.parent for p in root.glob("*/params.json"))
    if not folders:
        raise CryoResError(f"sample folder {root} holds no finished sample (no */params.json)")
    return [_sample_entry(folder, label_name) for folder in folders]
