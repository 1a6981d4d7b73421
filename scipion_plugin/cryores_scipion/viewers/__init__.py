"""Viewers of the cryores plugin (Scipion discovers them in this module)."""

from .viewer_local_resolution import CryoResViewer

__all__ = ["CryoResViewer"]
