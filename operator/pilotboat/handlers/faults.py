"""Crash points: named lines where a test can make the operator die as a crash would.

`PILOTBOAT_CRASH_AT=microservice.after-deployment` makes the process exit at once (no
cleanup, no status write) the first time it reaches that point. Tests use it to prove that
a restart converges to the same state without repeating what must run once. Unset, a crash
point costs one dictionary lookup.
"""

from __future__ import annotations

import os
from collections.abc import Callable

__all__ = ["crash_point"]

_armed = {p for p in os.environ.get("PILOTBOAT_CRASH_AT", "").split(",") if p}


def crash_point(name: str, settle: Callable[[], None] | None = None) -> None:
    """Die here if the test armed `name`. `settle` runs first: what the pass already sent on
    its way in the background (its Events, posted side by side) reaches the API server, so
    the point is the line it names and not a moment anywhere in the writes before it."""
    if name in _armed:
        if settle is not None:
            settle()
        os._exit(86)
