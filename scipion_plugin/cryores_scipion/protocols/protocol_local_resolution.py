"""The cryores local-resolution protocol: the network on one map or on its half maps' average, or
half-map local FSC.

All the computing is the cryores core's (through :mod:`cryores_scipion.estimate`); this module
only maps Scipion's inputs, outputs, validation and reports onto it.
"""

from __future__ import annotations

import enum
import math

import pyworkflow.protocol.params as params
from pwem.objects import Transform, Volume
from pwem.protocols import ProtAnalysis3D
from pyworkflow.object import Float, String

from .. import estimate
from ..constants import (
    DEVICE_CHOICES,
    METHOD_CHOICES,
    METHOD_DEEP_HALF_MAPS,
    METHOD_DEEP_LEARNING,
    METHOD_LOCAL_FSC,
    OUTPUT_RESOLUTION,
    OUTPUT_UNCERTAINTY,
    RESOLUTION_FILE,
    UNCERTAINTY_FILE,
)

DEEP = f"estimationMethod != {METHOD_LOCAL_FSC}"  # the network, on the map or on its half maps
FSC = f"estimationMethod == {METHOD_LOCAL_FSC}"
HALVES = f"estimationMethod != {METHOD_DEEP_LEARNING}"  # local FSC, or the network on the half maps' average


class CryoResOutputs(enum.Enum):
    """Outputs the protocol may define (Scipion shows them before the run and in workflows)."""

    resolution_Volume = Volume
    uncertainty_Volume = Volume


class ProtCryoResLocalResolution(ProtAnalysis3D):
    """Local resolution (Å per voxel) of a cryo-EM map with cryores.

    *deep learning*: the trained cryores network estimates it from the map alone, with an
    uncertainty map when asked. *deep learning on the half maps*: the same network on the two half
    maps' average, for masked or flattened maps whose unmasked half maps still hold the solvent's
    noise, the reference the network reads a map against. *local FSC*: FSC = 0.143 between two
    half maps in a soft spherical window (blocres-style). The output is in Å inside the mask, 0 outside.
    """

    _label = "local resolution"
    _possibleOutputs = CryoResOutputs

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        # Stored by the estimate step so that _summary and _methods need not read the map.
        self.resolutionMedian = Float()
        self.resolutionP5 = Float()
        self.resolutionP95 = Float()
        self.estimatorName = String()
        self.uncertaintySource = String()
        self.cutScale = Float()  # the factor the low-pass cut scaled a map without a noise reference by
        self.foundCut = Float()  # the low-pass cut found in the spectrum of a map without a noise reference

    # --------------------------------------------------------------------------- form
    def _defineParams(self, form) -> None:
        form.addSection(label="Input")
        form.addParam("inputVolume", params.PointerParam, pointerClass="Volume", important=True,
                      label="Input map",
                      help="The map to analyse (MRC). The output has its grid, sampling rate and origin.")
        form.addParam("estimationMethod", params.EnumParam, choices=METHOD_CHOICES,
                      default=METHOD_DEEP_LEARNING, display=params.EnumParam.DISPLAY_HLIST, label="Method",
                      help="deep learning: from the map alone, with the trained cryores network.\n"
                           "local FSC: from two half maps, FSC = 0.143 in a soft spherical window.\n"
                           "deep learning on the half maps: the network on the two half maps' average. "
                           "Use it for a masked or flattened map whose half maps are not masked: their "
                           "solvent's noise is the reference the network reads a map against. It reads the "
                           "reconstruction's own resolution: where your map was low-passed at X Å, values "
                           "finer than X mean X for that map.")
        form.addParam("inputHalf1", params.PointerParam, pointerClass="Volume", allowsNull=True,
                      condition=HALVES, label="Half map 1",
                      help="Leave both half maps empty to use the half maps associated with the input map.")
        form.addParam("inputHalf2", params.PointerParam, pointerClass="Volume", allowsNull=True,
                      condition=HALVES, label="Half map 2",
                      help="Leave both half maps empty to use the half maps associated with the input map.")
        form.addParam("fscWindow", params.FloatParam, default=30.0, condition=FSC,
                      expertLevel=params.LEVEL_ADVANCED, label="Window diameter (Å)",
                      help="Diameter of the soft spherical window of the local FSC (at least 12 voxels).")
        form.addParam("inputMask", params.PointerParam, pointerClass="VolumeMask", allowsNull=True,
                      label="Mask",
                      help="Voxels > 0.5 are inside. Empty: cryores computes its automatic molecular mask.")
        form.addParam("lowpassCut", params.FloatParam, default=0.0, condition=DEEP,
                      label="Map low-passed at (Å)",
                      help="0: not given (a map without a noise reference is then searched for its cut, and one "
                           "found in its spectrum is used as if given). The Å your map was low-pass filtered at, "
                           "its global FSC resolution, "
                           "as post-processing does: nothing finer is left in it, so no voxel reads finer. A "
                           "map without a noise reference (masked, flattened) is also scaled so that its "
                           "best-resolved fifth reads the cut, since the network reads such a map's overall "
                           "scale least well. Give it only for a map so filtered; with the half maps, the cut "
                           "of the map whose values you read.")
        form.addParam("findCut", params.BooleanParam, default=True, condition=DEEP,
                      expertLevel=params.LEVEL_ADVANCED, label="Look for the low-pass cut",
                      help="With no low-pass cut given, look for it in the spectrum of a map without a noise "
                           "reference (masked, flattened, zoned), where the spectrum's slope turns sharply "
                           "down, and use a cut found there as if given (cryores.cut_finding). No: read such "
                           "a map without it.")
        form.addParam("computeUncertainty", params.BooleanParam, default=False, condition=DEEP,
                      label="Uncertainty map",
                      help="Also write σ (Å), how far each voxel's resolution may be off. The installed "
                           "model (cryores-v3) predicts it, calibrated so that ±1.645 σ holds 90 % of the "
                           "voxels of validation maps; it does not cover a whole map read off as a whole, "
                           "more likely for masked or flattened maps. Older U-Net models take it from "
                           "MC-dropout passes.")
        form.addParam("mcSamples", params.IntParam, default=0, condition=DEEP,
                      expertLevel=params.LEVEL_ADVANCED, label="MC-dropout samples (U-Net models)",
                      help="Only for older U-Net model cards (cryores-v2); cryores-v3 ignores it. 0: one "
                           "deterministic pass (10 passes when an uncertainty map is asked for). N >= 2: "
                           "the output is the mean of N passes with dropout, their standard deviation the "
                           "uncertainty map, which N >= 2 writes even without 'Uncertainty map' (a warning "
                           "says so before the run).")
        form.addParam("computeDevice", params.EnumParam, choices=DEVICE_CHOICES, default=0, condition=DEEP,
                      label="Device", help="auto: a CUDA GPU when PyTorch sees one, else the CPU.")
        form.addParam("modelCard", params.PathParam, default="", condition=DEEP,
                      expertLevel=params.LEVEL_ADVANCED, label="Model card (.json)",
                      help="A cryores model card. Empty: the model installed in cryores.")

    # --------------------------------------------------------------------------- steps
    def _insertAllSteps(self) -> None:
        self._insertFunctionStep(self.estimateStep)
        self._insertFunctionStep(self.createOutputStep, needsGPU=False)

    def estimateStep(self) -> None:
        """Run the core on the input files and keep the summary numbers."""
        volume = self.inputVolume.get()
        sampling = volume.getSamplingRate()
        mask = self.inputMask.get().getFileName() if self.inputMask.hasValue() else None
        if self._isLocalFsc():
            half1, half2 = self._halfMapFiles()
            result = estimate.run_local_fsc(half1, half2, self._getExtraPath(RESOLUTION_FILE),
                                            voxel_size=sampling, mask_file=mask, window=self.fscWindow.get())
        else:
            first, second = self._halfMapFiles() if self._usesHalfMaps() else (volume.getFileName(), None)
            result = estimate.run_deep_learning(
                first, self._getExtraPath(RESOLUTION_FILE), voxel_size=sampling, mask_file=mask,
                samples=self.mcSamples.get(),
                uncertainty=self._getExtraPath(UNCERTAINTY_FILE) if self._wantsUncertainty() else None,
                device=self.getEnumText("computeDevice"), model_card=self.modelCard.get() or None,
                half_map2=second, lowpass_cut=self._lowpassCut(), find_cut=self.findCut.get())
        self.info(result.summary.line())
        for caution in getattr(result, "cautions", ()):  # local FSC results have none
            self.info(f"caution: {caution}")
        self.resolutionMedian.set(result.summary.median)
        self.resolutionP5.set(result.summary.p5)
        self.resolutionP95.set(result.summary.p95)
        self.estimatorName.set(result.model_name)
        if self._wantsUncertainty():
            self.uncertaintySource.set(estimate.uncertainty_source(self.modelCard.get() or None,
                                                                   self.mcSamples.get()))
        self.cutScale.set(getattr(result, "cut_scale", None))  # None: no scale (cleared on a rerun)
        self.foundCut.set(getattr(result, "found_cut", None))
        self._store(self.resolutionMedian, self.resolutionP5, self.resolutionP95, self.estimatorName,
                    self.uncertaintySource, self.cutScale, self.foundCut)

    def createOutputStep(self) -> None:
        """Register the maps as Volumes on the input's sampling rate and origin."""
        volume = self.inputVolume.get()
        outputs = {OUTPUT_RESOLUTION: _volume_like(self._getExtraPath(RESOLUTION_FILE), volume)}
        if self._wantsUncertainty():
            outputs[OUTPUT_UNCERTAINTY] = _volume_like(self._getExtraPath(UNCERTAINTY_FILE), volume)
        self._defineOutputs(**outputs)
        sources = [self.inputVolume]
        if self._usesHalfMaps() and self.inputHalf1.hasValue() and self.inputHalf2.hasValue():
            sources += [self.inputHalf1, self.inputHalf2]
        for output in outputs.values():
            for source in sources:
                self._defineSourceRelation(source, output)

    # --------------------------------------------------------------------------- helpers
    def _isLocalFsc(self) -> bool:
        return self.estimationMethod.get() == METHOD_LOCAL_FSC

    def _usesHalfMaps(self) -> bool:
        """Local FSC, or the network on the half maps' average."""
        return self.estimationMethod.get() in (METHOD_LOCAL_FSC, METHOD_DEEP_HALF_MAPS)

    def _lowpassCut(self) -> float | None:
        """The map's low-pass cut in Å, or None when not given (0)."""
        return self.lowpassCut.get() or None

    def _wantsUncertainty(self) -> bool:
        """Asked for, or implied by MC-dropout samples (as projects saved before the switch did)."""
        return not self._isLocalFsc() and (bool(self.computeUncertainty.get()) or self.mcSamples.get() > 0)

    def _halfMapFiles(self) -> list[str]:
        """The two half-map pointers when both are set, else the input map's own half maps."""
        if self.inputHalf1.hasValue() and self.inputHalf2.hasValue():
            return [self.inputHalf1.get().getFileName(), self.inputHalf2.get().getFileName()]
        volume = self.inputVolume.get()
        if volume is not None and volume.hasHalfMaps():
            return [str(name) for name in volume.getHalfMaps(asList=True)]
        return []

    # --------------------------------------------------------------------------- info
    def _validate(self) -> list[str]:
        problem = estimate.core_problem()
        if problem:
            return [problem]
        volume = self.inputVolume.get()
        if volume is None:
            return ["select an input map"]
        errors = _file_errors("input map", volume.getFileName(), None)
        shape = _dims(volume.getFileName())
        if self.inputMask.hasValue():
            errors += _file_errors("mask", self.inputMask.get().getFileName(), shape)
        if self._usesHalfMaps():
            errors += self._validateHalfMaps(volume, shape)
        if not self._isLocalFsc():
            errors += self._validateDeepLearning()
        return errors

    def _validateHalfMaps(self, volume: Volume, shape: tuple | None) -> list[str]:
        method = self.getEnumText("estimationMethod")
        if self.inputHalf1.hasValue() != self.inputHalf2.hasValue():
            return [f"{method}: select both half maps, or neither to use the input map's own half maps"]
        halves = self._halfMapFiles()
        if len(halves) != 2:
            return [f"{method} needs two half maps: the input map has none associated; select Half map 1 "
                    "and Half map 2, or use the deep-learning method"]
        errors = []
        for index, name in enumerate(halves, start=1):
            errors += _file_errors(f"half map {index}", name, shape)
        sampling = volume.getSamplingRate()
        for index, pointer in enumerate((self.inputHalf1, self.inputHalf2), start=1):
            half = pointer.get()
            if half is not None and abs(half.getSamplingRate() - sampling) > 1e-3 * sampling:
                errors.append(f"half map {index} has sampling rate {half.getSamplingRate():g} Å/px, the input map "
                              f"{sampling:g} Å/px")
        return errors

    def _validateDeepLearning(self) -> list[str]:
        errors = []
        samples = self.mcSamples.get()
        if samples is None or samples < 0 or samples == 1:
            errors.append(f"MC-dropout samples must be 0 or at least 2, not {samples}")
        problem = estimate.model_problem(self.modelCard.get() or None)
        if problem:
            return errors + [problem]
        cut = self.lowpassCut.get()
        if cut is None or not (math.isfinite(cut) and cut >= 0):
            errors.append(f"'Map low-passed at' must be 0 (not given) or a positive number of Å, not {cut}")
        else:
            problem = estimate.lowpass_cut_problem(self.modelCard.get() or None, cut)
            if problem:
                errors.append(f"'Map low-passed at': {problem}")
        return errors

    def _warnings(self) -> list[str]:
        """Shown before a run, which the user may still start: MC-dropout samples >= 2 write the
        uncertainty map although 'Uncertainty map' says No (how projects saved before that switch
        asked for it)."""
        if self._isLocalFsc() or self.computeUncertainty.get() or (self.mcSamples.get() or 0) < 2:
            return []
        return [f"MC-dropout samples is {self.mcSamples.get()}, so the uncertainty map is written although "
                "'Uncertainty map' is No; set the samples to 0 to leave it out"]

    def _summary(self) -> list[str]:
        lines = [f"Method: {self.getEnumText('estimationMethod')}"]
        if not self.resolutionMedian.hasValue():
            return lines + ["Local resolution not computed yet."]
        lines.append(f"Local resolution inside the mask: median {self.resolutionMedian.get():.2f} Å, "
                     f"5-95 % range {self.resolutionP5.get():.2f}-{self.resolutionP95.get():.2f} Å")
        if self.hasAttribute(OUTPUT_UNCERTAINTY):
            source = self.uncertaintySource.get() or f"{self.mcSamples.get()} MC-dropout passes"  # runs saved before
            lines.append(f"Uncertainty map (σ, Å): {source}.")
        return lines

    def _methods(self) -> list[str]:
        if not self.resolutionMedian.hasValue():
            return []
        how = {METHOD_DEEP_LEARNING: "from the map alone with the cryores network",
               METHOD_DEEP_HALF_MAPS: "with the cryores network from the average of its two half maps",
               METHOD_LOCAL_FSC: "from two half maps by local FSC (threshold 0.143)"}[self.estimationMethod.get()]
        # a map without a noise reference: the cut, given or found in its spectrum, set its scale
        scaled = (f"taken as its global resolution (its best-resolved fifth reads the cut; values "
                  f"x{self.cutScale.get():.3f})" if self.cutScale.hasValue() else "")
        if not self._isLocalFsc() and self._lowpassCut():
            how += f", no value finer than the map's low-pass cut of {self._lowpassCut():g} Å"
            if scaled:
                how += f" and its overall scale set from that cut, {scaled}"
        elif not self._isLocalFsc() and self.foundCut.hasValue():
            how += (f", its overall scale set from the low-pass cut found in its spectrum, "
                    f"{self.foundCut.get():.2f} Å, {scaled}")
        return [f"The local resolution of {self.getObjectTag('inputVolume')} was estimated {how} "
                f"[cryores] ({self.estimatorName.get()}): median {self.resolutionMedian.get():.2f} Å, "
                f"5-95 % of the voxels inside the mask between {self.resolutionP5.get():.2f} and "
                f"{self.resolutionP95.get():.2f} Å."]

    def _citations(self) -> list[str]:
        return ["cryores", "Cardone2013"] if self._isLocalFsc() else ["cryores"]


def _volume_like(path: str, like: Volume) -> Volume:
    """A Volume for ``path`` with the sampling rate and (copied) origin of ``like``."""
    output = Volume()
    output.setFileName(path)
    output.setSamplingRate(like.getSamplingRate())
    origin = Transform()
    origin.setShifts(*like.getOrigin(force=True).getShifts())
    output.setOrigin(origin)
    return output


def _dims(file_name: str) -> tuple | None:
    """(x, y, z) of a map file through pwem, or None when it is missing."""
    return Volume(location=file_name).getDim()


def _file_errors(role: str, file_name: str, shape: tuple | None) -> list[str]:
    """Refuse files the core cannot read and maps whose box differs from ``shape``."""
    if not estimate.is_mrc_path(file_name):
        return [f"{role} {file_name}: cryores reads MRC/CCP4 maps only (.mrc, .map, .ccp4)"]
    dims = _dims(file_name)
    if dims is None:
        return [f"{role} {file_name} does not exist"]
    if shape is not None and tuple(dims) != tuple(shape):
        return [f"{role} {file_name} is {_box(dims)}, the input map {_box(shape)}: they must be on the same grid"]
    return []


def _box(dims) -> str:
    return " x ".join(str(int(d)) for d in dims)
