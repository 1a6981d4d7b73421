"""Names shared by the protocol, the viewer and the tests (one place to change them)."""

from __future__ import annotations

# Method choices, in the order of the protocol's EnumParam.
METHOD_DEEP_LEARNING = 0
METHOD_LOCAL_FSC = 1
METHOD_DEEP_HALF_MAPS = 2  # the network on the half maps' average (a reference a masked map lacks)
METHOD_CHOICES = ["deep learning", "local FSC", "deep learning on the half maps"]

DEVICE_CHOICES = ["auto", "cpu", "cuda"]

# Output attribute names: MonoRes, DeepRes, ResMap and blocres all call theirs resolution_Volume,
# so viewers and downstream protocols written for those find ours too.
OUTPUT_RESOLUTION = "resolution_Volume"
OUTPUT_UNCERTAINTY = "uncertainty_Volume"

# Files in the protocol's extra folder.
RESOLUTION_FILE = "resolution.mrc"
UNCERTAINTY_FILE = "uncertainty.mrc"
CHIMERAX_SCRIPT_FILE = "cryores_chimerax.cxc"

# File name endings that the cryores core can read (MRC/CCP4, optionally compressed).
MRC_SUFFIXES = (".mrc", ".map", ".ccp4", ".mrc.gz", ".map.gz", ".ccp4.gz", ".mrc.bz2", ".map.bz2")
