"""What the viewer shows, as plain functions that need no GUI (and so are tested directly).

Reading maps, the colour range and the ChimeraX script all come from the cryores core; the
core is imported inside the functions because it imports torch (see ``estimate.py``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..estimate import plain_path

AXES = ("x", "y", "z")
HISTOGRAM_BINS = 30


def read_volume(file_name: str) -> np.ndarray:
    """A map file (Scipion file name, ``:mrc`` allowed) as a float32 array in (z, y, x) order."""
    from cryores.mrc_io import read_map

    return read_map(plain_path(file_name), role="local-resolution map", voxel_size=1.0).data


def defined_values(volume: np.ndarray) -> np.ndarray:
    """The resolution values inside the mask (finite, > 0): 0 marks voxels outside it."""
    from cryores.chimerax_script import resolution_values

    return resolution_values(volume)


def colour_range(volume: np.ndarray) -> tuple[float, float]:
    """Default colour scale: 5-95 % of the values inside the mask, rounded outwards to 0.1 Å."""
    from cryores.chimerax_script import range_from_values

    return range_from_values(volume, "auto")


def central_slices(volume: np.ndarray, axis: str = "z", count: int = 4) -> list[tuple[int, np.ndarray]]:
    """``count`` evenly spaced slices around the box centre along ``axis``, as (index, 2-D array).

    The slices outside the mask are masked (shown blank) so they do not read as "0 Å".
    """
    if axis not in AXES:
        raise ValueError(f"axis must be one of {AXES}, got {axis!r}")
    array_axis = 2 - AXES.index(axis)  # arrays are (z, y, x)
    size = volume.shape[array_axis]
    indices = sorted({int(round(size * (k + 1) / (count + 1))) for k in range(count)})
    slices = []
    for index in (min(max(i, 0), size - 1) for i in indices):
        image = np.take(volume, index, axis=array_axis)
        slices.append((index, np.ma.masked_less_equal(image, 0.0)))
    return slices


def histogram(volume: np.ndarray, bins: int = HISTOGRAM_BINS) -> tuple[np.ndarray, np.ndarray]:
    """Counts and bin edges (Å) of the resolution values inside the mask."""
    return np.histogram(defined_values(volume), bins=bins)


def chimerax_palette(colormap: str, count: int) -> str:
    """A ChimeraX colour list (``#rrggbb:...``) sampling a matplotlib colour map, best Å first."""
    import matplotlib
    from matplotlib.colors import to_hex

    cmap = matplotlib.colormaps[colormap]
    count = max(2, int(count))
    return ":".join(to_hex(cmap(k / (count - 1))) for k in range(count))


def write_chimerax_script(map_file: str, resolution_file: str, script: str | os.PathLike, *,
                          palette: str = "turbo", color_range: tuple[float, float] | None = None) -> Path:
    """Write a ``.cxc`` colouring the map's surface by local resolution (the core's writer).

    color_range None uses the 5-95 % range of the values inside the mask. Overwrites ``script``.
    """
    from cryores.chimerax_script import write_chimerax_script as core_writer

    return core_writer(plain_path(map_file), plain_path(resolution_file), script, palette=palette,
                       color_range=color_range, force=True)
