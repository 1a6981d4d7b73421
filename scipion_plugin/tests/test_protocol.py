"""The protocol and its viewer in a real (headless) Scipion project.

Maps are imported with Scipion's own import protocols; every cryores run is a real protocol
launch (a subprocess running pw_protocol_run.py), as in the Scipion GUI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import pyworkflow as pw
from cryores_scipion.constants import METHOD_DEEP_HALF_MAPS, METHOD_DEEP_LEARNING, METHOD_LOCAL_FSC
from cryores_scipion.protocols import ProtCryoResLocalResolution
from cryores_scipion.viewers import CryoResViewer
from cryores_scipion.viewers import resolution_data as data
from pwem.objects import Volume, VolumeMask
from pwem.protocols import ProtImportMask, ProtImportVolumes
from pyworkflow.tests import BaseTest, setupTestProject
from pyworkflow.viewer import DESKTOP_TKINTER

from conftest import (
    BOX,
    MODEL_MAX_RESOLUTION,
    SCIPION_TMP,
    VOXEL,
    blob,
    half_maps,
    header_origin,
    make_random_model,
    make_random_spectral_model,
    read_mrc,
    sphere_mask,
    write_mrc,
)
from cryores.chimerax_script import key_command, palette_points, palette_values_spec
from cryores.localfsc import DEFAULT_MAX_RESOLUTION_A
from cryores.model_card import installed_card_path, load_model

Domain = pw.Config.getDomain()

NYQUIST = 2.0 * VOXEL
ORIGIN = (-10.0, 4.5, 7.25)  # Å, deliberately not the box centre
POINTERS = ("inputMask", "inputHalf1", "inputHalf2")
# A headless ChimeraX 1.7.1 venv built with the kit in ../shared/chimerax (make test-chimerax).
CHIMERAX_PYTHON = Path(os.environ.get("CRYORES_CHIMERAX_PYTHON",
                                      Path(__file__).resolve().parents[2] / ".venv-chimerax" / "bin" / "python"))


class TestCryoResProtocol(BaseTest):
    """Imports once, then runs the protocol with all three methods and checks what Scipion records."""

    @classmethod
    def setUpClass(cls):
        setupTestProject(cls)
        signal = blob()
        half1, half2 = half_maps(signal)
        files = {name: write_mrc(cls.getOutputPath(f"{name}.mrc"), data) for name, data in
                 [("map", 0.5 * (half1 + half2)), ("half1", half1), ("half2", half2), ("mask", sphere_mask())]}
        cls.files = files
        cls.card = make_random_model(SCIPION_TMP / "model")
        cls.mask_array = sphere_mask() > 0.5

        cls.volume = cls._importVolume(files["map"], halves=(files["half1"], files["half2"]))
        cls.half1 = cls._importVolume(files["half1"])
        cls.half2 = cls._importVolume(files["half2"])
        mask = cls.newProtocol(ProtImportMask, maskPath=files["mask"], samplingRate=VOXEL)
        cls.mask = cls.launchProtocol(mask).outputMask

        # One deep-learning run shared by several tests (outputs and viewer).
        cls.deep = cls._run(estimationMethod=METHOD_DEEP_LEARNING, inputMask=cls.mask, mcSamples=2,
                            computeDevice=1, modelCard=cls.card)

    @classmethod
    def _importVolume(cls, path, halves=None) -> Volume:
        options = dict(filesPath=path, samplingRate=VOXEL, setOrigCoord=True,
                       x=ORIGIN[0], y=ORIGIN[1], z=ORIGIN[2])
        if halves:
            options.update(setHalfMaps=True, half1map=halves[0], half2map=halves[1])
        prot = cls.launchProtocol(cls.newProtocol(ProtImportVolumes, **options))
        return prot.outputVolume

    @classmethod
    def _new(cls, inputVolume=None, **params) -> ProtCryoResLocalResolution:
        """A protocol on ``inputVolume`` (default: the map with half maps); pointers set by hand."""
        pointers = {name: params.pop(name) for name in POINTERS if name in params}
        prot = cls.newProtocol(ProtCryoResLocalResolution, **params)
        prot.inputVolume.set(inputVolume or cls.volume)
        for name, value in pointers.items():
            getattr(prot, name).set(value)
        return prot

    @classmethod
    def _run(cls, inputVolume=None, **params) -> ProtCryoResLocalResolution:
        return cls.launchProtocol(cls._new(inputVolume, **params))

    # ------------------------------------------------------------------ checks
    def _checkVolume(self, output, like=None):
        like = like or self.volume
        self.assertIsInstance(output, Volume)
        self.assertAlmostEqual(output.getSamplingRate(), like.getSamplingRate())
        self.assertEqual(tuple(output.getDim()), (BOX, BOX, BOX))
        self.assertEqual(tuple(output.getOrigin().getShifts()), tuple(like.getOrigin(force=True).getShifts()))
        # Import stores the origin coordinates given in the form as shifts of the opposite sign.
        self.assertEqual(tuple(output.getOrigin().getShifts()), tuple(-c for c in ORIGIN))
        self.assertTrue(os.path.isfile(output.getFileName()))
        self.assertEqual(header_origin(output.getFileName()), header_origin(like.getFileName()))
        return read_mrc(output.getFileName())

    def _checkResolution(self, values, upper, mask=None):
        """Å within [Nyquist, upper] inside the mask, exactly 0 outside."""
        inside = values > 0 if mask is None else mask
        self.assertTrue(inside.any())
        self.assertGreaterEqual(values[inside].min(), NYQUIST - 1e-4)
        self.assertLessEqual(values[inside].max(), upper + 1e-4)
        self.assertTrue(np.all(values[~inside] == 0))

    # ------------------------------------------------------------------ tests
    def test_deep_learning_outputs(self):
        prot = self.deep
        values = self._checkVolume(prot.resolution_Volume)
        self._checkResolution(values, MODEL_MAX_RESOLUTION, self.mask_array)
        std = self._checkVolume(prot.uncertainty_Volume)
        self.assertTrue(np.all(std >= 0) and np.all(std[~self.mask_array] == 0))
        self.assertTrue(std[self.mask_array].max() > 0)
        median = float(np.median(values[self.mask_array]))
        self.assertAlmostEqual(prot.resolutionMedian.get(), median, places=3)
        summary = "\n".join(prot.summary())
        self.assertIn("median", summary)
        self.assertIn("5-95 %", summary)
        self.assertIn("deep learning", summary)
        self.assertIn("Uncertainty map (σ, Å): standard deviation of 2 MC-dropout passes", summary)
        self.assertIn("cryores", "\n".join(prot.methods()))
        self.assertEqual(prot._citations(), ["cryores"])
        self.assertNotIn("not found", "\n".join(prot.citations()))
        # Provenance: the output is linked to the input map in the project graph.
        sources = {rel.getObjId() for rel in self.proj.getSourceParents(prot.resolution_Volume)}
        self.assertIn(self.volume.getObjId(), sources)

    def test_deep_learning_automatic_mask_without_uncertainty(self):
        prot = self._run(estimationMethod=METHOD_DEEP_LEARNING, mcSamples=0, computeDevice=1,
                         modelCard=self.card)
        values = self._checkVolume(prot.resolution_Volume)
        self._checkResolution(values, MODEL_MAX_RESOLUTION)
        self.assertGreater((values > 0).mean(), 0.02)  # the automatic mask found the blob
        self.assertLess((values > 0).mean(), 0.9)
        self.assertFalse(prot.hasAttribute("uncertainty_Volume"))

    def test_local_fsc_with_the_maps_own_half_maps(self):
        prot = self._run(estimationMethod=METHOD_LOCAL_FSC, inputMask=self.mask)
        values = self._checkVolume(prot.resolution_Volume)
        self._checkResolution(values, DEFAULT_MAX_RESOLUTION_A, self.mask_array)
        self.assertFalse(prot.hasAttribute("uncertainty_Volume"))
        self.assertIn("local FSC", "\n".join(prot.summary()))
        self.assertEqual(prot._citations(), ["cryores", "Cardone2013"])

    def test_local_fsc_with_half_map_inputs(self):
        # The half maps come from the two pointers; the input map here has none of its own.
        prot = self._run(inputVolume=self.half1, estimationMethod=METHOD_LOCAL_FSC, inputMask=self.mask,
                         inputHalf1=self.half1, inputHalf2=self.half2, fscWindow=24.0)
        values = self._checkVolume(prot.resolution_Volume, like=self.half1)
        self._checkResolution(values, DEFAULT_MAX_RESOLUTION_A, self.mask_array)

    def test_deep_learning_on_the_half_maps(self):
        # The imported map is the half maps' average, so the network must read the same values from
        # the map's own half maps, and from half maps given as inputs (linked as sources then).
        on_map = self._run(estimationMethod=METHOD_DEEP_LEARNING, inputMask=self.mask, computeDevice=1,
                           modelCard=self.card)
        expected = read_mrc(on_map.resolution_Volume.getFileName())
        own = self._run(estimationMethod=METHOD_DEEP_HALF_MAPS, inputMask=self.mask, computeDevice=1,
                        modelCard=self.card)
        given = self._run(inputVolume=self.half1, estimationMethod=METHOD_DEEP_HALF_MAPS, inputMask=self.mask,
                          inputHalf1=self.half1, inputHalf2=self.half2, computeDevice=1, modelCard=self.card)
        for prot, like in ((own, self.volume), (given, self.half1)):
            values = self._checkVolume(prot.resolution_Volume, like=like)
            self._checkResolution(values, MODEL_MAX_RESOLUTION, self.mask_array)
            np.testing.assert_allclose(values, expected, rtol=1e-4, atol=1e-4)
            self.assertIn("average of its two half maps", "\n".join(prot.methods()))
            self.assertEqual(prot._citations(), ["cryores"])
        sources = {rel.getObjId() for rel in self.proj.getSourceParents(given.resolution_Volume)}
        self.assertTrue({self.half1.getObjId(), self.half2.getObjId()} <= sources)
        # the map's low-pass cut floors the same reading, and the methods text says so
        cut = float(np.percentile(expected[self.mask_array], 50))
        floored = self._run(estimationMethod=METHOD_DEEP_HALF_MAPS, inputMask=self.mask, computeDevice=1,
                            modelCard=self.card, lowpassCut=cut)
        values = self._checkVolume(floored.resolution_Volume)
        np.testing.assert_allclose(values, np.where(self.mask_array, np.maximum(expected, cut), 0.0),
                                   rtol=1e-4, atol=1e-4)
        self.assertIn(f"low-pass cut of {cut:g} Å", "\n".join(floored.methods()))

    def test_a_masked_map_given_its_cut_is_scaled_to_it(self):
        """A map whose solvent is flattened has no noise reference: the low-pass cut given also
        sets its scale (cryores.cut_scale), its best-resolved fifth reading the cut, and the
        methods text says so."""
        card = make_random_spectral_model(SCIPION_TMP / "spectral_model")
        masked = np.where(self.mask_array, read_mrc(self.files["map"]), 0.0)
        volume = self._importVolume(write_mrc(self.getOutputPath("masked_map.mrc"), masked))
        plain = self._run(inputVolume=volume, estimationMethod=METHOD_DEEP_LEARNING, computeDevice=1,
                          modelCard=card, inputMask=self.mask)
        values = read_mrc(plain.resolution_Volume.getFileName())[self.mask_array]
        cut = 1.2 * float(np.percentile(values, 20))
        scaled = self._run(inputVolume=volume, estimationMethod=METHOD_DEEP_LEARNING, computeDevice=1,
                           modelCard=card, inputMask=self.mask, lowpassCut=cut)
        self.assertAlmostEqual(scaled.cutScale.get(), 1.2, places=3)
        scaled_values = read_mrc(scaled.resolution_Volume.getFileName())[self.mask_array]
        self.assertAlmostEqual(float(np.percentile(scaled_values, 20)) / cut, 1.0, places=3)
        self.assertIn("overall scale set from that cut", "\n".join(scaled.methods()))
        self.assertFalse(plain.cutScale.hasValue())
        self.assertNotIn("overall scale", "\n".join(plain.methods()))

    def test_installed_default_model(self):
        card = installed_card_path()
        if card is None:
            pytest.skip("no trained model is installed in cryores (core/cryores/models/default.json is absent)")
        upper = load_model(card).max_resolution
        # The installed v3 model predicts its σ: 'Uncertainty map' alone writes it, no dropout samples.
        prot = self._run(estimationMethod=METHOD_DEEP_LEARNING, inputMask=self.mask, computeDevice=1,
                         computeUncertainty=True)
        values = self._checkVolume(prot.resolution_Volume)
        self._checkResolution(values, upper, self.mask_array)
        std = self._checkVolume(prot.uncertainty_Volume)
        self.assertTrue(np.all(std[~self.mask_array] == 0) and std[self.mask_array].min() > 0)
        self.assertIn("predicted by the network, calibrated", "\n".join(prot.summary()))

    def test_validation_errors(self):
        def errors(volume=None, **params):
            return "\n".join(self._new(volume, **params).validate())

        self.assertEqual(errors(modelCard=self.card), "")
        self.assertEqual(errors(estimationMethod=METHOD_LOCAL_FSC), "")
        self.assertIn("needs two half maps", errors(volume=self.half1, estimationMethod=METHOD_LOCAL_FSC))
        self.assertEqual(errors(estimationMethod=METHOD_DEEP_HALF_MAPS, modelCard=self.card), "")
        self.assertIn("deep learning on the half maps needs two half maps",
                      errors(volume=self.half1, estimationMethod=METHOD_DEEP_HALF_MAPS, modelCard=self.card))
        self.assertIn("at least 2", errors(estimationMethod=METHOD_DEEP_HALF_MAPS, modelCard=self.card, mcSamples=1))
        self.assertIn("select both half maps",
                      errors(estimationMethod=METHOD_LOCAL_FSC, inputHalf1=self.half1))
        self.assertIn("at least 2", errors(modelCard=self.card, mcSamples=1))
        self.assertIn("uncertainty map is written although", "\n".join(self._new(None, mcSamples=2).warnings()))
        for quiet in ({"mcSamples": 0}, {"mcSamples": 2, "computeUncertainty": True},
                      {"mcSamples": 2, "estimationMethod": METHOD_LOCAL_FSC}):
            self.assertEqual(self._new(None, **quiet).warnings(), [])
        self.assertIn("'Map low-passed at' must be 0", errors(modelCard=self.card, lowpassCut=-2.0))
        self.assertIn("'Map low-passed at' must be 0", errors(modelCard=self.card, lowpassCut=float("inf")))
        self.assertIn("beyond the model's range", errors(modelCard=self.card, lowpassCut=MODEL_MAX_RESOLUTION))
        self.assertEqual(errors(modelCard=self.card, lowpassCut=6.0), "")
        self.assertIn("does not exist", errors(modelCard=str(SCIPION_TMP / "missing.json")))

        small = VolumeMask(location=write_mrc(self.getOutputPath("small_mask.mrc"), np.ones((40, 40, 40))))
        small.setSamplingRate(VOXEL)
        self.assertIn("same grid", errors(modelCard=self.card, inputMask=small))
        other = Volume(location=write_mrc(self.getOutputPath("small_half.mrc"), np.ones((40, 40, 40))))
        other.setSamplingRate(VOXEL)
        self.assertIn("same grid", errors(estimationMethod=METHOD_LOCAL_FSC, inputHalf1=self.half1,
                                          inputHalf2=other))
        coarse = Volume(location=self.files["half2"])
        coarse.setSamplingRate(1.5 * VOXEL)
        self.assertIn("sampling rate", errors(estimationMethod=METHOD_LOCAL_FSC, inputHalf1=self.half1,
                                              inputHalf2=coarse))
        no_model = errors()
        if installed_card_path() is None:
            self.assertIn("no trained cryores model is installed", no_model)
        else:
            self.assertEqual(no_model, "")

    def test_invalid_run_fails_with_the_validation_message(self):
        prot = self._new(self.half1, estimationMethod=METHOD_LOCAL_FSC)
        with self.assertRaisesRegex(Exception, "execution failed"):
            self.launchProtocol(prot)
        self.assertTrue(prot.isFailed())
        logs = "".join(open(name).read() for name in (prot.getStdoutLog(), prot.getStderrLog()))
        self.assertIn("needs two half maps", logs)

    def _runInChimeraX(self, script: str) -> None:
        """Run the viewer's script in the kit's real ChimeraX, when this machine has one."""
        if not CHIMERAX_PYTHON.is_file():
            print(f"\nnot run in ChimeraX: no {CHIMERAX_PYTHON} (make test-chimerax builds it)", file=sys.stderr)
            return
        checker = Path(__file__).with_name("chimerax_check.py")
        done = subprocess.run([str(CHIMERAX_PYTHON), str(checker), os.path.abspath(script)], capture_output=True,
                              text=True, timeout=300)
        self.assertEqual(done.returncode, 0, done.stderr[-2000:])
        report = json.loads(done.stdout.strip().splitlines()[-1])
        self.assertNotIn("exception", report)
        self.assertEqual(report["problems"], [])
        self.assertEqual(report["volumes"], ["#1", "#2"])
        self.assertTrue(report["key"])
        self.assertFalse(report["locres_shown"])
        self.assertGreater(report["colored_vertices"], 100)
        self.assertGreater(report["distinct_colors"], 20)

    def test_viewer(self):
        self.assertIn(CryoResViewer, Domain.findViewers(self.deep, DESKTOP_TKINTER))
        viewer = CryoResViewer(project=self.proj, protocol=self.deep)
        viewer.setProtocol(self.deep)
        self.assertIn("colorMap", Domain.findWizards(viewer, DESKTOP_TKINTER))
        values = read_mrc(self.deep.resolution_Volume.getFileName())
        self.assertLessEqual(viewer.lowest.get(), viewer.highest.get())
        self.assertGreaterEqual(viewer.lowest.get(), np.floor(values[values > 0].min() * 10) / 10)

        views = viewer._showChimera()
        script = self.deep._getExtraPath("cryores_chimerax.cxc")
        self.assertEqual(len(views), 1)
        text = open(script).read()
        self.assertIn("color sample #1 map #2", text)
        self.assertIn("resolution.mrc", text)
        self.assertIn(os.path.basename(self.volume.getFileName().replace(":mrc", "")), text)
        colours = data.chimerax_palette(viewer._colormapName(), viewer.intervals.get()).split(":")
        points = palette_points(colours, (viewer.lowest.get(), viewer.highest.get()), float(values[values > 0].min()))
        self.assertIn(f"palette {palette_values_spec(points)}", text)  # grey outside the mask, then the scale
        self.assertIn(key_command(colours, (viewer.lowest.get(), viewer.highest.get())), text)
        self._runInChimeraX(script)

        (slices,) = viewer._showVolumeSlices()  # Scipion's own volume browser, not opened here
        self.assertEqual(slices.getPath(), self.deep.resolution_Volume.getFileName())
        for show in (viewer._showHistogram, viewer._showColourSlices, viewer._showUncertaintySlices):
            plotters = show()
            self.assertEqual(len(plotters), 1)
            self.assertTrue(plotters[0].getFigure().axes)
