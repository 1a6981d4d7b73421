"""The ChimeraX bundle (chimerax_bundle/) outside ChimeraX: what a real session cannot test.

The bundle itself is built, installed and run in a real ChimeraX 1.7.1 by tests/chimerax/
(make test-chimerax). What stays here: the plain helpers (grid geometry, progress), the
bundle metadata, and a ChimeraX whose Python lacks torch or cryores, which the real test
session (that has both) cannot be. Tests named ``_with_standin_chimerax`` import the bundle's
real ``__init__.py`` and ``cmd.py`` against small stand-in ``chimerax.*`` modules defined here.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import cryores
from cryores.chimerax_script import PALETTES
from cryores.errors import CryoResError
from cryores.volume_grid import check_same_grid, density_array, grid_geometry

BUNDLE = Path(__file__).resolve().parents[1] / "chimerax_bundle"
SRC = BUNDLE / "src"
TURBO = ":".join(PALETTES["turbo"])


# ----------------------------------------------------------------------------- plain: grid geometry


def test_grid_geometry_reverses_step_for_array_axes():
    geometry = grid_geometry(np.zeros((4, 5, 6)), (1.0, 1.1, 1.2), (10, -5, 2.5))
    assert geometry.shape_zyx == (4, 5, 6)
    assert geometry.voxel_size_zyx == (1.2, 1.1, 1.0)
    assert geometry.grid_data_arguments() == {"origin": (10.0, -5.0, 2.5), "step": (1.0, 1.1, 1.2)}


@pytest.mark.parametrize(("matrix", "step", "origin", "message"), [
    (np.zeros((4, 5)), (1, 1, 1), (0, 0, 0), "3-D"),
    (np.zeros((4, 5, 6)), (1, 0, 1), (0, 0, 0), "voxel size"),
    (np.zeros((4, 5, 6)), (1, 1), (0, 0, 0), "voxel size"),
    (np.zeros((4, 5, 6)), (1, 1, 1), (0, np.nan, 0), "origin"),
])
def test_grid_geometry_refuses_bad_grids(matrix, step, origin, message):
    with pytest.raises(CryoResError, match=message):
        grid_geometry(matrix, step, origin, "map #1")


def test_same_grid_tolerates_round_off_but_not_real_differences():
    grid = grid_geometry(np.zeros((4, 5, 6)), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    check_same_grid(grid, grid_geometry(np.zeros((4, 5, 6)), (1.0000001, 1, 1), (1e-4, 0, 0)), "mask")
    for other, message in [(grid_geometry(np.zeros((4, 5, 7)), (1, 1, 1), (0, 0, 0)), "grid size"),
                           (grid_geometry(np.zeros((4, 5, 6)), (1.1, 1, 1), (0, 0, 0)), "voxel size"),
                           (grid_geometry(np.zeros((4, 5, 6)), (1, 1, 1), (0, 0, 0.5)), "origin")]:
        with pytest.raises(CryoResError, match=message):
            check_same_grid(grid, other, "mask #2")


def test_density_array_is_a_float32_contiguous_copy():
    source = np.arange(24, dtype=np.int8).reshape(2, 3, 4)[:, :, ::2]
    copied = density_array(source)
    assert copied.dtype == np.float32 and copied.flags.c_contiguous
    copied[0, 0, 0] = 99
    assert source[0, 0, 0] == 0


# ----------------------------------------------------------------------------- plain: progress


def _load_plain(name: str):
    """Import a ChimeraX-free module of the bundle (no stand-ins needed)."""
    spec = importlib.util.spec_from_file_location(f"cryores_bundle_{name}", SRC / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_status_progress_is_throttled_but_always_shows_the_end():
    progress = _load_plain("progress")
    now = [0.0]
    shown: list[str] = []
    reporter = progress.StatusProgress(shown.append, "cryores #1", min_interval=0.5, clock=lambda: now[0])
    for done in range(1, 11):
        now[0] += 0.1
        reporter(done, 10)
    assert shown[0] == "cryores #1: 1/10 patches (10 %)"
    assert shown[-1] == "cryores #1: 10/10 patches (100 %)"
    assert 2 <= len(shown) <= 4  # every ~0.5 s plus the end, not 10 redraws
    assert progress.StatusProgress(shown.append, "cryores #2", "").message(3, 4) == "cryores #2: 3/4 (75 %)"


def test_accepts_progress_callback_reads_the_signature():
    progress = _load_plain("progress")

    def old(density, progress: bool = False): ...

    def new(density, progress: bool | Callable[[int, int], None] = False): ...  # noqa: F821 (string annotation)

    def none(density): ...

    assert not progress.accepts_progress_callback(old)
    assert progress.accepts_progress_callback(new)
    assert not progress.accepts_progress_callback(none)


# ----------------------------------------------------------------------------- metadata and help


def test_pyproject_declares_the_bundle_and_its_commands():
    """ChimeraX 1.7's builder reads a top-level [chimerax] table (KeyError: 'chimerax' with
    [tool.chimerax] only); later builders read it too."""
    tomllib = pytest.importorskip("tomllib")
    data = tomllib.loads((BUNDLE / "pyproject.toml").read_text())
    assert data["project"]["name"] == "ChimeraX-CryoRes"
    assert data["project"]["name"].replace("-", ".").lower() == "chimerax.cryores"  # the package name it builds
    assert data["build-system"]["build-backend"] == "chimerax.bundle_builder.cx_pep517"
    assert "chimerax" not in data.get("tool", {})
    chimerax = data["chimerax"]
    assert set(chimerax["command"]) == {"cryores predict", "cryores color", "cryores localfsc"}
    for folder, files in chimerax["package-data"].items():
        for name in files:
            assert (BUNDLE / folder / name).is_file()
    assert {"classifiers", "requires-python"} <= set(data["project"]["dynamic"])
    assert "ChimeraX-Core >=1.7" in data["project"]["dependencies"]


def test_the_bundle_declares_one_version_and_it_is_cryores_own():
    """The bundle ships with the package it wraps: pyproject.toml (what ChimeraX's builder and
    toolshed read), the package's ``__version__`` and cryores' version are one number."""
    import re

    import cryores

    tomllib = pytest.importorskip("tomllib")
    declared = tomllib.loads((BUNDLE / "pyproject.toml").read_text())["project"]["version"]
    package = re.search(r'^__version__ = "([^"]+)"$', (BUNDLE / "src" / "__init__.py").read_text(), re.M)
    assert package is not None and declared == package.group(1) == cryores.__version__


def test_chimerax_constraints_keep_pkg_resources_and_readable_metadata():
    """setuptools<81 keeps pkg_resources (1.7's builder imports it); pkginfo>=1.12 reads the
    Metadata-Version 2.4 that setuptools>=77 (required by torch 2.13) writes into the wheel."""
    lines = [line.split("#")[0].strip() for line in (BUNDLE / "constraints-chimerax.txt").read_text().splitlines()]
    assert {"setuptools<81", "pkginfo>=1.12,<2", "numpy<2"} <= set(lines)


def test_predict_accepts_a_status_line_callback():
    """cryores.predict / local_fsc declare ``progress`` through a postponed alias; the bundle must
    still see that they take a callable (else no status-line progress in ChimeraX)."""
    progress = _load_plain("progress")
    assert progress.accepts_progress_callback(cryores.predict)
    assert progress.accepts_progress_callback(cryores.local_fsc)


# ----------------------------------------------------------------------------- stand-ins for ChimeraX


class StandinUserError(Exception):
    """Stands in for chimerax.core.errors.UserError."""


def _standin_modules() -> dict[str, types.ModuleType]:
    """Just enough of chimerax.* for the bundle's modules to import."""

    def module(name, **attributes):
        created = types.ModuleType(name)
        created.__dict__.update(attributes)
        return created

    def arg(name):
        return type(name, (), {})

    def call(*args, **kwargs):
        return (args, kwargs)

    commands = module("chimerax.core.commands", CmdDesc=call, run=call, register=call, Or=call, TupleOf=call,
                      EnumOf=call,
                      **{n: arg(n) for n in ("BoolArg", "FloatArg", "IntArg", "OpenFileNameArg", "StringArg")})
    chimerax = module("chimerax")
    chimerax.__path__ = []
    core = module("chimerax.core")
    core.__path__ = []
    return {
        "chimerax": chimerax, "chimerax.core": core, "chimerax.core.commands": commands,
        "chimerax.core.errors": module("chimerax.core.errors", UserError=StandinUserError),
        "chimerax.core.toolshed": module("chimerax.core.toolshed", BundleAPI=type("BundleAPI", (), {})),
        "chimerax.map": module("chimerax.map", MapArg=arg("MapArg"), MapsArg=arg("MapsArg")),
    }


@pytest.fixture
def bundle(monkeypatch):
    """The bundle's real __init__ and cmd modules, imported against stand-in chimerax modules."""
    for name in [n for n in sys.modules if n == "chimerax" or n.startswith("chimerax.")]:
        monkeypatch.delitem(sys.modules, name)
    for name, module in _standin_modules().items():
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location("chimerax.cryores", SRC / "__init__.py",
                                                  submodule_search_locations=[str(SRC)])
    package = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "chimerax.cryores", package)
    spec.loader.exec_module(package)
    cmd = importlib.import_module("chimerax.cryores.cmd")
    yield types.SimpleNamespace(package=package, cmd=cmd)
    for name in ("chimerax.cryores.cmd", "chimerax.cryores.progress"):
        sys.modules.pop(name, None)


def test_missing_torch_is_a_user_error_with_standin_chimerax(bundle, monkeypatch):
    """cryores importable but torch missing: the message names torch and how to install it."""
    before = set(sys.modules)
    for name in [n for n in sys.modules if n == "cryores" or n.startswith("cryores.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "torch", None)
    try:
        with pytest.raises(StandinUserError) as caught:
            bundle.cmd.import_cryores()
    finally:  # drop half-imported modules; monkeypatch puts the real ones back
        for name in set(sys.modules) - before:
            del sys.modules[name]
    message = str(caught.value)
    assert "PyTorch (torch) is not installed" in message and "pip install" in message
    assert "\n" not in message


def test_missing_cryores_is_a_user_error_with_standin_chimerax(bundle, monkeypatch):
    monkeypatch.setitem(sys.modules, "cryores", None)
    with pytest.raises(StandinUserError, match="'cryores' is not installed"):
        bundle.cmd.cryores_color(types.SimpleNamespace(), object(), resolution=object())
