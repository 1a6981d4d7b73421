"""Scipion viewer of the cryores protocol: slices, histogram, ChimeraX colouring.

A thin GUI layer: every number and file it shows comes from :mod:`.resolution_data`.
"""

from __future__ import annotations

from pwem.constants import AX_Z
from pwem.viewers import ChimeraView, DataView, EmPlotter, LocalResolutionViewer
from pwem.wizards import ColorScaleWizardBase
from pyworkflow.protocol.params import EnumParam, LabelParam
from pyworkflow.viewer import DESKTOP_TKINTER

from ..constants import CHIMERAX_SCRIPT_FILE, OUTPUT_RESOLUTION, OUTPUT_UNCERTAINTY
from ..protocols import ProtCryoResLocalResolution
from . import resolution_data as data

DEFAULT_COLORMAP = "turbo"


class CryoResViewer(LocalResolutionViewer):
    """Visualise a cryores local-resolution map: slices, histogram, surface coloured in ChimeraX."""

    _label = "cryores viewer"
    _targets = [ProtCryoResLocalResolution]
    _environments = [DESKTOP_TKINTER]

    def _defineParams(self, form) -> None:
        form.addSection(label="Visualization")
        form.addParam("doShowVolumeSlices", LabelParam, label="Show resolution map slices")
        form.addParam("doShowResHistogram", LabelParam, label="Show resolution histogram")
        group = form.addGroup("Coloured slices and ChimeraX")
        group.addParam("sliceAxis", EnumParam, default=AX_Z, choices=list(data.AXES),
                       display=EnumParam.DISPLAY_HLIST, label="Slice axis")
        group.addParam("doShowVolumeColorSlices", LabelParam, label="Show coloured resolution slices")
        if self.protocol.hasAttribute(OUTPUT_UNCERTAINTY):
            group.addParam("doShowUncertaintySlices", LabelParam, label="Show uncertainty slices")
        group.addParam("doShowChimera", LabelParam, label="Show the map coloured by resolution in ChimeraX")
        low, high = data.colour_range(self._resolution())
        ColorScaleWizardBase.defineColorScaleParams(group, defaultHighest=high, defaultLowest=low,
                                                    defaultColorMap=DEFAULT_COLORMAP)

    def _getVisualizeDict(self) -> dict:
        return {"doShowVolumeSlices": self._showVolumeSlices,
                "doShowResHistogram": self._showHistogram,
                "doShowVolumeColorSlices": self._showColourSlices,
                "doShowUncertaintySlices": self._showUncertaintySlices,
                "doShowChimera": self._showChimera}

    # ------------------------------------------------------------------ views
    def _showVolumeSlices(self, param=None) -> list:
        return [DataView(self._outputFile(OUTPUT_RESOLUTION))]

    def _showHistogram(self, param=None) -> list:
        counts, edges = data.histogram(self._resolution())
        plotter = EmPlotter(x=1, y=1, mainTitle="cryores local resolution")
        plotter.createSubPlot("Resolution histogram (inside the mask)", "Resolution (Å)", "Voxels")
        plotter.plotHist(edges[:-1], len(counts), weights=counts, range=(edges[0], edges[-1]))
        return [plotter]

    def _showColourSlices(self, param=None) -> list:
        return [self._slicePlot(self._resolution(), "Local resolution (Å)", self.lowest.get(), self.highest.get())]

    def _showUncertaintySlices(self, param=None) -> list:
        volume = data.read_volume(self._outputFile(OUTPUT_UNCERTAINTY))
        values = volume[volume > 0]
        high = float(values.max()) if values.size else 1.0
        return [self._slicePlot(volume, "MC-dropout standard deviation (Å)", 0.0, high)]

    def _showChimera(self, param=None) -> list:
        script = self.protocol._getExtraPath(CHIMERAX_SCRIPT_FILE)
        data.write_chimerax_script(
            self.protocol.inputVolume.get().getFileName(), self._outputFile(OUTPUT_RESOLUTION), script,
            palette=data.chimerax_palette(self._colormapName(), self.intervals.get()),
            color_range=(self.lowest.get(), self.highest.get()))
        return [ChimeraView(script)]

    # ------------------------------------------------------------------ helpers
    def _slicePlot(self, volume, title: str, low: float, high: float) -> EmPlotter:
        axis = self.getEnumText("sliceAxis")
        plotter = EmPlotter(x=2, y=2, mainTitle=f"{title}, slices along {axis}")
        plot = None
        for index, image in data.central_slices(volume, axis):
            subplot = plotter.createSubPlot(f"Slice {index + 1}", "", "")
            plot = plotter.plotMatrix(subplot, image, low, high, cmap=self._colormapName(), interpolation="nearest")
        plotter.getColorBar(plot)
        return plotter

    def _colormapName(self) -> str:
        return self.colorMap.get() or DEFAULT_COLORMAP

    def _outputFile(self, name: str) -> str:
        return getattr(self.protocol, name).getFileName()

    def _resolution(self):
        return data.read_volume(self._outputFile(OUTPUT_RESOLUTION))
