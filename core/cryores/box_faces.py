"""Maps whose molecule the box cuts: band powers taken on the map mirrored past its faces.

Why: the band powers (:func:`cryores.spectral.local_band_power`) come from the map's Fourier
transform, which treats the box as periodic. A filament, a crop of a larger map or a tight box
puts density on the box's faces, so the periodic map jumps from one face to the opposite one,
and the jump has power in every band: the voxels near the faces read as fine detail. EMD-5168, a
filament reported at 6.6 Å, read 5.5 Å within 10 Å of its faces against 10.3 Å inside. Mirrored
past its faces the map continues without a jump (only its slope turns), so the faces read like
the rest. On simulated maps cut by their box (validation structures, `benchmarks/box_faces.py`)
this brought the MAE within 10 Å of the faces from 1.39 to 1.00 Å (raw) and 1.78 to 1.27 Å
(deposited-style). Maps whose mask stays clear of the faces (all the evaluation's simulated maps)
are read as before: their faces hold solvent, whose jump is noise like the rest of it. The
shipped card was trained and calibrated on wrapped band powers
(training/README.md), so the mirror serves inference only.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

# the mask covers at least this share of the box's outer layer: the box cuts the molecule. The real
# maps cut by their box cover 3.7-10 % (a crop, zones, a filament); of 474 simulated maps two in
# tight boxes reached their faces, a masked deposit grazing one face (0.6 %) and a raw map (5 %)
BOX_FACE_SHARE = 0.02
MIRROR_PAD_A = 32.0  # how far (Å) the map is mirrored past each face: beyond the finer bands' windows


def cut_by_box(region: np.ndarray) -> bool:
    """Whether ``region`` (the mask) covers at least :data:`BOX_FACE_SHARE` of the box's outer
    layer of voxels: the box cuts the molecule."""
    faces = [region[0], region[-1], region[:, 0], region[:, -1], region[:, :, 0], region[:, :, -1]]
    return sum(int(face.sum()) for face in faces) >= BOX_FACE_SHARE * sum(face.size for face in faces)


def read_past_faces(mask: np.ndarray, reference: np.ndarray) -> bool:
    """Whether a map is read mirrored past its faces: where its mask or its reference region (the
    automatic mask, :func:`cryores.spectral.reference_region`) reaches them. The one decision
    both the features and :func:`cryores.predict.predict`'s memory check (the bigger box) read."""
    return cut_by_box(mask | reference)


def mirror_pads(shape: tuple[int, ...], voxel_size: tuple[float, ...]) -> tuple[int, ...]:
    """Voxels to mirror past each face per axis: :data:`MIRROR_PAD_A`, at most the box less one."""
    return tuple(min(n - 1, int(np.ceil(MIRROR_PAD_A / v))) for n, v in zip(shape, voxel_size))


def mirrored(density: np.ndarray, pads: tuple[int, ...]) -> np.ndarray:
    """The map mirrored ``pads`` voxels past each face (the face voxel repeated, then the
    inside in reverse), so it continues without a jump."""
    return np.pad(density, [(p, p) for p in pads], mode="symmetric")


def back_on_grid(values: np.ndarray, padded_grid_voxel: tuple[float, ...], pads: tuple[int, ...],
                 voxel_size: tuple[float, ...], grid: tuple[int, ...],
                 grid_voxel: tuple[float, ...]) -> np.ndarray:
    """``values`` (a field, or a stack of fields along the first axis, on the mirrored map's feature
    grid) read, trilinearly, at the points of the original map's feature ``grid``: the two grids
    share the map's origin, shifted by the pads. The points are worked out once for the stack."""
    axes = [(np.arange(g) * gv + p * v) / pv
            for g, gv, p, v, pv in zip(grid, grid_voxel, pads, voxel_size, padded_grid_voxel)]
    points = np.stack(np.meshgrid(*axes, indexing="ij")).reshape(3, -1)
    fields = values[None] if values.ndim == 3 else values
    out = np.stack([ndimage.map_coordinates(field, points, order=1, mode="nearest").reshape(grid)
                    for field in fields]).astype(np.float32)
    return out[0] if values.ndim == 3 else out
