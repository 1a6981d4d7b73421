"""Progress messages for long cryores runs inside ChimeraX (plain Python, no ChimeraX import).

ChimeraX draws its status line even while a command blocks the event loop, so a callback
that writes ``done/total`` there is enough to show that a run is alive. Messages are
throttled: the status line is redrawn at most every ``min_interval`` seconds (and always at
the end), so thousands of patches do not cost thousands of redraws.
"""

from __future__ import annotations

import inspect
import time
from typing import Callable


class StatusProgress:
    """Callable ``(done, total)`` that sends "LABEL: done/total UNIT (P %)" to ``status``."""

    def __init__(self, status: Callable[[str], None], label: str, unit: str = "patches", *,
                 min_interval: float = 0.5, clock: Callable[[], float] = time.monotonic):
        self.status = status
        self.label = label
        self.unit = unit
        self.min_interval = min_interval
        self.clock = clock
        self.messages = 0
        self._last: float | None = None

    def message(self, done: int, total: int) -> str:
        unit = f" {self.unit}" if self.unit else ""
        if total <= 0:
            return f"{self.label}: {done}{unit}"
        return f"{self.label}: {done}/{total}{unit} ({100 * done // total} %)"

    def __call__(self, done: int, total: int) -> None:
        now = self.clock()
        finished = total > 0 and done >= total
        if not finished and self._last is not None and now - self._last < self.min_interval:
            return
        self._last = now
        self.messages += 1
        self.status(self.message(done, total))


def accepts_progress_callback(function: Callable) -> bool:
    """Whether ``function``'s ``progress`` parameter is declared to take a callable.

    cryores' ``predict`` / ``local_fsc`` took only ``progress: bool`` (a terminal progress bar)
    before they accepted a ``(done, total)`` callback; passing a callable to the old signature
    would draw a terminal bar instead, so the caller checks first.
    """
    try:  # cryores uses postponed annotations: "ProgressArg" only names the Union with Callable
        parameter = inspect.signature(function, eval_str=True).parameters.get("progress")
    except (TypeError, ValueError, NameError, SyntaxError):
        try:
            parameter = inspect.signature(function).parameters.get("progress")
        except (TypeError, ValueError):
            return False
    return parameter is not None and "Callable" in str(parameter.annotation)
