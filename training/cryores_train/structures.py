"""Atomic models for simulation: BM5 complexes (receptor + ligand files) and single PDB/mmCIF files.

BM5 ships each complex as ``<ID>_r_b-matched.pdb.gz`` and ``<ID>_l_b-matched.pdb.gz``; they
are combined into one model and share the structure id ``<ID>``. The BM5 files carry a
malformed charge column, so PDB lines are cut to 78 columns before gemmi parses them.
"""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass
from pathlib import Path

import gemmi
import numpy as np
from scipy.spatial import cKDTree

from cryores.errors import CryoResError
from cryores.mrc_io import DensityMap, axis_order, grid_start

_BM5 = re.compile(r"^(?P<id>[0-9A-Za-z]+)_(?P<part>[rl])_[ub]-matched\.pdb(\.gz)?$")
_SUFFIXES = (".pdb", ".ent", ".cif", ".mmcif")


@dataclass
class AtomModel:
    """Atoms as arrays: positions (Å, x/y/z), gemmi elements, and a group id per atom.

    ``group`` numbers rigid parts (a file's chain) for designing flexible domains. The gemmi
    structures are kept to compute densities with per-atom B-factors.
    """

    structure_id: str
    structures: list[gemmi.Structure]
    positions: np.ndarray
    group: np.ndarray

    def atoms(self):
        """Every atom of every structure, in the order of ``positions``."""
        for st in self.structures:
            for chain in st[0]:
                for residue in chain:
                    yield from residue


def _read_text(path: Path) -> str:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", errors="replace") as stream:
        return stream.read()


def read_structure(path: Path) -> gemmi.Structure:
    """One PDB or mmCIF file (gzip allowed), hydrogens and waters removed.

    Raises CryoResError for unreadable files or files without atoms.
    """
    try:
        text = _read_text(path)
        if ".cif" in path.name.lower():
            st = gemmi.make_structure_from_block(gemmi.cif.read_string(text).sole_block())
        else:
            st = gemmi.read_pdb_string("\n".join(line[:78] for line in text.splitlines()))
    except (OSError, RuntimeError, ValueError) as error:
        raise CryoResError(f"structure {path}: unreadable ({error})") from None
    st.remove_hydrogens()
    st.remove_waters()
    st.remove_empty_chains()
    if len(st) == 0 or not any(len(ch) for ch in st[0]):
        raise CryoResError(f"structure {path}: no atoms")
    while len(st) > 1:  # NMR-style ensembles: keep the first model
        del st[1]
    return st


def discover(root: Path) -> dict[str, list[Path]]:
    """Structure id -> its files, for a folder of BM5 pairs and/or single structure files."""
    root = Path(root)
    if not root.exists():
        raise CryoResError(f"structures {root}: no such file or folder")
    files = [root] if root.is_file() else sorted(p for p in root.iterdir() if p.is_file())
    groups: dict[str, list[Path]] = {}
    for path in files:
        match = _BM5.match(path.name)
        if match:
            groups.setdefault(match["id"].upper(), []).append(path)
        elif any(s in path.name.lower() for s in _SUFFIXES):
            groups.setdefault(path.name.split(".")[0].upper(), []).append(path)
    if not groups:
        raise CryoResError(f"structures {root}: no PDB/mmCIF files found")
    return groups


def load_model(structure_id: str, paths: list[Path]) -> AtomModel:
    """Combine the files of one structure into an AtomModel (groups: one per file and chain)."""
    structures = [read_structure(p) for p in sorted(paths)]
    positions, group = [], []
    n_group = 0
    for st in structures:
        for chain in st[0]:
            for residue in chain:
                for atom in residue:
                    positions.append(atom.pos.tolist())
                    group.append(n_group)
            n_group += 1
    return AtomModel(structure_id, structures, np.asarray(positions, dtype=np.float64), np.asarray(group))


def near_atoms(positions: np.ndarray, density_map: DensityMap, radius: float = 2.5) -> np.ndarray:
    """Voxels of ``density_map`` within ``radius`` Å of any atom (positions x/y/z in Å).

    Places the grid in the model's frame from the header (origin, nstart, axis order), the way
    ChimeraX does, so a model fitted to a deposited map lands on its density. Used to measure
    masks against fitted models.
    """
    if density_map.header is not None:
        order, start = axis_order(density_map.header), grid_start(density_map)
    else:
        order, start = (1, 2, 3), (0.0, 0.0, 0.0)
    array_axes = (order[2], order[1], order[0])  # sections, rows, columns along X/Y/Z = 1/2/3
    coordinates = [start[axis - 1] + np.arange(n) * size
                   for n, axis, size in zip(density_map.data.shape, array_axes, density_map.voxel_size)]
    tree = cKDTree(positions[:, [axis - 1 for axis in array_axes]])
    near = np.zeros(density_map.data.shape, dtype=bool)
    grid_rows = np.stack(np.meshgrid(coordinates[1], coordinates[2], indexing="ij"), axis=-1).reshape(-1, 2)
    for i, section in enumerate(coordinates[0]):  # one section at a time: small memory at any box size
        points = np.column_stack([np.full(len(grid_rows), section), grid_rows])
        distance, _ = tree.query(points, distance_upper_bound=radius)
        near[i] = (distance <= radius).reshape(near.shape[1:])
    return near
