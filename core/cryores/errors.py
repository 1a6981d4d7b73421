"""Exceptions that cryores raises for problems a user can fix.

Every user-facing failure (bad file, wrong shape, missing model, existing output) is a
:class:`CryoResError` whose message is one self-contained line; the CLI prints it without a
traceback and exits non-zero. Anything else escaping is a bug.
"""

from __future__ import annotations


class CryoResError(Exception):
    """A problem with the user's input, options or environment, explained in one line."""


class NoModelInstalledError(CryoResError):
    """No trained model ships with this installation and none was given."""


class ModelIntegrityError(CryoResError):
    """A weights file does not match the sha256 recorded in its model card."""
