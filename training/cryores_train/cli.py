"""The ``cryores-train`` command: one sub-command per module, each registered by the module.

Every module in ``MODULES`` has ``register(subparsers)``, which adds its parser and sets
``run`` (a function of the parsed arguments returning an exit status). Errors follow the core's
contract (:func:`cryores.cli.run_guarded`): one line on stderr, non-zero exit, no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from cryores.cli import OneLineParser, run_guarded

MODULES = ("cryores_train.simulate", "cryores_train.label", "cryores_train.dataset", "cryores_train.fit",
           "cryores_train.evaluate", "cryores_train.rows", "cryores_train.real_rows",
           "cryores_train.evaluate_v3", "cryores_train.ensemble")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="cryores-train", description="Training data and models for cryores.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    for name in MODULES:
        importlib.import_module(name).register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_guarded("cryores-train", lambda: args.run(args))


if __name__ == "__main__":
    sys.exit(main())
