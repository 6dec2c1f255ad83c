"""Crash points: named lines where a test can make the operator die as a crash would.

`PILOTBOAT_CRASH_AT=microservice.after-deployment` makes the process exit at once (no
cleanup, no status write) the first time it reaches that point. Tests use it to prove that
a restart converges to the same state without repeating what must run once. Unset, a crash
point costs one dictionary lookup.
"""

from __future__ import annotations

import os

__all__ = ["crash_point"]

_armed = {p for p in os.environ.get("PILOTBOAT_CRASH_AT", "").split(",") if p}


def crash_point(name: str) -> None:
    if name in _armed:
        os._exit(86)
