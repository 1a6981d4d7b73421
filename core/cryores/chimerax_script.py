"""Colouring a map by local resolution in ChimeraX with built-in commands only.

Shared by the ChimeraX bundle (which runs the command strings) and the ``cryores chimerax``
subcommand (which writes them to a ``.cxc`` script for users without the bundle). Everything
here is plain Python: palettes, the colour range, the surface level, the exact command text,
and file-path quoting. Nothing imports ChimeraX.

Conventions: low Å (best) gets the first palette colour, high Å (worst) the last; the colour
range is the 5-95 % range of the resolution inside the mask (non-zero voxels), rounded outwards
to 0.1 Å, so a few extreme voxels do not wash out the colours; ``full`` uses min-max instead.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Union

import numpy as np

from . import __version__
from .errors import CryoResError
from .mrc_io import atomic_path, check_output_path, check_same_grid, default_file_mode, read_map
from .predict import default_output_path
from .summary import ResolutionSummary, summarise

# Colours sampled at 9 even steps from matplotlib's "turbo" (Apache-2.0) and "viridis" (CC0)
# colour maps; "rainbow" is ChimeraX's own built-in rainbow (blue to red).
PALETTES: dict[str, tuple[str, ...]] = {
    "turbo": ("#30123b", "#466be3", "#28bceb", "#32f298", "#a4fc3c", "#eecf3a", "#fb7e21", "#d02f05",
              "#7a0403"),
    "rainbow": ("#0000ff", "#00ffff", "#00ff00", "#ffff00", "#ff0000"),
    "viridis": ("#440154", "#472d7b", "#3b528b", "#2c728e", "#21918c", "#28ae80", "#5ec962", "#addc30",
                "#fde725"),
}
DEFAULT_PALETTE = "turbo"
RANGE_STEP_A = 0.1
RANGE_PERCENTILES = (5.0, 95.0)
# Surface level: the map's surface must lie where the local-resolution map is defined (> 0),
# else vertices sample the 0 outside the mask and take the "best resolution" colour.
LEVEL_SOLVENT_PERCENTILE = 99.9
LEVEL_INSIDE_PERCENTILE = 50.0
DUST_SIZE_VOXELS = 6.0
MAP_ID, LOCRES_ID = 1, 2
# Surface points whose sampled value lies below OUTSIDE_EDGE x the smallest defined resolution
# sample the 0 outside the mask (or mostly so): they are painted neutral grey.
OUTSIDE_COLOR = "#a0a0a0"
OUTSIDE_EDGE = 0.98
# Colour key, in fractions of the window: lower-right, labels below the bar still inside.
KEY_POS = (0.6, 0.1)
KEY_SIZE = (0.35, 0.035)
KEY_FONT_SIZE = 16

ColorRange = Union[tuple, str, None]  # (low, high) in Å, "full", or None for the 5-95 % range

_COLOR_TOKEN = re.compile(r"^[^\s:;\"']+$")
_NEEDS_QUOTES = re.compile(r"[\s;'#]")


# ----------------------------------------------------------------------------- palettes


def palette_colors(palette: str) -> tuple[str, ...]:
    """Colours of a named palette, or of a ChimeraX colour list such as ``blue:white:red``.

    Raises CryoResError for an unknown name or a list with fewer than 2 colours or with
    characters that would break a command line.
    """
    name = palette.strip()
    if name.lower() in PALETTES:
        return PALETTES[name.lower()]
    parts = name.split(":")
    if len(parts) >= 2 and all(_COLOR_TOKEN.match(p) for p in parts):
        return tuple(parts)
    raise CryoResError(f"unknown palette {palette!r}: use {', '.join(PALETTES)} or a colour list such as "
                       "blue:white:red")


def palette_spec(colors: Sequence[str]) -> str:
    """The ChimeraX ``palette`` argument for a colour list: colon-separated, no spaces."""
    return ":".join(colors)


# ----------------------------------------------------------------------------- colour range


def _round_down(value: float) -> float:
    return round(math.floor(value / RANGE_STEP_A + 1e-6) * RANGE_STEP_A, 1)


def _round_up(value: float) -> float:
    return round(math.ceil(value / RANGE_STEP_A - 1e-6) * RANGE_STEP_A, 1)


def _rounded_range(low: float, high: float) -> tuple[float, float]:
    low, high = _round_down(low), _round_up(high)
    if high <= low:  # a uniform map still needs a non-empty colour range
        high = round(low + RANGE_STEP_A, 1)
    return low, high


def check_range(color_range: Sequence[float]) -> tuple[float, float]:
    """Validate an explicit (low, high) range in Å. Raises CryoResError unless 0 <= low < high."""
    try:
        low, high = (float(v) for v in color_range)
    except (TypeError, ValueError):
        raise CryoResError(f"colour range must be two numbers LOW,HIGH in Å, got {color_range!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and 0 <= low < high):
        raise CryoResError(f"colour range must satisfy 0 <= LOW < HIGH (Å), got {low:g},{high:g}")
    return low, high


def parse_range(text: str) -> ColorRange:
    """``"auto"`` -> None, ``"full"`` -> "full", ``"2.5,6"`` -> (2.5, 6.0). CryoResError otherwise."""
    word = text.strip().lower()
    if word in ("auto", ""):
        return None
    if word == "full":
        return "full"
    parts = word.split(",")
    if len(parts) != 2:
        raise CryoResError(f"range must be LOW,HIGH (Å), 'full' or 'auto', got {text!r}")
    return check_range(parts)


def resolution_values(locres: np.ndarray) -> np.ndarray:
    """The defined (finite, > 0) values of a local-resolution map; 0 marks 'outside the mask'.

    Raises CryoResError if there is none.
    """
    values = np.asarray(locres)
    values = values[np.isfinite(values) & (values > 0)]
    if values.size == 0:
        raise CryoResError("the local-resolution map has no positive value (all voxels are 0 or invalid)")
    return values


def range_from_values(locres: np.ndarray, how: str = "auto") -> tuple[float, float]:
    """Colour range from the map's defined values: 5-95 % ("auto") or min-max ("full"), 0.1 Å steps."""
    values = resolution_values(locres)
    if how == "full":
        return _rounded_range(float(values.min()), float(values.max()))
    if how != "auto":
        raise CryoResError(f"range must be 'auto', 'full' or LOW,HIGH, got {how!r}")
    low, high = np.percentile(values, RANGE_PERCENTILES)
    return _rounded_range(float(low), float(high))


def range_from_summary(summary: ResolutionSummary) -> tuple[float, float]:
    """Colour range from a prediction's summary: its 5-95 % range rounded outwards to 0.1 Å."""
    return _rounded_range(summary.p5, summary.p95)


def resolve_range(color_range: ColorRange, locres: np.ndarray) -> tuple[float, float]:
    """Turn None / "full" / (low, high) into numbers, reading the map only when needed."""
    if color_range is None:
        return range_from_values(locres, "auto")
    if isinstance(color_range, str):
        return range_from_values(locres, color_range.lower())
    return check_range(color_range)


# ----------------------------------------------------------------------------- surface level


def choose_level(density: np.ndarray, locres: np.ndarray) -> float | None:
    """A surface threshold for ``density`` whose surface lies inside the defined locres region.

    The level is the higher of (a) the 99.9th percentile of the density outside the region
    shrunk by one voxel (so the surface does not sample the zeros outside the mask, except in
    specks that ``surface dust`` hides) and (b) the median density inside the region (so a
    generous mask does not give a bloated surface). Returns None when the local-resolution map
    is defined almost everywhere (no mask to go by): ChimeraX's own initial level is used then.
    """
    from scipy import ndimage

    if np.shape(density) != np.shape(locres):
        raise CryoResError(f"internal: density {np.shape(density)} and locres {np.shape(locres)} differ")
    defined = np.isfinite(locres) & (locres > 0)
    if defined.mean() > 0.99:
        return None
    core = ndimage.binary_erosion(defined, iterations=1, border_value=0)
    outside = ~core
    if not core.any():
        return None
    solvent_high = float(np.percentile(density[outside], LEVEL_SOLVENT_PERCENTILE))
    inside_typical = float(np.percentile(density[core], LEVEL_INSIDE_PERCENTILE))
    return max(solvent_high, inside_typical)


# ----------------------------------------------------------------------------- command text


def _number(value: float) -> str:
    """Compact, round-trippable enough text for a command argument (4 significant digits)."""
    text = f"{value:.4g}"
    return "0" if text == "-0" else text


def quote_argument(text: str) -> str:
    """Quote a command argument for the ChimeraX parser when it has spaces or special characters.

    Double quotes and backslashes cannot be written safely inside a ChimeraX argument, so
    they are refused with a CryoResError (paths are written with forward slashes first).
    """
    if not text:
        raise CryoResError("empty command argument")
    if any(c in text for c in '"\\\n\r'):
        raise CryoResError(f"cannot write {text!r} in a ChimeraX command (it contains a quote, backslash "
                           "or line break); rename the file")
    return f'"{text}"' if _NEEDS_QUOTES.search(text) else text


def path_argument(path: str | os.PathLike, script_folder: Path | None = None) -> str:
    """A file path for a ChimeraX command: relative to the script folder when the file lies
    inside it (ChimeraX runs a .cxc from its own folder, so the set stays movable), else
    absolute; forward slashes; quoted when needed."""
    path = Path(os.path.abspath(path))
    text = path.as_posix()
    if script_folder is not None:
        folder = Path(os.path.abspath(script_folder))
        try:
            text = path.relative_to(folder).as_posix()
        except ValueError:
            pass
    return quote_argument(text)


def model_spec(model_id: int | str) -> str:
    """``#N`` for a model number; strings (already a spec such as ``#1.2``) pass through."""
    text = str(model_id)
    return text if text.startswith("#") else f"#{text}"


def open_command(path_text: str) -> str:
    return f"open {path_text}"


def hide_command(spec: str) -> str:
    return f"volume {spec} hide"


def surface_command(spec: str, level: float | None = None) -> str:
    """Show ``spec`` as a surface (colouring needs one), at ``level`` when given."""
    command = f"volume {spec} style surface"
    return command if level is None else f"{command} level {_number(level)}"


def dust_command(spec: str, voxel_size: float) -> str:
    """Hide surface specks smaller than a few voxels (noise outside the mask)."""
    return f"surface dust {spec} size {_number(DUST_SIZE_VOXELS * voxel_size)}"


def palette_points(colors: Sequence[str], color_range: tuple[float, float],
                   minimum: float | None = None) -> list[tuple[float, str]]:
    """(value in Å, colour) points: the colours spread evenly over the range, and, when the
    smallest defined resolution ``minimum`` is given, a grey band from 0 up to just below it.

    Voxels outside the mask are 0, so surface points there would otherwise take the first,
    *best* colour. Values between the grey band and the range's low end keep the first colour.
    """
    low, high = check_range(color_range)
    step = (high - low) / (len(colors) - 1)
    points = [(low + i * step, color) for i, color in enumerate(colors)]
    if minimum is not None and math.isfinite(minimum) and minimum > 0:
        cut = min(float(minimum), low)
        edge = cut * OUTSIDE_EDGE
        if edge > 0:
            inside = [(cut, colors[0])] if cut < low else []
            points = [(0.0, OUTSIDE_COLOR), (edge, OUTSIDE_COLOR)] + inside + points
    return points


def palette_values_spec(points: Sequence[tuple[float, str]]) -> str:
    """The ChimeraX ``palette`` argument with explicit values: ``v1,c1:v2,c2:...`` (no spaces)."""
    return ":".join(f"{value:.6g},{color}" for value, color in points)


def color_sample_command(surface_spec: str, locres_spec: str, colors: Sequence[str],
                         color_range: tuple[float, float], minimum: float | None = None) -> str:
    """ChimeraX's built-in colouring of a surface by the values of another map.

    With ``minimum`` (the smallest defined resolution) the palette carries explicit values and
    paints surface points outside the mask (value 0) grey; ChimeraX ignores ``range`` for such a
    palette, so none is given. Without it, the plain palette is stretched over ``range``.
    """
    low, high = check_range(color_range)
    if minimum is not None:
        return (f"color sample {surface_spec} map {locres_spec} palette "
                f"{palette_values_spec(palette_points(colors, (low, high), minimum))}")
    return (f"color sample {surface_spec} map {locres_spec} palette {palette_spec(colors)} "
            f"range {_number(low)},{_number(high)}")


def key_labels(colors: Sequence[str], color_range: tuple[float, float]) -> list[str]:
    """One label per colour: numbers at both ends and at the middle colour, empty elsewhere;
    the unit only on the last one, so the labels fit side by side under a short key."""
    low, high = check_range(color_range)
    labels = [""] * len(colors)
    labels[0], labels[-1] = f"{low:.1f}", f"{high:.1f} Å"
    if len(colors) % 2 == 1 and len(colors) > 2:
        labels[len(colors) // 2] = f"{(low + high) / 2:.1f}"
    return labels


def key_command(colors: Sequence[str], color_range: tuple[float, float]) -> str:
    """The ``key`` command drawing the palette with Å labels (colour:label pairs), placed and
    sized so that its labels stay inside the window and apart, even in a 700x500 window."""
    pairs = []
    for color, label in zip(colors, key_labels(colors, color_range)):
        pair = f"{color}:{label}"
        pairs.append(f'"{pair}"' if " " in pair else pair)
    return (f"key {' '.join(pairs)} pos {KEY_POS[0]:g},{KEY_POS[1]:g} size {KEY_SIZE[0]:g},{KEY_SIZE[1]:g} "
            f"fontSize {KEY_FONT_SIZE}")


def coloring_commands(surface_spec: str, locres_spec: str, colors: Sequence[str],
                      color_range: tuple[float, float], *, key: bool = True,
                      minimum: float | None = None) -> list[str]:
    """Hide the local-resolution map, colour the surface by it (grey outside the mask when
    ``minimum`` is given), and draw the key."""
    commands = [hide_command(locres_spec),
                color_sample_command(surface_spec, locres_spec, colors, color_range, minimum)]
    if key:
        commands.append(key_command(colors, color_range))
    return commands


# ----------------------------------------------------------------------------- the .cxc writer


def default_script_path(map_path: str | os.PathLike) -> Path:
    """``<map stem>_locres.cxc`` beside the map."""
    return default_output_path(map_path, "_locres").with_suffix(".cxc")


def script_lines(map_text: str, locres_text: str, colors: Sequence[str], color_range: tuple[float, float],
                 *, level: float | None, voxel_size: float, summary: str = "",
                 minimum: float | None = None) -> list[str]:
    """All lines of the script: comments, then one ChimeraX command per line."""
    map_spec, locres_spec = model_spec(MAP_ID), model_spec(LOCRES_ID)
    lines = [f"# ChimeraX script written by cryores {__version__}: surface coloured by local resolution.",
             f"# Opens the map as {map_spec} and the local-resolution map as {locres_spec}: run it in a new "
             "session, e.g. 'chimerax view.cxc'."]
    if summary:
        lines.append(f"# {summary}")
    lines += [open_command(map_text), open_command(locres_text), surface_command(map_spec, level),
              dust_command(map_spec, voxel_size)]
    lines += coloring_commands(map_spec, locres_spec, colors, color_range, key=True, minimum=minimum)
    return lines


def write_chimerax_script(map_path: str | os.PathLike, locres_path: str | os.PathLike,
                          output_path: str | os.PathLike | None = None, *, palette: str = DEFAULT_PALETTE,
                          color_range: ColorRange = None, level: float | None = None,
                          force: bool = False) -> Path:
    """Write a ``.cxc`` that opens both maps and colours the map's surface by local resolution.

    output_path defaults to ``<map stem>_locres.cxc`` beside the map. color_range: None for the
    5-95 % range of the defined values, "full" for their min-max, or (low, high) Å. level: the
    map's surface threshold (default: :func:`choose_level`). The file is written atomically
    and never over an existing file without ``force`` nor over an input. Raises CryoResError
    for unreadable maps, maps of different shapes or voxel sizes, a locres map without any
    positive value, a bad palette or range, or an output that must not be written.
    """
    map_path, locres_path = Path(map_path), Path(locres_path)
    output = Path(output_path) if output_path is not None else default_script_path(map_path)
    check_output_path(output, force=force, role="script", protected=(map_path, locres_path))
    colors = palette_colors(palette)
    if level is not None and not math.isfinite(level):
        raise CryoResError(f"level must be a finite number, got {level}")
    density = read_map(map_path)
    locres = read_map(locres_path, role="local-resolution map")
    check_same_grid(locres, density, locres_path)
    defined = resolution_values(locres.data)  # refuses a map with no defined value, with a clear message
    chosen_range = resolve_range(color_range, locres.data)
    chosen_level = level if level is not None else choose_level(density.data, locres.data)
    summary = summarise(locres.data, np.isfinite(locres.data) & (locres.data > 0)).line()

    folder = output.parent
    lines = script_lines(path_argument(map_path, folder), path_argument(locres_path, folder), colors, chosen_range,
                         level=chosen_level, voxel_size=max(density.voxel_size), summary=summary,
                         minimum=float(defined.min()))
    try:
        with atomic_path(output) as tmp:
            tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
            os.chmod(tmp, default_file_mode())
    except OSError as error:
        raise CryoResError(f"cannot write {output}: {error.strerror or error}") from None
    return output


# ----------------------------------------------------------------------------- command line


def _range_type(text: str) -> ColorRange:
    try:
        return parse_range(text)
    except CryoResError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_chimerax_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``cryores chimerax MAP LOCRES [-o view.cxc] [--palette] [--range] [--level] [--force]``."""
    p = subparsers.add_parser(
        "chimerax", help="write a ChimeraX script colouring the map by local resolution",
        description="Write a ChimeraX command script (.cxc) that opens the map and its local-resolution map "
                    "and colours the map's surface with built-in commands only (no bundle needed).")
    p.add_argument("map", help="density map (MRC)")
    p.add_argument("locres", help="local-resolution map on the same grid (Å, 0 outside the mask), from any tool")
    p.add_argument("-o", "--output", help="script to write (default: <map stem>_locres.cxc beside the map)")
    p.add_argument("--palette", default=DEFAULT_PALETTE,
                   help=f"{', '.join(PALETTES)} (default {DEFAULT_PALETTE}) or a colour list such as blue:white:red")
    p.add_argument("--range", dest="color_range", type=_range_type, default=None, metavar="LOW,HIGH|full",
                   help="colour range in Å (default: 5-95 %% of the values inside the mask; full: min-max)")
    p.add_argument("--level", type=float, help="surface threshold of the map (default: chosen from the mask)")
    p.add_argument("--force", action="store_true", help="overwrite an existing script")
    return p


def run_chimerax(args: argparse.Namespace) -> int:
    """Write the script and print one line saying what was written."""
    output = write_chimerax_script(args.map, args.locres, args.output, palette=args.palette,
                                   color_range=args.color_range, level=args.level, force=args.force)
    print(f"wrote ChimeraX script {output} (open it in ChimeraX, or run: chimerax {output})")
    return 0
