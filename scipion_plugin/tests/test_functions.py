"""The plugin's plain functions (what the protocol and viewer delegate to), without Scipion runs."""

from __future__ import annotations

import numpy as np
import pytest
from cryores_scipion import estimate
from cryores_scipion.viewers import resolution_data as data

from conftest import blob, sphere_mask, write_mrc
from cryores.chimerax_script import PALETTES, key_command, palette_points, palette_values_spec


@pytest.fixture
def locres() -> np.ndarray:
    """A resolution-like map: 3-8 Å inside a sphere, 0 outside."""
    mask = sphere_mask() > 0.5
    values = np.zeros(mask.shape, np.float32)
    values[mask] = np.linspace(3.0, 8.0, int(mask.sum()), dtype=np.float32)
    return values


def test_plain_path_and_mrc_check():
    assert estimate.plain_path("Runs/001/extra/map.mrc:mrc") == "Runs/001/extra/map.mrc"
    assert estimate.plain_path("map.map") == "map.map"
    assert estimate.is_mrc_path("a/map.mrc:mrc") and estimate.is_mrc_path("emd_1.map.gz")
    assert not estimate.is_mrc_path("volume.vol") and not estimate.is_mrc_path("volume.spi")


def test_model_problem(tmp_path, monkeypatch):
    import cryores.model_card

    assert estimate.core_problem() is None
    card = tmp_path / "card.json"
    card.write_text("{}")
    assert estimate.model_problem(str(card)) is None  # the core checks the card's content at run time
    assert "does not exist" in estimate.model_problem(str(tmp_path / "missing.json"))
    monkeypatch.setattr(cryores.model_card, "installed_card_path", lambda: None)
    assert "no trained cryores model is installed" in estimate.model_problem(None)
    monkeypatch.setattr(cryores.model_card, "installed_card_path", lambda: card)
    assert estimate.model_problem(None) is None


def test_central_slices_follow_scipion_axes(locres):
    volume = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6) + 1  # (z, y, x)
    z = data.central_slices(volume, "z")
    x = data.central_slices(volume, "x", count=2)
    assert all(image.shape == (5, 6) for _, image in z)
    assert [index for index, _ in x] == [2, 4] and all(image.shape == (4, 5) for _, image in x)
    assert np.array_equal(x[0][1], volume[:, :, 2])
    (_, middle), = data.central_slices(locres, "y", count=1)
    assert middle.mask.any() and not middle.mask.all()  # outside the mask is blank, not 0 Å
    with pytest.raises(ValueError):
        data.central_slices(volume, "w")


def test_histogram_and_colour_range(locres):
    counts, edges = data.histogram(locres)
    assert counts.sum() == int((locres > 0).sum())
    assert edges[0] == pytest.approx(3.0) and edges[-1] == pytest.approx(8.0)
    low, high = data.colour_range(locres)
    assert 3.0 <= low < high <= 8.0


def test_chimerax_palette():
    palette = data.chimerax_palette("viridis", 5)
    colours = palette.split(":")
    assert len(colours) == 5 and all(c.startswith("#") and len(c) == 7 for c in colours)
    assert colours[0] == "#440154" and colours[-1] == "#fde725"


def test_chimerax_script_from_the_core_writer(tmp_path, locres):
    density = write_mrc(tmp_path / "map.mrc", blob())
    resolution = write_mrc(tmp_path / "resolution.mrc", locres)
    script = data.write_chimerax_script(density + ":mrc", resolution, tmp_path / "view.cxc",
                                        palette=data.chimerax_palette("viridis", 3), color_range=(3.0, 8.0))
    lines = script.read_text().splitlines()
    assert "open map.mrc" in lines and "open resolution.mrc" in lines
    minimum = float(locres[locres > 0].min())
    colours = ("#440154", "#21918c", "#fde725")
    spec = palette_values_spec(palette_points(colours, (3.0, 8.0), minimum))
    assert f"color sample #1 map #2 palette {spec}" in lines  # grey below the smallest value, then 3-8 Å
    assert key_command(colours, (3.0, 8.0)) in lines
    # Written again (the viewer does so on every click): overwritten; default range 5-95 %.
    data.write_chimerax_script(density, resolution, script)
    assert key_command(PALETTES["turbo"], (3.2, 7.8)) in script.read_text().splitlines()
