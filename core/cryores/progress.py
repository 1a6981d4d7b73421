"""Progress reporting shared by the estimators: a terminal bar, a callback, or nothing.

``progress`` arguments accept ``True`` (a tqdm bar on stderr, as in the CLI), ``False``, or a
callable ``(done, total)`` for hosts with their own status line (the ChimeraX bundle).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from typing import Union

ProgressArg = Union[bool, Callable[[int, int], None]]


class _Callback:
    """The two tqdm methods the estimators use, forwarded to a ``(done, total)`` callable."""

    def __init__(self, callback: Callable[[int, int], None], total: int):
        self.callback, self.total, self.done = callback, total, 0

    def reset(self, total: int) -> None:
        self.total, self.done = total, 0
        self.callback(0, total)

    def update(self, n: int = 1) -> None:
        self.done += n
        self.callback(self.done, self.total)


@contextmanager
def progress_reporter(progress: ProgressArg, total: int, unit: str, desc: str):
    """Yield an object with ``reset(total)``/``update(n)``, or None when ``progress`` is off."""
    if callable(progress):
        yield _Callback(progress, total)
    elif progress:
        from tqdm import tqdm

        with tqdm(total=total, unit=unit, desc=desc, leave=False, dynamic_ncols=True) as bar:
            yield bar
    else:
        yield None
