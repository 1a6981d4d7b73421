"""ChimeraX commands ``cryores predict``, ``cryores color`` and ``cryores localfsc``.

This is the thin layer that touches ChimeraX: it parses arguments, reads volumes' matrices
and grids, calls cryores, opens results as new volumes, and runs built-in commands. Grid
order conversion, palettes, colour ranges and command text live in the plain, tested modules
``cryores.volume_grid`` and ``cryores.chimerax_script``. Every user mistake, a missing model
and a missing torch/cryores installation become a ChimeraX ``UserError`` (a message in the
log, no traceback).
"""

from __future__ import annotations

import contextlib
import time

import numpy as np
from chimerax.core.commands import (
    BoolArg,
    CmdDesc,
    EnumOf,
    FloatArg,
    IntArg,
    OpenFileNameArg,
    Or,
    StringArg,
    TupleOf,
    run,
)
from chimerax.core.errors import UserError
from chimerax.map import MapArg, MapsArg

from .progress import StatusProgress, accepts_progress_callback

DEFAULT_PALETTE = "turbo"  # same default as cryores.chimerax_script.DEFAULT_PALETTE
MAX_OFF_GRID = 0.5  # fraction of surface points outside the resolution map's box that is refused
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
INSTALL_HINT = ("install it into ChimeraX's own Python (see 'help cryores'), e.g. in a terminal: "
                "ChimeraX -m pip install --user -c /path/to/cryores/chimerax_bundle/constraints-chimerax.txt "
                f"torch --index-url {TORCH_CPU_INDEX}, then the same with /path/to/cryores 'pkginfo>=1.12,<2' "
                "instead of torch and the index")


def import_cryores():
    """Import cryores or raise a UserError that says what is missing and how to install it."""
    try:
        import cryores
        import cryores.chimerax_script  # noqa: F401  (submodules used below)
        import cryores.mrc_io  # noqa: F401
        import cryores.volume_grid  # noqa: F401
    except ImportError as error:
        missing = getattr(error, "name", None) or "cryores"
        what = "PyTorch (torch)" if missing.split(".")[0] == "torch" else f"the Python package {missing!r}"
        raise UserError(f"cryores cannot run: {what} is not installed in ChimeraX's Python; {INSTALL_HINT}") from None
    return cryores


@contextlib.contextmanager
def user_errors(cryores):
    """cryores' one-line errors (bad input, no model) and out-of-memory become ChimeraX UserErrors."""
    try:
        yield
    except cryores.CryoResError as error:
        raise UserError(str(error)) from None
    except MemoryError:
        raise UserError("out of memory; crop the box (e.g. 'volume copy' of a subregion) or bin the map first") \
            from None


def _grid(cryores, volume, role: str, copy: bool = True):
    """(matrix z,y,x as a float32 copy, GridGeometry) of a volume's full-resolution, full-region
    data; with ``copy`` False the matrix is None (only the grid is needed)."""
    matrix = volume.full_matrix()
    data = volume.data
    geometry = cryores.volume_grid.grid_geometry(matrix, data.step, data.origin, f"{role} {volume.atomspec}")
    return (cryores.volume_grid.density_array(matrix) if copy else None), geometry


def open_result(session, array, like, geometry, name: str):
    """Open ``array`` as a new volume on ``like``'s grid, placed where ``like`` is in the scene."""
    from chimerax.map import volume_from_grid_data
    from chimerax.map_data import ArrayGridData

    data = like.data
    grid = ArrayGridData(array, cell_angles=data.cell_angles, rotation=data.rotation, name=name,
                         **geometry.grid_data_arguments())
    volume = volume_from_grid_data(grid, session)
    volume.position = like.scene_position
    return volume


def _progress(function, session, label: str, unit: str):
    """A status-line callback when ``function`` accepts one, else False (no terminal bar)."""
    if not accepts_progress_callback(function):
        return False
    return StatusProgress(lambda text: session.logger.status(text), label, unit)


def _check_covers(volume, locres) -> None:
    """Refuse a resolution map whose box misses most of the surface (wrong origin or grid): its
    points would all take ChimeraX's 'no value' grey."""
    volume.update_drawings()  # without a GUI the surface is computed lazily
    vertices = [s for s in volume.surfaces if s.vertices is not None and len(s.vertices)]
    if not vertices:
        raise UserError(f"{volume.atomspec} has no surface at its current level; lower it with "
                        f"'volume {volume.atomspec} level VALUE'")
    total = outside = 0
    for surface in vertices:
        _, off = locres.interpolated_values(surface.vertices, surface.scene_position, out_of_bounds_list=True)
        total, outside = total + len(surface.vertices), outside + len(off)
    if outside > MAX_OFF_GRID * total:
        raise UserError(f"{100 * outside / total:.0f} % of {volume.atomspec}'s surface lies outside the box of "
                        f"{locres.atomspec}; the resolution map must cover the map (same grid and origin)")


def _color_by(session, cryores, surface, locres, palette: str, color_range, key: bool, values, minimum: float,
              summary=None, check: bool = True) -> tuple[float, float]:
    """Show ``surface`` as a surface and colour it by ``locres`` with built-in commands; surface
    points below ``minimum`` (the smallest defined resolution) sample the mask's outside: grey."""
    script = cryores.chimerax_script
    colors = script.palette_colors(palette)
    if color_range in (None, "auto") and summary is not None:
        chosen = script.range_from_summary(summary)
    else:
        chosen = script.resolve_range(color_range, values)
    run(session, script.surface_command(surface.atomspec))
    if check:  # (a prediction is on its map's grid by construction)
        _check_covers(surface, locres)
    commands = script.coloring_commands(surface.atomspec, locres.atomspec, colors, chosen, key=key,
                                         minimum=minimum)
    for command in commands:
        run(session, command)
    return chosen


def _half_map_average(cryores, half_maps, geometry, volume):
    """The average of two open half maps on ``volume``'s grid: what the network reads instead of a
    masked map whose half maps are not masked (their solvent's noise is its reference)."""
    if len(half_maps) != 2:
        raise UserError(f"give exactly two half maps, e.g. 'cryores predict #1 halfMaps #2,3'; got {len(half_maps)}")
    arrays = []
    for index, half in enumerate(half_maps, start=1):
        array, half_geometry = _grid(cryores, half, f"half map {index}")
        cryores.volume_grid.check_same_grid(geometry, half_geometry, f"half map {index} {half.atomspec}",
                                            f"map {volume.atomspec}")
        arrays.append(array)
    return cryores.mrc_io.average_in_place(*arrays)


def cryores_predict(session, volume, mask=None, half_maps=None, samples: int = 0, device: str = "auto",
                    palette: str = DEFAULT_PALETTE, range=None, key: bool = True, model: str | None = None,
                    lowpass_cut: float | None = None, find_cut: bool = True):
    """Predict local resolution of ``volume`` (or of its two half maps' average, ``half_maps``), open
    it (hidden) on the same grid, colour the surface. ``lowpass_cut``: the Å the map was low-passed
    at, so that nothing reads finer and a map without a noise reference is scaled to it; with
    half maps it only floors their average (``cryores.predict``, ``cryores.cut_scale``).
    ``find_cut``: without a cut, look for it in the spectrum of a map without a noise reference
    (``cryores.cut_finding``); False reads such a map without it."""
    command_start = time.monotonic()
    cryores = import_cryores()
    with user_errors(cryores):
        cryores.chimerax_script.palette_colors(palette)  # fail before a long run, not after
        if range is not None and not isinstance(range, str):
            cryores.chimerax_script.check_range(range)
        if samples < 0 or samples == 1:
            raise cryores.CryoResError(f"samples must be 0 or at least 2, got {samples}")
        # with half maps the map gives only its grid: its own copy would be read for nothing
        density, geometry = _grid(cryores, volume, "map", copy=half_maps is None)
        read = volume.atomspec
        if half_maps is not None:
            density = _half_map_average(cryores, half_maps, geometry, volume)
            read = "the average of " + " and ".join(h.atomspec for h in half_maps)
        mask_array = None
        if mask is not None:
            mask_array, mask_geometry = _grid(cryores, mask, "mask")
            cryores.volume_grid.check_same_grid(geometry, mask_geometry, f"mask {mask.atomspec}",
                                                f"map {volume.atomspec}")
        nz, ny, nx = geometry.shape_zyx
        session.logger.status(f"cryores: local resolution of {read} ({nx}x{ny}x{nz} voxels, "
                              f"device {device}, {samples or 1} pass(es))...", log=True)
        start = time.monotonic()
        result = cryores.predict(density, geometry.voxel_size_zyx, mask_array, model=model, samples=samples,
                                 device=device, lowpass_cut=lowpass_cut, find_cut=find_cut,
                                 scale_to_cut=half_maps is None,  # the deposit's cut only floors the average
                                 progress=_progress(cryores.predict, session, f"cryores {volume.atomspec}", ""))
        elapsed = time.monotonic() - start
        locres = open_result(session, result.resolution, volume, geometry, f"{volume.name} local resolution")
        opened = [locres]
        if result.uncertainty is not None:
            opened.append(open_result(session, result.uncertainty, volume, geometry, f"{volume.name} uncertainty"))
            run(session, cryores.chimerax_script.hide_command(opened[-1].atomspec))
        chosen = _color_by(session, cryores, volume, locres, palette, range, key, result.resolution,
                           float(result.resolution[result.mask].min()), summary=result.summary, check=False)
    total = time.monotonic() - command_start
    read = "" if half_maps is None else f" (read from {read})"
    if lowpass_cut is not None:
        read += f" (low-passed at {lowpass_cut:g} Å: nothing reads finer"
        if result.cut_scale is not None:  # no noise reference: the cut set the map's scale
            read += f"; scaled x{result.cut_scale:.3f} so that its best-resolved fifth reads the cut"
        read += ")"
    elif result.found_cut is not None:  # no noise reference and no cut given: the one in its spectrum
        read += (f" (low-pass cut found in its spectrum: {result.found_cut:.2f} Å; scaled x{result.cut_scale:.3f} "
                 "so that its best-resolved fifth reads it)")
    session.logger.info(f"cryores {volume.atomspec}{read}: {result.summary.line()}; "
                        f"colours {chosen[0]:g}-{chosen[1]:g} Å "
                        f"(grey: outside the mask); model {result.model_name}; prediction {elapsed:.1f} s, "
                        f"command {total:.1f} s; opened " + " and ".join(f"{v.atomspec} ({v.name})" for v in opened))
    session.logger.status("")
    for caution in result.cautions:  # where the map lies beyond what the model was trained on
        session.logger.warning(f"cryores {volume.atomspec}: {caution}")
    return locres


def cryores_color(session, volume, resolution=None, palette: str = DEFAULT_PALETTE, range=None, key: bool = True):
    """Colour ``volume``'s surface by a local-resolution map from any tool."""
    if resolution is None:
        raise UserError("give the local-resolution map, e.g. 'cryores color #1 resolution #2'")
    if resolution is volume:
        raise UserError(f"{volume.atomspec} cannot be coloured by itself; give its local-resolution map")
    cryores = import_cryores()
    with user_errors(cryores):
        values = resolution.full_matrix()
        defined = cryores.chimerax_script.resolution_values(values)
        chosen = _color_by(session, cryores, volume, resolution, palette, range, key, values, float(defined.min()))
    p5, median, p95 = np.percentile(defined, [5, 50, 95])
    session.logger.info(f"cryores color {volume.atomspec} by {resolution.atomspec}: median {median:.2f} Å, "
                        f"5-95 % {p5:.2f}-{p95:.2f} Å over {defined.size} voxels; "
                        f"colours {chosen[0]:g}-{chosen[1]:g} Å (grey: outside the mask)")


def cryores_localfsc(session, half_maps, mask=None, window: float | None = None, color=None,
                     palette: str = DEFAULT_PALETTE, range=None, key: bool = True):
    """Local FSC of two open half maps; the result opens hidden on half map 1's grid.

    The half maps are one MapsArg ("#1 #2", "#1,2"): ChimeraX reads "#1 #2" as one atom spec,
    so two MapArg positionals would never parse.
    """
    if len(half_maps) != 2:
        raise UserError(f"give exactly two half maps, e.g. 'cryores localfsc #1 #2'; got {len(half_maps)}")
    half1, half2 = half_maps
    cryores = import_cryores()
    with user_errors(cryores):
        cryores.chimerax_script.palette_colors(palette)
        first, geometry = _grid(cryores, half1, "half map 1")
        second, geometry2 = _grid(cryores, half2, "half map 2")
        cryores.volume_grid.check_same_grid(geometry, geometry2, f"half map 2 {half2.atomspec}",
                                            f"half map 1 {half1.atomspec}")
        mask_array = None
        if mask is not None:
            mask_array, mask_geometry = _grid(cryores, mask, "mask")
            cryores.volume_grid.check_same_grid(geometry, mask_geometry, f"mask {mask.atomspec}",
                                                f"half map 1 {half1.atomspec}")
        options = {} if window is None else {"window": window}
        session.logger.status(f"cryores: local FSC of {half1.atomspec} and {half2.atomspec}...", log=True)
        start = time.monotonic()
        result = cryores.local_fsc(first, second, geometry.voxel_size_zyx, mask_array,
                                   progress=_progress(cryores.local_fsc, session, "cryores local FSC", "windows"),
                                   **options)
        elapsed = time.monotonic() - start
        locres = open_result(session, result.resolution, half1, geometry, f"{half1.name} local FSC")
        if color is not None:
            defined = cryores.chimerax_script.resolution_values(result.resolution)
            _color_by(session, cryores, color, locres, palette, range, key, result.resolution, float(defined.min()),
                      summary=result.summary if range is None else None)
        else:
            run(session, cryores.chimerax_script.hide_command(locres.atomspec))
    session.logger.info(f"cryores local FSC {half1.atomspec} {half2.atomspec}: {result.summary.line()}; "
                        f"{elapsed:.1f} s; opened {locres.atomspec} ({locres.name})")
    session.logger.status("")
    return locres


_RANGE = Or(EnumOf(("auto", "full")), TupleOf(FloatArg, 2))
_COLORING = [("palette", StringArg), ("range", _RANGE), ("key", BoolArg)]

predict_desc = CmdDesc(
    required=[("volume", MapArg)],
    keyword=[("mask", MapArg), ("half_maps", MapsArg), ("samples", IntArg),
             ("device", EnumOf(("auto", "cpu", "cuda"))), ("model", OpenFileNameArg),
             ("lowpass_cut", FloatArg), ("find_cut", BoolArg)] + _COLORING,
    synopsis="estimate local resolution of a map with cryores and colour its surface")

color_desc = CmdDesc(
    required=[("volume", MapArg)],
    keyword=[("resolution", MapArg)] + _COLORING,
    required_arguments=["resolution"],
    synopsis="colour a map's surface by a local-resolution map")

localfsc_desc = CmdDesc(
    required=[("half_maps", MapsArg)],
    keyword=[("mask", MapArg), ("window", FloatArg), ("color", MapArg)] + _COLORING,
    synopsis="local resolution from two half maps (local FSC) with cryores")

COMMANDS = {
    "cryores predict": (cryores_predict, predict_desc),
    "cryores color": (cryores_color, color_desc),
    "cryores localfsc": (cryores_localfsc, localfsc_desc),
}
