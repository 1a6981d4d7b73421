"""Scipion plugin for cryores: local resolution of cryo-EM maps inside Scipion workflows.

The protocol calls the cryores Python API in-process (no binaries to install or wrap); the
core package ``cryores`` must be installed in Scipion's Python beside this plugin.
"""

from __future__ import annotations

import os

import pwem
from pyworkflow.utils import Environ

__version__ = "0.1.0"
_references = ["cryores", "Cardone2013", "Kucukelbir2014"]


class Plugin(pwem.Plugin):
    """cryores needs no executables or variables: everything runs through its Python API."""

    @classmethod
    def _defineVariables(cls) -> None:
        """No variables: there is no external program home to point at."""

    @classmethod
    def getEnviron(cls) -> Environ:
        """The current environment unchanged (protocols call Python, not programs)."""
        return Environ(os.environ)

    @classmethod
    def defineBinaries(cls, env) -> None:
        """No binaries: ``scipion3 installb`` has nothing to install for cryores."""
