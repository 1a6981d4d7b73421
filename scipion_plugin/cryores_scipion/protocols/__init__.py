"""Protocols of the cryores plugin (Scipion discovers them in this module)."""

from .protocol_local_resolution import CryoResOutputs, ProtCryoResLocalResolution

__all__ = ["CryoResOutputs", "ProtCryoResLocalResolution"]
