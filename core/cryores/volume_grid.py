"""Grid bookkeeping between viewer volumes (ChimeraX) and cryores arrays.

ChimeraX hands out a volume as a numpy matrix in (z, y, x) index order with ``step`` (voxel
size) and ``origin`` (Å, position of index 0) in (x, y, z) order. cryores wants one voxel size
per *array* axis, i.e. (z, y, x). Getting this reversal wrong silently gives wrong resolutions
for anisotropic grids, so it lives here, tested, and the ChimeraX layer only passes numbers.
Nothing in this module imports ChimeraX.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import CryoResError

# Two grids are "the same" when steps agree to this relative tolerance and origins to this
# fraction of a voxel: header round-off (float32 cells) must not make a map differ from itself.
STEP_RTOL = 1e-3
ORIGIN_TOL_VOXELS = 0.01


@dataclass(frozen=True)
class GridGeometry:
    """Shape (z, y, x), voxel size (x, y, z) and origin (x, y, z, Å) of a volume's grid."""

    shape_zyx: tuple[int, int, int]
    step_xyz: tuple[float, float, float]
    origin_xyz: tuple[float, float, float]

    @property
    def voxel_size_zyx(self) -> tuple[float, float, float]:
        """Voxel size per array axis, the order :func:`cryores.predict` expects."""
        x, y, z = self.step_xyz
        return (z, y, x)

    def grid_data_arguments(self) -> dict:
        """Keyword arguments that put an array on this grid with ``ArrayGridData``."""
        return {"origin": self.origin_xyz, "step": self.step_xyz}


def _three_floats(values: Sequence[float], what: str) -> tuple[float, float, float]:
    try:
        numbers = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise CryoResError(f"{what} must be 3 numbers, got {values!r}") from None
    if len(numbers) != 3 or not all(np.isfinite(numbers)):
        raise CryoResError(f"{what} must be 3 finite numbers, got {values!r}")
    return numbers  # type: ignore[return-value]


def grid_geometry(matrix: np.ndarray, step_xyz: Sequence[float], origin_xyz: Sequence[float],
                  name: str = "map") -> GridGeometry:
    """Describe the grid of a (z, y, x) matrix with its x, y, z step and origin.

    Raises CryoResError if the matrix is not 3-D, or a step is not a positive finite number
    (e.g. a header voxel size of 0), or the origin is not finite.
    """
    shape = np.shape(matrix)
    if len(shape) != 3 or min(shape) < 1:
        raise CryoResError(f"{name} has shape {tuple(shape)}; a 3-D map is needed")
    step = _three_floats(step_xyz, f"{name} voxel size")
    if not all(s > 0 for s in step):
        raise CryoResError(f"{name} has voxel size {step} Å; set it first (e.g. 'volume #1 voxelSize 1.06')")
    origin = _three_floats(origin_xyz, f"{name} origin")
    return GridGeometry(tuple(int(n) for n in shape), step, origin)  # type: ignore[arg-type]


def check_same_grid(grid: GridGeometry, other: GridGeometry, what: str, reference: str = "the map") -> None:
    """Raise CryoResError unless ``other`` has the shape, voxel size and origin of ``grid``.

    Used for masks and half maps, whose voxels must coincide with the map's one to one.
    """
    if other.shape_zyx != grid.shape_zyx:
        raise CryoResError(f"{what} has grid size {other.shape_zyx[::-1]} (x, y, z) but {reference} has "
                           f"{grid.shape_zyx[::-1]}; resample it onto the map first")
    if not np.allclose(other.step_xyz, grid.step_xyz, rtol=STEP_RTOL, atol=0):
        raise CryoResError(f"{what} has voxel size {other.step_xyz} Å but {reference} has {grid.step_xyz} Å")
    tolerance = ORIGIN_TOL_VOXELS * min(grid.step_xyz)
    if not np.allclose(other.origin_xyz, grid.origin_xyz, rtol=0, atol=tolerance):
        raise CryoResError(f"{what} has origin {other.origin_xyz} Å but {reference} has {grid.origin_xyz} Å; "
                           "resample it onto the map first")


def density_array(matrix: np.ndarray) -> np.ndarray:
    """A float32, C-contiguous copy of a viewer's matrix (which may be a read-only view or int8)."""
    return np.array(matrix, dtype=np.float32, order="C", copy=True)
