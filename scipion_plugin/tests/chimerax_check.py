"""Run a ChimeraX command script in a real headless ChimeraX and print what it coloured as JSON.

Executed by the Python of a ChimeraX venv built with the kit in ../shared/chimerax (it needs the
kit's ``cxsession``), not by pytest: ``CHIMERAX_PYTHON chimerax_check.py SCRIPT.cxc``. The
Scipion tests run it on the script the viewer writes.
"""

from __future__ import annotations

import json
import sys

import numpy as np


def check(script: str) -> dict:
    """Open ``script`` in a new session; report log problems, #1's surface colours and the key."""
    from chimerax.color_key.model import get_model
    from chimerax.core.commands import StringArg
    from chimerax.map import Volume
    from cxsession import run_cmd, start_session

    session = start_session()
    try:
        _, log = run_cmd(session, f"open {StringArg.unparse(script)}")
    except Exception as error:  # noqa: BLE001 (reported to the test, which fails on it)
        return {"exception": f"{type(error).__name__}: {error}"}
    volumes = {m.atomspec: m for m in session.models.list() if isinstance(m, Volume)}
    report = {"problems": [text for level, text in log if level in ("warning", "error", "bug")],
              "volumes": sorted(volumes), "key": get_model(session, create=False) is not None}
    if "#1" in volumes:
        volumes["#1"].update_drawings()
        colors = [np.asarray(s.vertex_colors) for s in volumes["#1"].surfaces if s.vertex_colors is not None]
        report["colored_vertices"] = int(sum(len(c) for c in colors))
        report["distinct_colors"] = int(len(np.unique(np.concatenate(colors), axis=0))) if colors else 0
    if "#2" in volumes:
        report["locres_shown"] = bool(volumes["#2"].display)
    return report


if __name__ == "__main__":
    print(json.dumps(check(sys.argv[1])))
