"""The ChimeraX colouring logic and the .cxc writer (cryores.chimerax_script), run for real.

No ChimeraX here: these tests check the exact command text, ranges, levels, quoting and file
handling. That a real ChimeraX 1.7.1 runs the commands and colours as intended is tested in
tests/chimerax/ (make test-chimerax).
"""

from __future__ import annotations

import argparse
import os
import shlex
from pathlib import Path

import numpy as np
import pytest

from conftest import synthetic_map, write_mrc
from cryores.chimerax_script import (
    DEFAULT_PALETTE,
    KEY_FONT_SIZE,
    OUTSIDE_COLOR,
    PALETTES,
    add_chimerax_parser,
    check_range,
    choose_level,
    color_sample_command,
    coloring_commands,
    default_script_path,
    key_command,
    key_labels,
    palette_colors,
    palette_points,
    palette_spec,
    palette_values_spec,
    parse_range,
    path_argument,
    quote_argument,
    range_from_summary,
    range_from_values,
    run_chimerax,
    surface_command,
    write_chimerax_script,
)
from cryores.errors import CryoResError
from cryores.masking import automatic_mask
from cryores.summary import ResolutionSummary

TURBO = ":".join(PALETTES["turbo"])
KEY_LAYOUT = f"pos 0.6,0.1 size 0.35,0.035 fontSize {KEY_FONT_SIZE}"


def grey_palette(colors, color_range, minimum) -> str:
    return palette_values_spec(palette_points(colors, color_range, minimum))


@pytest.fixture(scope="module")
def maps():
    """A synthetic map and a local-resolution map: 3-7 Å inside its automatic mask, 0 outside."""
    density = synthetic_map()
    mask = automatic_mask(density, (1.0, 1.0, 1.0))
    ramp = np.linspace(3.0, 7.0, density.shape[2], dtype=np.float32)[None, None, :]
    locres = np.where(mask, np.broadcast_to(ramp, density.shape), 0).astype(np.float32)
    return density, locres


@pytest.fixture
def map_pair(tmp_path, maps):
    density, locres = maps
    folder = tmp_path / "my maps"  # a space in the folder name on purpose
    folder.mkdir()
    return (write_mrc(folder / "map.mrc", density, voxel_size=1.0),
            write_mrc(folder / "map_res.mrc", locres, voxel_size=1.0))


def commands_of(script: Path) -> list[str]:
    return [line for line in script.read_text(encoding="utf-8").splitlines() if line and not line.startswith("#")]


# ----------------------------------------------------------------------------- palettes


def test_named_palettes_run_from_best_to_worst_and_ignore_case():
    assert palette_colors("turbo") == PALETTES["turbo"]
    assert palette_colors("Rainbow")[0] == "#0000ff" and palette_colors("rainbow")[-1] == "#ff0000"
    assert DEFAULT_PALETTE == "turbo"
    assert palette_spec(PALETTES["viridis"]).count(":") == len(PALETTES["viridis"]) - 1


def test_a_colour_list_is_accepted_and_a_bad_palette_refused():
    assert palette_colors("blue:white:red") == ("blue", "white", "red")
    for bad in ("jet", "blue", "blue: red", 'blue:"red"', "blue::red"):
        with pytest.raises(CryoResError, match="palette"):
            palette_colors(bad)


# ----------------------------------------------------------------------------- ranges


def test_parse_range_forms():
    assert parse_range("auto") is None
    assert parse_range("FULL") == "full"
    assert parse_range("2.5,6") == (2.5, 6.0)
    for bad in ("6,2.5", "2.5", "1,2,3", "a,b", "-1,3", "nan,4"):
        with pytest.raises(CryoResError):
            parse_range(bad)


def test_auto_range_is_5_to_95_percent_of_positive_values_rounded_outwards():
    values = np.concatenate([np.zeros(500), np.linspace(3.03, 6.97, 1001)]).astype(np.float32)
    low, high = np.percentile(values[values > 0], [5, 95])
    assert (low, high) == pytest.approx((3.227, 6.773), abs=1e-3)  # the numbers the rounding starts from
    assert range_from_values(values) == (3.2, 6.8)
    assert range_from_values(values, "full") == (3.0, 7.0)  # min-max of non-zero values, outwards


def test_range_of_a_uniform_map_is_not_empty_and_no_positive_value_is_an_error():
    assert range_from_values(np.full(10, 4.0)) == (4.0, 4.1)
    with pytest.raises(CryoResError, match="no positive value"):
        range_from_values(np.zeros((4, 4, 4)))
    with pytest.raises(CryoResError, match="no positive value"):
        range_from_values(np.full(5, np.nan))


def test_range_from_summary_rounds_outwards_and_keeps_exact_tenths():
    summary = ResolutionSummary(median=4.5, p5=3.77, p95=6.21, n_voxels=10, mask_fraction=0.1)
    assert range_from_summary(summary) == (3.7, 6.3)
    exact = ResolutionSummary(median=4.5, p5=3.0, p95=6.0, n_voxels=10, mask_fraction=0.1)
    assert range_from_summary(exact) == (3.0, 6.0)


def test_check_range_refuses_reversed_or_negative():
    assert check_range((2, 5)) == (2.0, 5.0)
    with pytest.raises(CryoResError):
        check_range((5, 2))
    with pytest.raises(CryoResError):
        check_range((-1, 2))


# ----------------------------------------------------------------------------- surface level


def test_level_puts_the_surface_inside_the_defined_region(maps):
    density, locres = maps
    level = choose_level(density, locres)
    assert level is not None
    above = density > level
    outside = locres <= 0
    assert above[~outside].sum() > 500  # a real surface, not an empty one
    assert above[outside].sum() <= 0.002 * outside.sum()  # at most specks (hidden by surface dust)


def test_no_level_when_the_locres_map_has_no_mask(maps):
    density, _ = maps
    assert choose_level(density, np.full(density.shape, 4.0, np.float32)) is None


# ----------------------------------------------------------------------------- command text


def test_quoting_of_paths(tmp_path):
    assert quote_argument("map.mrc") == "map.mrc"
    assert quote_argument("my map.mrc") == '"my map.mrc"'
    assert quote_argument("a;b.mrc") == '"a;b.mrc"'
    for bad in ('a"b.mrc', "a\\b.mrc", "a\nb.mrc"):
        with pytest.raises(CryoResError, match="rename"):
            quote_argument(bad)
    inside = tmp_path / "sub dir" / "m.mrc"
    assert path_argument(inside, tmp_path) == '"sub dir/m.mrc"'
    outside = tmp_path.parent / "other.mrc"
    assert path_argument(outside, tmp_path / "sub dir") == quote_argument(Path(os.path.abspath(outside)).as_posix())
    assert shlex.split(f"open {path_argument(inside, tmp_path)}") == ["open", "sub dir/m.mrc"]


def test_color_sample_and_surface_commands_exact_text():
    assert color_sample_command("#1", "#2", PALETTES["turbo"], (2.5, 6.0)) == \
        f"color sample #1 map #2 palette {TURBO} range 2.5,6"
    assert surface_command("#1") == "volume #1 style surface"
    assert surface_command("#1", 0.01234567) == "volume #1 style surface level 0.01235"
    with pytest.raises(CryoResError):
        color_sample_command("#1", "#2", PALETTES["turbo"], (6.0, 2.5))


def test_outside_the_mask_is_grey_through_a_palette_with_values():
    """0 (outside the mask) up to 98 % of the smallest defined value is grey; from there the
    first colour; the palette's colours spread evenly over the range; no 'range' (ChimeraX
    would rescale a palette with values)."""
    assert palette_points(("blue", "white", "red"), (3.0, 5.0), minimum=3.5) == [
        (0.0, OUTSIDE_COLOR), (3.0 * 0.98, OUTSIDE_COLOR), (3.0, "blue"), (4.0, "white"), (5.0, "red")]
    assert palette_points(("blue", "red"), (3.0, 5.0), minimum=2.5) == [
        (0.0, OUTSIDE_COLOR), (2.5 * 0.98, OUTSIDE_COLOR), (2.5, "blue"), (3.0, "blue"), (5.0, "red")]
    assert palette_points(("blue", "red"), (0.0, 5.0), minimum=2.5) == [(0.0, "blue"), (5.0, "red")]
    assert palette_points(("blue", "red"), (3.0, 5.0)) == [(3.0, "blue"), (5.0, "red")]
    command = color_sample_command("#1", "#2", ("blue", "red"), (3.0, 5.0), minimum=3.2)
    assert command == f"color sample #1 map #2 palette 0,{OUTSIDE_COLOR}:2.94,{OUTSIDE_COLOR}:3,blue:5,red"
    values = [float(part.split(",")[0]) for part in command.split("palette ")[1].split(":")]
    assert values == sorted(values) and len(set(values)) == len(values)


def test_key_labels_at_ends_and_middle_with_the_unit_once():
    assert key_labels(PALETTES["rainbow"], (2.5, 6.5)) == ["2.5", "", "4.5", "", "6.5 Å"]
    assert key_labels(("blue", "red"), (3, 4)) == ["3.0", "4.0 Å"]
    command = key_command(PALETTES["rainbow"], (2.5, 6.5))
    assert command == f'key #0000ff:2.5 #00ffff: #00ff00:4.5 #ffff00: "#ff0000:6.5 Å" {KEY_LAYOUT}'
    assert len(shlex.split(command)) == 1 + len(PALETTES["rainbow"]) + 6  # one token per colour:label pair


def test_coloring_commands_hide_colour_and_key_in_that_order():
    commands = coloring_commands("#1", "#3", ("blue", "red"), (3.0, 5.0))
    assert commands == ["volume #3 hide", "color sample #1 map #3 palette blue:red range 3,5",
                        f'key blue:3.0 "red:5.0 Å" {KEY_LAYOUT}']
    assert coloring_commands("#1", "#3", ("blue", "red"), (3.0, 5.0), key=False)[-1].startswith("color sample")
    assert coloring_commands("#1", "#3", ("blue", "red"), (3.0, 5.0), minimum=3.0)[1] == \
        f"color sample #1 map #3 palette {grey_palette(('blue', 'red'), (3.0, 5.0), 3.0)}"


# ----------------------------------------------------------------------------- the .cxc writer


def test_script_commands_one_by_one(map_pair, maps):
    map_path, locres_path = map_pair
    density, locres = maps
    script = write_chimerax_script(map_path, locres_path)
    assert script == map_path.with_name("map_locres.cxc") == default_script_path(map_path)
    low, high = range_from_values(locres)
    level = choose_level(density, locres)
    assert commands_of(script) == [
        "open map.mrc",  # relative: ChimeraX runs a .cxc from the script's folder
        "open map_res.mrc",
        f"volume #1 style surface level {level:.4g}",
        "surface dust #1 size 6",
        "volume #2 hide",
        f"color sample #1 map #2 palette {grey_palette(PALETTES['turbo'], (low, high), locres[locres > 0].min())}",
        key_command(PALETTES["turbo"], (low, high)),
    ]
    text = script.read_text(encoding="utf-8")
    assert "median" in text.splitlines()[2] and text.startswith("# ChimeraX script written by cryores")
    assert not [p for p in script.parent.iterdir() if p.name.startswith(".")]  # no temporary file left
    assert script.stat().st_mode & 0o777 == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_script_with_explicit_range_palette_level_and_output_elsewhere(map_pair, maps, tmp_path):
    map_path, locres_path = map_pair
    output = tmp_path / "views" / "v.cxc"
    output.parent.mkdir()
    script = write_chimerax_script(map_path, locres_path, output, palette="rainbow", color_range=(2.0, 8.0),
                                   level=0.5)
    commands = commands_of(script)
    assert commands[0] == f'open "{map_path.resolve().as_posix()}"'  # absolute and quoted (space in folder)
    assert commands[2] == "volume #1 style surface level 0.5"
    minimum = maps[1][maps[1] > 0].min()
    assert commands[5] == f"color sample #1 map #2 palette {grey_palette(PALETTES['rainbow'], (2.0, 8.0), minimum)}"
    assert commands[6] == key_command(PALETTES["rainbow"], (2.0, 8.0))


def test_full_range_uses_min_and_max(map_pair, maps):
    map_path, locres_path = map_pair
    script = write_chimerax_script(map_path, locres_path, color_range="full")
    values = maps[1][maps[1] > 0]
    low, high = np.floor(values.min() * 10) / 10, np.ceil(values.max() * 10) / 10
    assert commands_of(script)[5].endswith(grey_palette(PALETTES["turbo"], (low, high), values.min()))
    assert commands_of(script)[6] == key_command(PALETTES["turbo"], (low, high))


def test_existing_script_is_not_overwritten_without_force(map_pair):
    map_path, locres_path = map_pair
    script = default_script_path(map_path)
    script.write_text("mine\n")
    with pytest.raises(CryoResError, match="exists; use --force"):
        write_chimerax_script(map_path, locres_path)
    assert script.read_text() == "mine\n"
    write_chimerax_script(map_path, locres_path, force=True)
    assert commands_of(script)[0] == "open map.mrc"


def test_never_writes_over_an_input_even_with_force(map_pair):
    map_path, locres_path = map_pair
    before = locres_path.read_bytes()
    with pytest.raises(CryoResError, match="input"):
        write_chimerax_script(map_path, locres_path, locres_path, force=True)
    assert locres_path.read_bytes() == before


def test_bad_inputs_give_one_line_errors(tmp_path, maps):
    density, locres = maps
    map_path = write_mrc(tmp_path / "map.mrc", density)
    small = write_mrc(tmp_path / "small.mrc", locres[:20])
    empty = write_mrc(tmp_path / "empty.mrc", np.zeros_like(locres))
    other_voxel = write_mrc(tmp_path / "other.mrc", locres, voxel_size=2.0)
    cases = [((map_path, small), "shape"), ((map_path, empty), "no positive value"),
             ((map_path, other_voxel), "voxel size"), ((map_path, tmp_path / "missing.mrc"), "no such file")]
    for (first, second), message in cases:
        with pytest.raises(CryoResError, match=message) as caught:
            write_chimerax_script(first, second, tmp_path / "out.cxc")
        assert "\n" not in str(caught.value)
    with pytest.raises(CryoResError, match="palette"):
        write_chimerax_script(map_path, map_path, tmp_path / "out.cxc", palette="nope")
    assert not (tmp_path / "out.cxc").exists()


# ----------------------------------------------------------------------------- command line


def locres_values(path: Path) -> np.ndarray:
    import mrcfile

    with mrcfile.open(path) as mrc:
        data = np.asarray(mrc.data)
    return data[data > 0]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cryores")
    add_chimerax_parser(parser.add_subparsers(dest="command", required=True))
    return parser


def test_cli_writes_the_script_and_prints_one_line(map_pair, tmp_path, capsys):
    map_path, locres_path = map_pair
    out = tmp_path / "view.cxc"
    args = _parser().parse_args(["chimerax", str(map_path), str(locres_path), "-o", str(out), "--range", "3,6",
                                 "--palette", "viridis"])
    assert run_chimerax(args) == 0
    printed = capsys.readouterr().out
    assert printed.count("\n") == 1 and str(out) in printed
    minimum = locres_values(locres_path).min()
    assert commands_of(out)[5].endswith(f"palette {grey_palette(PALETTES['viridis'], (3.0, 6.0), minimum)}")


def test_cli_rejects_a_bad_range_as_a_usage_error(map_pair, capsys):
    map_path, locres_path = map_pair
    with pytest.raises(SystemExit) as caught:
        _parser().parse_args(["chimerax", str(map_path), str(locres_path), "--range", "6,3"])
    assert caught.value.code == 2
    assert "LOW < HIGH" in capsys.readouterr().err
