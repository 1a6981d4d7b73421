"""The plugin as Scipion sees it: entry point, registration, references and menu placement."""

from __future__ import annotations

from importlib import metadata

import cryores_scipion
import pyworkflow as pw
from cryores_scipion.protocols import ProtCryoResLocalResolution
from pwem.protocols import ProtAnalysis3D
from pyworkflow.gui.project.viewprotocols_extra import ProtocolTreeConfig

PLUGIN = "cryores_scipion"


def _menu_paths(node, path=()):
    """Yield (path of menu texts, protocol class name) for every protocol in a menu tree."""
    text = str(node.text.get() if hasattr(node.text, "get") else node.text)
    value = node.value.get() if hasattr(node.value, "get") else node.value
    if value:
        yield path, value
    for child in node.childs:
        yield from _menu_paths(child, path + (text,))


def test_entry_point_names_the_module():
    names = [ep.name for ep in metadata.entry_points(group="pyworkflow.plugin")]
    assert PLUGIN in names
    assert metadata.version("scipion-em-cryores") == cryores_scipion.__version__


def test_scipion_registers_plugin_protocol_and_references():
    domain = pw.Config.getDomain()
    plugins = domain.getPlugins()
    assert PLUGIN in plugins
    assert isinstance(plugins[PLUGIN]._pluginInstance, cryores_scipion.Plugin)
    assert domain.getProtocols()["ProtCryoResLocalResolution"] is ProtCryoResLocalResolution
    assert issubclass(ProtCryoResLocalResolution, ProtAnalysis3D)
    assert ProtCryoResLocalResolution.getClassLabel() == "cryores_scipion - local resolution"
    bibtex = plugins[PLUGIN]._bibtex
    for key in cryores_scipion._references:
        assert key in bibtex, key
    assert bibtex["Kucukelbir2014"]["doi"] == "10.1038/nmeth.2727"
    assert bibtex["Cardone2013"]["doi"] == "10.1016/j.jsb.2013.08.002"
    # the citation names this release and what the shipped model reads (it is no U-Net since v3)
    assert bibtex["cryores"]["journal"] == f"cryores software {cryores_scipion.__version__}"
    assert "spectral evidence" in bibtex["cryores"]["title"] and "U-Net" not in bibtex["cryores"]["title"]


def test_protocol_appears_under_3d_analysis_resolution():
    tree = ProtocolTreeConfig.load(pw.Config.getDomain(), "/nonexistent/protocols.conf")
    paths = [path for path, value in _menu_paths(tree["Protocols SPA"]) if value == "ProtCryoResLocalResolution"]
    assert any(path[-3:] == ("3D", "Analysis", "Resolution") for path in paths), paths
