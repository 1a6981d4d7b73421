"""ChimeraX-CryoRes: the ``cryores`` commands in ChimeraX (package ``chimerax.cryores``).

ChimeraX calls ``bundle_api.register_command`` once per command listed in pyproject.toml,
the first time the command is used; the command module (and through it cryores and torch) is
imported only then, so an incomplete installation never breaks ChimeraX's start-up.
"""

from chimerax.core.toolshed import BundleAPI

__version__ = "0.1.0"


class _CryoResAPI(BundleAPI):
    api_version = 1  # register_command receives BundleInfo and CommandInfo objects

    @staticmethod
    def register_command(bi, ci, logger):
        from chimerax.core.commands import register

        from . import cmd

        try:
            function, description = cmd.COMMANDS[ci.name]
        except KeyError:
            raise ValueError(f"ChimeraX-CryoRes has no command {ci.name!r}") from None
        if description.synopsis is None:
            description.synopsis = ci.synopsis
        register(ci.name, description, function, logger=logger)


bundle_api = _CryoResAPI()
