"""The ChimeraX bundle built, installed and run in a real UCSF ChimeraX 1.7.1 (no GUI).

Runs only in a Python where ChimeraX is importable: ``make test-chimerax`` builds
``.venv-chimerax`` with the kit in ``../shared/chimerax`` (headless ChimeraX from the
``chimerax==0.1.71`` wheel, OSMesa off-screen rendering) and cryores with its CPU torch. One
session serves the whole module: the bundle is built and installed with ChimeraX's own
``devel build .`` / ``devel install . user false`` from a copy of ``chimerax_bundle/``, then
the commands run on the real EMD-5168 map and on synthetic half maps, and every result is
compared with cryores' Python API on the same arrays (not with numbers written here, so a
new model does not break the tests). Timings go to the test log.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("chimerax.core", reason="needs ChimeraX's Python (make test-chimerax)")
pytest.importorskip("cxsession", reason="needs the ChimeraX kit's cxsession (make test-chimerax)")

from chimerax.core.logger import PlainTextLog  # noqa: E402

import cryores  # noqa: E402
from conftest import synthetic_map, write_mrc  # noqa: E402
from cryores.chimerax_script import (  # noqa: E402
    KEY_FONT_SIZE,
    OUTSIDE_COLOR,
    PALETTES,
    choose_level,
    key_labels,
    palette_points,
    range_from_summary,
    range_from_values,
    resolution_values,
    write_chimerax_script,
)
from cryores.mrc_io import read_map, write_map  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "chimerax_bundle"
# the bundle's version as its pyproject.toml declares it (tests/test_chimerax_bundle.py checks it is
# the package's and cryores' own), so a release bumps it in one place
VERSION = re.search(r'^version = "([^"]+)"$', (BUNDLE / "pyproject.toml").read_text(), re.M).group(1)
HELP_PAGE = BUNDLE / "src" / "docs" / "user" / "commands" / "cryores.html"
IMAGE_SIZE = (700, 500)
TIMINGS: dict[str, float] = {}


# ----------------------------------------------------------------------------- helpers


def run(session, text: str) -> list[tuple[str, str]]:
    """Run one ChimeraX command; return its log as (level, text) pairs."""
    from cxsession import run_cmd

    return run_cmd(session, text)[1]


def open_volume(session, path: Path):
    """Open a map file; return the new volume (its id depends on what is open, the key included)."""
    from cxsession import run_cmd

    opened, log = run_cmd(session, f"open {path}")
    assert opened and len(opened) == 1, log
    return opened[0]


def log_text(log: list[tuple[str, str]]) -> str:
    return "\n".join(text for _, text in log)


def rgba8(color: str) -> np.ndarray:
    """#rrggbb -> RGBA uint8 as ChimeraX stores vertex colours."""
    return np.array([int(color[i:i + 2], 16) for i in (1, 3, 5)] + [255], dtype=float)


def expected_colors(values: np.ndarray, points: list[tuple[float, str]]) -> np.ndarray:
    """Colours a palette with explicit values gives ``values``: linear between points, clamped."""
    xs = np.array([v for v, _ in points])
    colors = np.array([rgba8(c) for _, c in points])
    return np.stack([np.interp(values, xs, colors[:, k]) for k in range(4)], axis=1)


def surface_of(volume):
    """The volume's (only) contour surface, with its geometry and colours up to date."""
    volume.update_drawings()
    surfaces = [s for s in volume.surfaces if s.vertices is not None and len(s.vertices)]
    assert len(surfaces) == 1, f"expected one non-empty surface on {volume.atomspec}"
    return surfaces[0]


def sampled_values(surface, locres) -> np.ndarray:
    """The local-resolution map's value at each surface vertex, as ``color sample`` samples it;
    NaN for vertices outside its grid (ChimeraX gives those its 'no value' grey)."""
    values, outside = locres.interpolated_values(surface.vertices, surface.scene_position, out_of_bounds_list=True)
    values = np.asarray(values, dtype=float)
    values[np.asarray(outside, dtype=int)] = np.nan
    return values


def check_colors(colors: np.ndarray, values: np.ndarray, points: list[tuple[float, str]]) -> None:
    """Each vertex has the palette's colour for its sampled value (within rounding to bytes);
    vertices off the grid are a neutral grey."""
    colors = np.asarray(colors, dtype=float)
    off_grid = np.isnan(values)
    assert off_grid.mean() < 0.05
    difference = np.abs(colors[~off_grid] - expected_colors(values[~off_grid], points))
    assert difference.max() <= 2, difference.max()
    grey = colors[off_grid]
    assert np.all(grey[:, 0] == grey[:, 1]) and np.all(grey[:, 1] == grey[:, 2])


def key_model(session):
    from chimerax.color_key.model import get_model

    return get_model(session, create=False)


def models(session) -> list:
    return list(session.models.list())


class StatusLog(PlainTextLog):
    """A ChimeraX log that records status-line messages (what a GUI's status bar would show)."""

    excludes_other_logs = False

    def __init__(self):
        super().__init__()
        self.messages: list[tuple[float, str]] = []

    def status(self, msg, color, secondary) -> bool:
        self.messages.append((time.monotonic(), msg))
        return False

    def log(self, level, msg) -> bool:
        return False


def check_user_error(session, command: str, pattern: str) -> str:
    """The command fails with a one-line ChimeraX UserError matching ``pattern``; no traceback
    or bug report reaches the log, and no model is opened or closed."""
    from chimerax.core.errors import UserError

    before = [m.atomspec for m in models(session)]
    from cxsession import RecordingLog

    with RecordingLog(session.logger) as recorder:
        with pytest.raises(UserError) as caught:
            from chimerax.core.commands import run as cx_run

            cx_run(session, command)
    message = str(caught.value)
    assert re.search(pattern, message), (command, message)
    assert "\n" not in message.strip() and "Traceback" not in message, message
    assert not [m for level, m in recorder.msgs if level == "bug" or "Traceback" in m], recorder.msgs
    assert [m.atomspec for m in models(session)] == before, command
    return message


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def session(tmp_path_factory, request):
    """A real off-screen ChimeraX session with the bundle built and installed by ChimeraX."""
    home = tmp_path_factory.mktemp("home")  # fresh per-user folders and toolshed cache
    os.environ["HOME"] = str(home)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(tmp_path_factory.mktemp("xdg")))
    subprocess.run([sys.executable, "-m", "pip", "uninstall", "-q", "-y", "ChimeraX-CryoRes"],
                   check=False, capture_output=True)  # so devel install really installs this checkout
    from cxsession import start_session

    start = time.monotonic()
    cx = start_session(offscreen=True)
    TIMINGS["session start"] = time.monotonic() - start
    cx.logger.add_log(status_log := StatusLog())
    cx.cryores_status = status_log
    # Two copies: in one session, 'devel build .' then 'devel install .' of the *same* folder fails
    # in 1.7.1 ("could not create 'build/lib/...'": setuptools remembers folders it made, and the
    # builder deletes build/ first); 'devel install' builds the wheel itself anyway.
    copies = []
    for name in ("build", "install"):
        copy = tmp_path_factory.mktemp(name) / "chimerax_bundle"
        shutil.copytree(BUNDLE, copy, ignore=shutil.ignore_patterns("build", "dist", "*.egg-info", "__pycache__"))
        copies.append(copy)
    cx.cryores_bundle_copy = copies[0]
    here = os.getcwd()
    try:
        for copy, command, key in ((copies[0], "devel build .", "build"), (copies[1], "devel install . user false",
                                                                         "install")):
            os.chdir(copy)  # ChimeraX 1.7.1's builder needs the bundle folder as '.'
            start = time.monotonic()
            setattr(cx, f"cryores_{key}_log", run(cx, command))
            TIMINGS[command] = time.monotonic() - start
    finally:
        os.chdir(here)
    yield cx
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled():  # in the test log even when everything passes
        print("\nChimeraX timings (s): " + "; ".join(f"{k} {v:.1f}" for k, v in TIMINGS.items()))


@pytest.fixture(scope="module")
def emd_5168(shared) -> Path:
    return shared / "data" / "maps" / "emd_5168.map"


@pytest.fixture(scope="module")
def predicted(session, emd_5168):
    """EMD-5168 open as #1 and ``cryores predict #1`` run on it (timed, log and status kept)."""
    log = run(session, f"open {emd_5168}")
    assert "Opened" in log_text(log)
    status_before = len(session.cryores_status.messages)
    start = time.monotonic()
    log = run(session, "cryores predict #1")
    elapsed = time.monotonic() - start
    TIMINGS["cryores predict #1 (EMD-5168, command to coloured surface)"] = elapsed
    return {"log": log, "seconds": elapsed, "status": session.cryores_status.messages[status_before:]}


@pytest.fixture(scope="module")
def reference(session, predicted):
    """cryores.predict on the very array ChimeraX holds for #1, with its voxel size."""
    volume = volume_by_spec(session, "#1")
    step = volume.data.step
    start = time.monotonic()
    result = cryores.predict(volume.full_matrix().astype(np.float32), tuple(reversed(step)))
    TIMINGS["cryores.predict on the same array"] = time.monotonic() - start
    return result


def volume_by_spec(session, spec: str):
    from chimerax.map import Volume

    found = [m for m in models(session) if m.atomspec == spec]
    assert found and isinstance(found[0], Volume), f"no volume {spec}"
    return found[0]


# ----------------------------------------------------------------------------- build and install


def test_bundle_builds_and_installs_with_chimerax_devel_commands(session):
    """``devel build .`` makes a wheel, ``devel install . user false`` registers all three commands."""
    build, install = log_text(session.cryores_build_log), log_text(session.cryores_install_log)
    wheels = sorted((session.cryores_bundle_copy / "dist").glob("*.whl"))
    assert [w.name for w in wheels] == [f"chimerax_cryores-{VERSION}-py3-none-any.whl"], build[-2000:]
    assert "Traceback" not in build + install and "KeyError" not in build, (build + install)[-3000:]
    # The toolshed names the bundle after its dist-info folder, which newer setuptools writes in
    # lower case (chimerax_cryores-0.1.0.dist-info): "Installed chimerax-cryores (0.1.0)".
    assert f"installed chimerax-cryores ({VERSION})" in install.lower(), install[-2000:]
    bundle = session.toolshed.find_bundle("ChimeraX-CryoRes", session.logger)
    assert bundle is not None and bundle.version == VERSION
    for name in ("cryores predict", "cryores color", "cryores localfsc"):
        usage = log_text(run(session, f"usage {name}"))
        assert f"\n{name} volume " in usage or f"\n{name} halfMaps " in usage, usage


def test_help_page_documents_every_keyword_chimerax_knows(session):
    """Every keyword ChimeraX's parser accepts for each command is described in the help page,
    and the page is installed with the bundle."""
    html = HELP_PAGE.read_text(encoding="utf-8")
    installed = Path(sys.modules["chimerax.cryores"].__file__).parent / "docs" / "user" / "commands" / "cryores.html"
    assert installed.read_text(encoding="utf-8") == html
    for name in ("cryores predict", "cryores color", "cryores localfsc"):
        assert f"<b>{name}</b>" in html
        usage = log_text(run(session, f"usage {name}"))
        names = re.findall(r"\[(\w+) ", usage)
        assert names, usage
        for keyword in names:
            assert re.search(rf"<b>{keyword}</b>", html), (name, keyword)


# ----------------------------------------------------------------------------- cryores predict


def test_predict_opens_a_volume_on_the_same_grid_equal_to_cryores_predict(session, predicted, reference):
    """``cryores predict #1``: #2 opens hidden, on #1's grid and place, holding exactly what
    cryores.predict returns for the same array (Å inside the mask, 0 outside)."""
    density, locres = volume_by_spec(session, "#1"), volume_by_spec(session, "#2")
    assert locres.data.size == density.data.size
    np.testing.assert_allclose(locres.data.origin, density.data.origin)
    np.testing.assert_allclose(locres.data.step, density.data.step)
    assert locres.scene_position.same(density.scene_position)
    assert not locres.display
    values = locres.full_matrix()
    np.testing.assert_allclose(values, reference.resolution, rtol=1e-5, atol=1e-4)
    inside = values[reference.mask]
    nyquist = 2 * max(density.data.step)
    assert inside.min() >= nyquist - 1e-4 and np.all(values[~reference.mask] == 0)
    assert "local resolution" in locres.name


def test_predict_log_line_gives_median_and_range_with_units_and_times(predicted, reference):
    """One log line: median and 5-95 % range in Å (cryores' own summary), the model, the
    prediction time and the whole command's time; the command adds little to the prediction."""
    text = log_text(predicted["log"])
    summary = reference.summary
    assert f"median {summary.median:.2f} Å, 5-95 % {summary.p5:.2f}-{summary.p95:.2f} Å" in text, text
    times = re.search(r"prediction ([\d.]+) s, command ([\d.]+) s", text)
    assert times, text
    prediction, command = float(times[1]), float(times[2])
    TIMINGS["prediction inside the command"] = prediction
    assert command - prediction < max(3.0, 0.25 * prediction), text  # colouring, opening: not the slow part
    assert "Traceback" not in text and not [m for level, m in predicted["log"] if level in ("error", "bug")]


def test_predict_reports_progress_on_the_status_line(predicted):
    """Status-line messages 'cryores #1: done/total (P %)' arrive during the run and end at 100 %
    (the steps are patches or voxel chunks, depending on the model)."""
    progress = [(t, m) for t, m in predicted["status"] if re.match(r"cryores #1: \d+/\d+ \(\d+ %\)$", m)]
    assert progress, predicted["status"]
    done = [int(re.match(r"cryores #1: (\d+)/(\d+)", m)[1]) for _, m in progress]
    assert done == sorted(done) and progress[-1][1].endswith("(100 %)"), progress
    assert len(progress) >= 2  # a start and the end at least, not one message after the fact


def test_predict_colours_the_surface_by_resolution_grey_outside_the_mask(session, predicted, reference):
    """The surface's vertex colours are the palette's colour for the resolution sampled at each
    vertex (turbo over the 5-95 % range), grey where the sample comes from outside the mask;
    a colour key with Å labels is shown."""
    density, locres = volume_by_spec(session, "#1"), volume_by_spec(session, "#2")
    surface = surface_of(density)
    colors = np.asarray(surface.vertex_colors, dtype=float)
    assert colors.shape == (len(surface.vertices), 4)
    values = sampled_values(surface, locres)
    low, high = range_from_summary(reference.summary)
    minimum = float(reference.resolution[reference.mask].min())
    check_colors(colors, values, palette_points(PALETTES["turbo"], (low, high), minimum))
    assert len(np.unique(colors.astype(np.uint8), axis=0)) > 100
    inside = (values >= minimum) & (values <= high)  # (NaN compares False)
    turbo = np.array([rgba8(c) for c in PALETTES["turbo"]])
    nearest = np.abs(colors[inside][:, None, :] - turbo[None]).sum(axis=2).argmin(axis=1)
    assert len(np.unique(nearest)) >= 3  # several palette colours are in use
    assert values[inside][nearest == nearest.max()].mean() > values[inside][nearest == 0].mean() + 0.3
    key = key_model(session)
    assert key is not None and key.display
    assert [label or "" for _, label in key.rgbas_and_labels] == key_labels(PALETTES["turbo"], (low, high))
    assert key.font_size == KEY_FONT_SIZE
    level, vertices = surface.level, len(surface.vertices)  # a new level: ChimeraX recolours by itself
    run(session, f"volume #1 level {0.6 * level:.4g}")
    lowered = surface_of(density)
    assert len(lowered.vertices) > vertices * 1.1
    check_colors(lowered.vertex_colors, sampled_values(lowered, locres),
                 palette_points(PALETTES["turbo"], (low, high), minimum))
    run(session, f"volume #1 level {level:.6g}")


# ----------------------------------------------------------------------------- the picture


def test_offscreen_image_of_emd_5168_coloured_with_its_key(session, predicted, reference, emd_5168, tmp_path):
    """A 700x500 off-screen image of EMD-5168 coloured by ``cryores predict`` (surface moved to
    the level ``cryores chimerax`` chooses, side view): mostly the coloured map, the key's colours
    in the lower right, its label text below the bar and above the bottom edge.
    CRYORES_CHIMERAX_IMAGE=path keeps a copy (the README's and the help page's picture)."""
    from PIL import Image

    level = choose_level(read_map(emd_5168).data, reference.resolution)
    commands = [f"volume #1 level {level:.4g}", "surface dust #1 size 10",
                f"windowsize {IMAGE_SIZE[0]} {IMAGE_SIZE[1]}",
                "view; turn x 90; turn z 90; view; lighting soft; graphics silhouettes true"]
    for command in commands:
        run(session, command)
    image_path = tmp_path / "emd_5168_chimerax.png"
    save_start = time.monotonic()
    run(session, f"save {image_path} width {IMAGE_SIZE[0]} height {IMAGE_SIZE[1]} supersample 3")
    TIMINGS["off-screen image save (700x500, supersample 3)"] = time.monotonic() - save_start
    image = np.asarray(Image.open(image_path).convert("RGB")).astype(int)
    assert image.shape == (IMAGE_SIZE[1], IMAGE_SIZE[0], 3)
    height, width = image.shape[:2]
    lit = image.sum(axis=2) > 30
    assert 0.2 < lit.mean() < 0.9
    turbo = np.array([rgba8(c)[:3] for c in PALETTES["turbo"]])
    key_box = image[int(0.8 * height):, int(0.58 * width):]
    near_turbo = np.abs(key_box[:, :, None, :] - turbo[None, None]).sum(axis=3).min(axis=2) < 40
    assert near_turbo.sum() > 0.3 * 0.35 * width * 0.035 * height  # the key's colour bar
    white = image.min(axis=2) > 200  # label text is white on black
    label_rows = np.nonzero(white[int(0.9 * height):, int(0.58 * width):].any(axis=1))[0] + int(0.9 * height)
    assert label_rows.size > 5 and label_rows.max() < height - 2, "key labels missing or cut off at the bottom"
    target = os.environ.get("CRYORES_CHIMERAX_IMAGE")
    if target:
        shutil.copyfile(image_path, target)


# ----------------------------------------------------------------------------- cryores color


def test_color_follows_a_changed_resolution_map(session, predicted, reference, tmp_path):
    """``cryores color #1 resolution #N`` with another resolution map from a file (the prediction
    + 1 Å, and 0 in the half of the box with the lower x): the colours change and follow the new
    values and range, and the surface in the zeroed half is grey."""
    half = np.zeros_like(reference.mask)
    half[:, :, reference.mask.shape[2] // 2:] = True
    shifted = np.where(reference.mask & half, reference.resolution + 1.0, 0).astype(np.float32)
    density = volume_by_spec(session, "#1")
    path = write_mrc(tmp_path / "shifted.mrc", shifted, voxel_size=tuple(density.data.step),
                     origin=tuple(density.data.origin))
    surface = surface_of(density)
    before = np.array(surface.vertex_colors, copy=True)
    other = open_volume(session, path)
    assert other.data.size == density.data.size
    log = run(session, f"cryores color #1 resolution {other.atomspec} palette viridis range full")
    surface = surface_of(density)
    after = np.asarray(surface.vertex_colors, dtype=float)
    assert np.abs(after - before).max() > 50
    assert len(np.unique(after.astype(np.uint8), axis=0)) > 100
    values = sampled_values(surface, other)
    chosen = range_from_values(shifted, "full")
    minimum = float(resolution_values(shifted).min())
    check_colors(after, values, palette_points(PALETTES["viridis"], chosen, minimum))
    outside = values < 0.5 * minimum  # (NaN compares False)
    assert outside.mean() > 0.2
    assert np.abs(after[outside] - rgba8(OUTSIDE_COLOR)).max() <= 1  # (ChimeraX truncates to bytes)
    assert f"colours {chosen[0]:g}-{chosen[1]:g} Å" in log_text(log)
    assert not other.display
    assert [label or "" for _, label in key_model(session).rgbas_and_labels] == key_labels(PALETTES["viridis"],
                                                                                          chosen)
    run(session, f"close {other.atomspec}")
    run(session, "cryores color #1 resolution #2")  # back to the prediction for the next tests
    assert np.abs(np.asarray(surface_of(density).vertex_colors, dtype=float) - before).max() <= 1


# ----------------------------------------------------------------------------- cryores localfsc


def test_localfsc_on_two_half_maps_equals_cryores_local_fsc(session, tmp_path):
    """``cryores localfsc #A #B color #C``: synthetic half maps (one signal + independent noise)
    written with mrcfile; the result opens on half map 1's grid, equal to cryores.local_fsc,
    and #C's surface is coloured by it."""
    rng = np.random.default_rng(5)
    signal = synthetic_map(shape=(48, 48, 48), voxel_size=1.5, n_atoms=300, noise=0.0, seed=3)
    halves = [signal + rng.normal(0, 0.08, signal.shape).astype(np.float32) for _ in range(2)]
    origin = (6.0, -3.0, 1.5)
    paths = [write_mrc(tmp_path / f"half{i}.mrc", h, voxel_size=1.5, origin=origin) for i, h in enumerate(halves)]
    full = write_mrc(tmp_path / "full.mrc", (halves[0] + halves[1]) / 2, voxel_size=1.5, origin=origin)
    a, b, c = (open_volume(session, path).atomspec for path in (*paths, full))
    assert len({a, b, c}) == 3, (a, b, c)
    start = time.monotonic()
    log = run(session, f"cryores localfsc {a} {b} window 24 color {c}")
    TIMINGS["cryores localfsc (48^3 half maps)"] = time.monotonic() - start
    result_spec = re.search(r"opened (#\d+)", log_text(log))[1]
    result = volume_by_spec(session, result_spec)
    matrices = [volume_by_spec(session, s).full_matrix().astype(np.float32) for s in (a, b)]
    reference = cryores.local_fsc(matrices[0], matrices[1], (1.5, 1.5, 1.5), window=24.0)
    np.testing.assert_allclose(result.full_matrix(), reference.resolution, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(result.data.origin, origin)
    np.testing.assert_allclose(result.data.step, (1.5, 1.5, 1.5))
    assert reference.summary.line() in log_text(log)
    surface = surface_of(volume_by_spec(session, c))
    values = sampled_values(surface, result)
    low, high = range_from_summary(reference.summary)
    minimum = float(resolution_values(reference.resolution).min())
    check_colors(surface.vertex_colors, values, palette_points(PALETTES["turbo"], (low, high), minimum))
    run(session, f"close {a} {b} {c} {result_spec}")
    run(session, "cryores color #1 resolution #2")


def test_predict_on_half_maps_reads_their_average_and_colours_the_map(session, tmp_path):
    """``cryores predict #C halfMaps #A,B``: the network reads the two half maps' average (equal to
    cryores.predict on it), the result opens on #C's grid, and one half map alone is refused."""
    rng = np.random.default_rng(6)
    signal = synthetic_map(shape=(48, 48, 48), voxel_size=1.5, n_atoms=300, noise=0.0, seed=4)
    halves = [signal + rng.normal(0, 0.08, signal.shape).astype(np.float32) for _ in range(2)]
    origin = (6.0, -3.0, 1.5)
    paths = [write_mrc(tmp_path / f"h{i}.mrc", h, voxel_size=1.5, origin=origin) for i, h in enumerate(halves)]
    masked = np.where(signal > 0.05, (halves[0] + halves[1]) / 2, 0.0).astype(np.float32)
    full = write_mrc(tmp_path / "masked.mrc", masked, voxel_size=1.5, origin=origin)
    a, b, c = (open_volume(session, path).atomspec for path in (*paths, full))
    log = log_text(run(session, f"cryores predict {c} halfMaps {a} {b}"))
    assert f"read from the average of {a} and {b}" in log, log
    result_spec = re.search(r"opened (#\d+)", log)[1]
    result = volume_by_spec(session, result_spec)
    matrices = [volume_by_spec(session, s).full_matrix().astype(np.float32) for s in (a, b)]
    reference = cryores.predict((matrices[0] + matrices[1]) * np.float32(0.5), (1.5, 1.5, 1.5))
    assert reference.noise_reference is True
    np.testing.assert_allclose(result.full_matrix(), reference.resolution, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(result.data.origin, origin)
    assert reference.summary.line() in log
    check_user_error(session, f"cryores predict {c} halfMaps {a}", r"two half maps.*got 1")
    cut = float(f"{np.percentile(reference.resolution[reference.mask], 50):.4f}")  # half the voxels read finer
    log = log_text(run(session, f"cryores predict {c} halfMaps {a} {b} lowpassCut {cut}"))
    assert f"low-passed at {cut:g} Å: nothing reads finer" in log, log
    floored = volume_by_spec(session, re.search(r"opened (#\d+)", log)[1])
    expected = np.where(reference.mask, np.maximum(reference.resolution, np.float32(cut)), 0.0)
    np.testing.assert_allclose(floored.full_matrix(), expected, rtol=1e-5, atol=1e-4)
    # the masked map itself has no noise reference: the cut also sets its scale (cryores.cut_scale)
    plain = cryores.predict(volume_by_spec(session, c).full_matrix().astype(np.float32), (1.5, 1.5, 1.5))
    assert plain.noise_reference is False
    cut = float(f"{1.2 * np.percentile(plain.resolution[plain.mask], 20):.4f}")
    log = log_text(run(session, f"cryores predict {c} lowpassCut {cut}"))
    assert "so that its best-resolved fifth reads the cut" in log, log
    scaled = volume_by_spec(session, re.search(r"opened (#\d+)", log)[1])
    assert np.percentile(scaled.full_matrix()[plain.mask], 20) == pytest.approx(cut, rel=1e-3)
    run(session, f"close {a} {b} {c} {result_spec} {floored.atomspec} {scaled.atomspec}")


def test_a_masked_map_is_scaled_to_the_cut_found_in_its_spectrum_unless_told_not_to(session, shared):
    """EMD-3488 (masked, low-passed near 3.1 Å): the command finds its cut as cryores.predict does,
    says so in the log, and ``findCut false`` reads it without the search."""
    path = shared / "data" / "maps" / "emd_3488.mrc"
    spec = open_volume(session, path).atomspec
    density = volume_by_spec(session, spec).full_matrix().astype(np.float32)
    voxel = tuple(float(v) for v in reversed(volume_by_spec(session, spec).data.step))  # z, y, x as ChimeraX reads it
    found, plain = cryores.predict(density, voxel), cryores.predict(density, voxel, find_cut=False)
    assert found.found_cut == pytest.approx(3.2, rel=0.05) and plain.found_cut is None
    log = log_text(run(session, f"cryores predict {spec}"))
    assert f"low-pass cut found in its spectrum: {found.found_cut:.2f} Å" in log, log
    scaled = volume_by_spec(session, re.search(r"opened (#\d+)", log)[1])
    np.testing.assert_allclose(scaled.full_matrix(), found.resolution, rtol=1e-5, atol=1e-4)
    log = log_text(run(session, f"cryores predict {spec} findCut false"))
    assert "found in its spectrum" not in log, log
    unscaled = volume_by_spec(session, re.search(r"opened (#\d+)", log)[1])
    np.testing.assert_allclose(unscaled.full_matrix(), plain.resolution, rtol=1e-5, atol=1e-4)
    assert plain.summary.median > found.summary.median * 1.1  # the found cut moved the whole map
    run(session, f"close {spec} {scaled.atomspec} {unscaled.atomspec}")


# ----------------------------------------------------------------------------- bad input


def test_bad_input_gives_one_line_user_errors_and_the_session_stays_usable(session, predicted, emd_5168, shared,
                                                                            tmp_path):
    """Wrong model type, a missing model, mismatched grids, bad options, a missing model card:
    each a one-line UserError, nothing opened, and the session still works afterwards."""
    structure = open_volume(session, shared / "data" / "maps" / "emd_5168_model_3mfp.pdb").atomspec
    small = write_mrc(tmp_path / "small.mrc", synthetic_map(shape=(40, 40, 40)), voxel_size=1.742)
    other_grid = open_volume(session, small).atomspec
    far = open_volume(session, write_mrc(tmp_path / "far.mrc", np.full((100, 100, 100), 4.0, np.float32),
                                         voxel_size=1.742, origin=(1000.0, 0.0, 0.0))).atomspec
    cases = [
        (f"cryores predict {structure}", r"one map, got 0"),
        ("cryores predict #77", r"one map, got 0"),
        ("cryores color #1", r"resolution"),
        ("cryores color #1 resolution #1", r"by itself"),
        (f"cryores color #1 resolution {far}", r"100 % of #1's surface lies outside the box of #\d+"),
        (f"cryores predict #1 mask {other_grid}", r"mask #\d+ has grid size"),
        (f"cryores localfsc #1 {other_grid}", r"half map 2 #\d+ has grid size"),
        ("cryores localfsc #1", r"two half maps.*got 1"),
        (f"cryores localfsc #1 #2 {other_grid}", r"two half maps.*got 3"),
        ("cryores predict #1 samples 1", r"samples must be 0 or at least 2"),
        ("cryores predict #1 lowpassCut -3", r"low-pass cut must be a finite positive number"),
        ("cryores predict #1 palette nope", r"unknown palette"),
        ("cryores predict #1 range 6,2", r"LOW < HIGH"),
        (f"cryores predict #1 model {tmp_path / 'missing.json'}", r"missing\.json|model"),
    ]
    for command, pattern in cases:
        check_user_error(session, command, pattern)
    run(session, f"close {structure} {other_grid} {far}")
    log = log_text(run(session, "cryores color #1 resolution #2"))
    assert "median" in log and len(np.unique(np.asarray(surface_of(volume_by_spec(session, "#1")).vertex_colors),
                                             axis=0)) > 100


# ----------------------------------------------------------------------------- the .cxc from `cryores chimerax`


def test_cxc_written_by_cryores_chimerax_runs_and_colours_the_surface(session, reference, emd_5168, tmp_path):
    """``cryores chimerax`` (the ``make demo`` script) in a fresh session: no error or warning,
    the map's surface coloured like the prediction says, grey outside the mask, key shown."""
    locres_path = write_map(tmp_path / "emd_5168_locres.mrc", reference.resolution, read_map(emd_5168))
    map_copy = tmp_path / "emd_5168.map"
    shutil.copyfile(emd_5168, map_copy)
    script = write_chimerax_script(map_copy, locres_path)
    run(session, "close session")
    log = run(session, f"open {script}")
    assert not [m for level, m in log if level in ("error", "bug", "warning")], log
    density, locres = volume_by_spec(session, "#1"), volume_by_spec(session, "#2")
    surface = surface_of(density)
    values = sampled_values(surface, locres)
    colors = np.asarray(surface.vertex_colors, dtype=float)
    low, high = range_from_values(reference.resolution)
    minimum = float(resolution_values(reference.resolution).min())
    check_colors(colors, values, palette_points(PALETTES["turbo"], (low, high), minimum))
    assert len(np.unique(colors.astype(np.uint8), axis=0)) > 100
    assert key_model(session) is not None and not locres.display
    session.cryores_cxc = script


# ----------------------------------------------------------------------------- cautions


def test_predict_on_a_map_coarser_than_any_training_map_warns_in_the_log(session, tmp_path):
    """A 7 Å/px map (the model was trained on 0.5-6 Å/px): the result still opens, and cryores'
    caution reaches the log as a warning, not an error."""
    path = write_mrc(tmp_path / "coarse.mrc", synthetic_map((40, 40, 40)), voxel_size=7.0)
    run(session, "close session")
    volume = open_volume(session, path)
    log = run(session, f"cryores predict {volume.atomspec}")
    warnings = [text for level, text in log if level == "warning"]
    assert any("voxel size 7 Å/px is outside the 0.5–6 Å/px" in text for text in warnings), log
    assert not [text for level, text in log if level in ("error", "bug")], log
    assert len(models(session)) >= 2  # the map and its local resolution
