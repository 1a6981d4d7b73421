"""The ChimeraX bundle (chimerax_bundle/) outside ChimeraX.

ChimeraX cannot be installed here. Tests whose name ends in ``_with_standin_chimerax`` replace
the ``chimerax.*`` modules by small stand-ins defined in this file (recording ``run`` commands,
``register`` calls, grids and opened volumes) and import the bundle's real ``__init__.py`` and
``cmd.py`` against them; cryores itself (predict, local_fsc) runs for real. They check what
the bundle asks of ChimeraX, not that ChimeraX accepts it. The plain helpers (grid geometry,
progress) and the bundle metadata are tested without stand-ins.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import cryores
from conftest import synthetic_map
from cryores.chimerax_script import PALETTES, key_command, range_from_summary, range_from_values
from cryores.errors import CryoResError, NoModelInstalledError
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
    tomllib = pytest.importorskip("tomllib")
    data = tomllib.loads((BUNDLE / "pyproject.toml").read_text())
    assert data["project"]["name"] == "ChimeraX-CryoRes"
    assert data["project"]["name"].replace("-", ".").lower() == "chimerax.cryores"  # the package name it builds
    assert data["build-system"]["build-backend"] == "chimerax.bundle_builder.cx_pep517"
    chimerax = data["tool"]["chimerax"]
    assert set(chimerax["command"]) == {"cryores predict", "cryores color", "cryores localfsc"}
    for folder, files in chimerax["package-data"].items():
        for name in files:
            assert (BUNDLE / folder / name).is_file()
    assert {"classifiers", "requires-python"} <= set(data["project"]["dynamic"])


# ----------------------------------------------------------------------------- stand-ins for ChimeraX


class StandinUserError(Exception):
    """Stands in for chimerax.core.errors.UserError."""


class StandinCmdDesc:
    def __init__(self, required=(), optional=(), keyword=(), required_arguments=(), synopsis=None):
        self.required, self.optional, self.keyword = list(required), list(optional), list(keyword)
        self.required_arguments, self.synopsis = list(required_arguments), synopsis


class StandinGridData:
    """Stands in for chimerax.map_data.ArrayGridData: keeps what it was given."""

    def __init__(self, array, origin=(0, 0, 0), step=(1, 1, 1), cell_angles=(90, 90, 90), rotation=None, name=""):
        self.array, self.origin, self.step = array, tuple(origin), tuple(step)
        self.cell_angles, self.rotation, self.name = cell_angles, rotation, name


class StandinVolume:
    """Stands in for chimerax.map.Volume: matrix (z, y, x), data.step/origin (x, y, z), atomspec."""

    def __init__(self, session, matrix, step=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), name="map"):
        session.next_id += 1
        self.id_number = session.next_id
        self.atomspec = f"#{self.id_number}"
        self.name = name
        self.matrix = matrix
        self.data = StandinGridData(matrix, origin, step, name=name)
        self.data.rotation = ((1, 0, 0), (0, 1, 0), (0, 0, 1))
        self.scene_position = ("place", self.id_number)
        self.position = None
        session.models.append(self)

    def full_matrix(self):
        return self.matrix


class StandinLogger:
    def __init__(self):
        self.infos: list[str] = []
        self.statuses: list[str] = []

    def info(self, text, **_):
        self.infos.append(text)

    def status(self, text, **_):
        self.statuses.append(text)


class StandinSession:
    def __init__(self):
        self.logger = StandinLogger()
        self.commands: list[str] = []
        self.models: list[StandinVolume] = []
        self.next_id = 0


def _standin_modules(registered: list) -> dict[str, types.ModuleType]:
    def module(name, **attributes):
        created = types.ModuleType(name)
        created.__dict__.update(attributes)
        return created

    def run(session, text, **_):
        session.commands.append(text)

    def register(name, desc, function, logger=None):
        registered.append((name, desc, function))

    def volume_from_grid_data(grid, session):
        volume = StandinVolume(session, grid.array, grid.step, grid.origin, grid.name)
        volume.data = grid
        return volume

    def arg(name):
        return type(name, (), {})

    commands = module("chimerax.core.commands", CmdDesc=StandinCmdDesc, run=run, register=register,
                      Or=lambda *a: ("Or", a), TupleOf=lambda a, n: ("TupleOf", a, n),
                      EnumOf=lambda values: ("EnumOf", tuple(values)),
                      **{n: arg(n) for n in ("BoolArg", "FloatArg", "IntArg", "OpenFileNameArg", "StringArg")})
    chimerax = module("chimerax")
    chimerax.__path__ = []
    core = module("chimerax.core")
    core.__path__ = []
    return {
        "chimerax": chimerax, "chimerax.core": core, "chimerax.core.commands": commands,
        "chimerax.core.errors": module("chimerax.core.errors", UserError=StandinUserError),
        "chimerax.core.toolshed": module("chimerax.core.toolshed", BundleAPI=type("BundleAPI", (), {})),
        "chimerax.map": module("chimerax.map", MapArg=arg("MapArg"), volume_from_grid_data=volume_from_grid_data),
        "chimerax.map_data": module("chimerax.map_data", ArrayGridData=StandinGridData),
    }


@pytest.fixture
def bundle(monkeypatch):
    """The bundle's real __init__ and cmd modules, imported against stand-in chimerax modules."""
    registered: list = []
    for name in [n for n in sys.modules if n == "chimerax" or n.startswith("chimerax.")]:
        monkeypatch.delitem(sys.modules, name)
    for name, module in _standin_modules(registered).items():
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location("chimerax.cryores", SRC / "__init__.py",
                                                  submodule_search_locations=[str(SRC)])
    package = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "chimerax.cryores", package)
    spec.loader.exec_module(package)
    cmd = importlib.import_module("chimerax.cryores.cmd")
    yield types.SimpleNamespace(package=package, cmd=cmd, registered=registered)
    for name in ("chimerax.cryores.cmd", "chimerax.cryores.progress"):
        sys.modules.pop(name, None)


@pytest.fixture
def spy_predict(monkeypatch):
    """Wrap the real cryores.predict to record its arguments and result."""
    calls: list = []
    real = cryores.predict

    @functools.wraps(real)  # keeps predict's signature, which the bundle inspects
    def spy(*args, **kwargs):
        result = real(*args, **kwargs)
        calls.append((args, kwargs, result))
        return result

    monkeypatch.setattr(cryores, "predict", spy)
    return calls


def test_register_command_with_standin_chimerax(bundle):
    """ChimeraX calls register_command once per pyproject command; each maps to cmd.COMMANDS."""
    api = bundle.package.bundle_api
    assert api.api_version == 1
    for name in ("cryores predict", "cryores color", "cryores localfsc"):
        api.register_command(None, types.SimpleNamespace(name=name, synopsis="s"), None)
    assert [(n, d, f) for n, d, f in bundle.registered] == [
        (n, bundle.cmd.COMMANDS[n][1], bundle.cmd.COMMANDS[n][0]) for n in bundle.cmd.COMMANDS]
    with pytest.raises(ValueError, match="no command"):
        api.register_command(None, types.SimpleNamespace(name="cryores nope", synopsis=""), None)


def test_help_page_documents_every_keyword_with_standin_chimerax(bundle):
    """Every keyword of every CmdDesc (read from the real cmd.py) appears in the help page."""
    html = (SRC / "docs" / "user" / "commands" / "cryores.html").read_text(encoding="utf-8")
    for name, (_, desc) in bundle.cmd.COMMANDS.items():
        assert f"<b>{name}</b>" in html
        for keyword, _ in desc.keyword:
            assert re.search(rf"<b>{keyword}</b>", html), (name, keyword)


def test_predict_passes_voxel_size_and_colours_with_standin_chimerax(bundle, spy_predict, model_card):
    """cryores predict: real prediction on a stand-in volume with an anisotropic grid; checks the
    voxel size handed to cryores (z, y, x), the new volume's grid and position, and the exact
    built-in commands run."""
    session = StandinSession()
    density = synthetic_map()
    volume = StandinVolume(session, density, step=(1.0, 1.1, 1.2), origin=(10.0, -5.0, 2.5), name="emd")
    locres = bundle.cmd.cryores_predict(session, volume, device="cpu", model=str(model_card))

    (args, kwargs, result), = spy_predict
    assert args[1] == (1.2, 1.1, 1.0)
    np.testing.assert_array_equal(args[0], density)
    assert kwargs["model"] == str(model_card) and kwargs["samples"] == 0 and kwargs["device"] == "cpu"
    if bundle.cmd.accepts_progress_callback(cryores.predict):
        assert callable(kwargs["progress"])
    else:  # a bool-only predict would draw a terminal bar for any truthy value
        assert kwargs["progress"] is False

    grid = locres.data
    assert grid.array is result.resolution and grid.name == "emd local resolution"
    assert grid.origin == (10.0, -5.0, 2.5) and grid.step == (1.0, 1.1, 1.2)
    assert locres.position == volume.scene_position and locres.atomspec == "#2"
    low, high = range_from_summary(result.summary)
    assert session.commands == [
        "volume #1 style surface",
        "volume #2 hide",
        f"color sample #1 map #2 palette {TURBO} range {low:g},{high:g}",
        key_command(PALETTES["turbo"], (low, high)),
    ]
    assert result.summary.line() in session.logger.infos[-1]


def test_predict_with_samples_opens_uncertainty_with_standin_chimerax(bundle, spy_predict, model_card):
    """samples 2: mean and MC-dropout std open as #2 and #3, both hidden; no key when key false."""
    session = StandinSession()
    volume = StandinVolume(session, synthetic_map())
    bundle.cmd.cryores_predict(session, volume, samples=2, device="cpu", model=str(model_card), key=False,
                               palette="rainbow", range="full")
    (_, _, result), = spy_predict
    std = session.models[2]
    assert std.atomspec == "#3" and std.data.array is result.uncertainty
    low, high = range_from_values(result.resolution, "full")
    assert session.commands == ["volume #3 hide", "volume #1 style surface", "volume #2 hide",
                                f"color sample #1 map #2 palette {':'.join(PALETTES['rainbow'])} "
                                f"range {low:g},{high:g}"]


def test_predict_errors_are_user_errors_with_standin_chimerax(bundle, model_card, monkeypatch):
    """No model, a mask on another grid, bad samples or palette: UserError, nothing opened."""
    session = StandinSession()
    volume = StandinVolume(session, synthetic_map())
    mask = StandinVolume(session, np.ones((40, 40, 30), np.float32))
    cases = [({"mask": mask, "model": str(model_card)}, "mask #2 has grid size"),
             ({"samples": 1}, "samples must be 0 or at least 2"),
             ({"palette": "nope"}, "unknown palette"),
             ({"range": (6.0, 2.0)}, "LOW < HIGH")]
    for options, message in cases:
        with pytest.raises(StandinUserError, match=message):
            bundle.cmd.cryores_predict(session, volume, **options)

    def no_model(*args, **kwargs):
        raise NoModelInstalledError("no trained model is installed; give a model card")

    monkeypatch.setattr(cryores, "predict", no_model)
    with pytest.raises(StandinUserError, match="no trained model"):
        bundle.cmd.cryores_predict(session, volume)
    assert len(session.models) == 2 and session.commands == []


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
        bundle.cmd.cryores_color(StandinSession(), object(), resolution=object())


def test_progress_callback_reaches_the_status_line_with_standin_chimerax(bundle, monkeypatch):
    """When predict accepts a (done, total) callback, the bundle passes one that writes the status line."""

    def predict(density, voxel_size, mask=None, *, progress: bool | Callable[[int, int], None] = False,  # noqa: F821
                **_):
        for done in (1, 2, 3, 4):
            progress(done, 4)
        resolution = np.where(density > 0.2, 4.0, 0.0).astype(np.float32)
        return cryores.Prediction(resolution, resolution > 0, None,
                                  cryores.ResolutionSummary(4.0, 4.0, 4.0, 10, 0.1), "fake", voxel_size)

    monkeypatch.setattr(cryores, "predict", predict)
    session = StandinSession()
    bundle.cmd.cryores_predict(session, StandinVolume(session, synthetic_map()))
    assert "cryores #1: 4/4 patches (100 %)" in session.logger.statuses
    assert session.commands[2].endswith("range 4,4.1")


def test_color_by_any_locres_map_with_standin_chimerax(bundle):
    """cryores color: range from the map's positive values, exact commands, summary in the log."""
    session = StandinSession()
    density = synthetic_map()
    locres = np.where(density > 0.1, 3.0 + density * 4, 0).astype(np.float32)
    volume = StandinVolume(session, density)
    resolution = StandinVolume(session, locres)
    bundle.cmd.cryores_color(session, volume, resolution=resolution)
    low, high = range_from_values(locres)
    assert session.commands == ["volume #1 style surface", "volume #2 hide",
                                f"color sample #1 map #2 palette {TURBO} range {low:g},{high:g}",
                                key_command(PALETTES["turbo"], (low, high))]
    median = np.median(locres[locres > 0])
    assert f"median {median:.2f} Å" in session.logger.infos[-1]
    bundle.cmd.cryores_color(session, volume, resolution=resolution, range=(2.0, 9.0), key=False)
    assert session.commands[-1].endswith("range 2,9")
    with pytest.raises(StandinUserError, match="no positive value"):
        bundle.cmd.cryores_color(session, volume, resolution=StandinVolume(session, np.zeros_like(locres)))
    with pytest.raises(StandinUserError, match="by itself"):
        bundle.cmd.cryores_color(session, volume, resolution=volume)


def test_localfsc_with_standin_chimerax(bundle, monkeypatch):
    """cryores localfsc: real local FSC of two half maps; result on half map 1's grid; colouring of #MAP."""
    calls = []
    real = cryores.local_fsc

    def spy(*args, **kwargs):
        result = real(*args, **kwargs)
        calls.append((args, kwargs, result))
        return result

    monkeypatch.setattr(cryores, "local_fsc", spy)
    session = StandinSession()
    rng = np.random.default_rng(1)
    signal = synthetic_map(noise=0.0)
    half1 = StandinVolume(session, signal + rng.normal(0, 0.05, signal.shape).astype(np.float32),
                          step=(1.5, 1.5, 1.5), origin=(1.0, 2.0, 3.0))
    half2 = StandinVolume(session, signal + rng.normal(0, 0.05, signal.shape).astype(np.float32),
                          step=(1.5, 1.5, 1.5), origin=(1.0, 2.0, 3.0))
    full = StandinVolume(session, signal)
    locres = bundle.cmd.cryores_localfsc(session, half1, half2, window=24.0, color=full)
    (args, kwargs, result), = calls
    assert args[2] == (1.5, 1.5, 1.5) and kwargs["window"] == 24.0
    assert locres.atomspec == "#4" and locres.data.origin == (1.0, 2.0, 3.0) and locres.data.array is result.resolution
    low, high = range_from_summary(result.summary)
    assert session.commands[:3] == ["volume #3 style surface", "volume #4 hide",
                                    f"color sample #3 map #4 palette {TURBO} range {low:g},{high:g}"]
    other = StandinVolume(session, signal[:, :, :30], step=(1.5, 1.5, 1.5), origin=(1.0, 2.0, 3.0))
    with pytest.raises(StandinUserError, match="half map 2 #5 has grid size"):
        bundle.cmd.cryores_localfsc(session, half1, other)
