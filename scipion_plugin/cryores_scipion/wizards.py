"""The colour-scale wizard (lowest/highest/intervals/colour map) on the viewer's form."""

from __future__ import annotations

from pwem.wizards import ColorScaleWizardBase

from .viewers import CryoResViewer


class CryoResColorScaleWizard(ColorScaleWizardBase):
    """pwem's colour-scale dialog, attached to the cryores viewer's colour parameters."""

    _targets = ColorScaleWizardBase.defineTargets(CryoResViewer)
