"""Hand freed heap memory back to the operating system.

CPython frees objects into glibc's heap, which keeps the pages: after the start (building
the API's validators frees a few MiB of temporaries) and after every burst of work (a
thousand Microservices created at once), the process's RSS stays at its high-water mark
although the memory is free. ``malloc_trim(0)`` returns the free pages (the top of the
heap, and whole free pages inside it). :class:`Trimmer` calls it once at the start and
then every ``interval`` seconds, the way Go's runtime returns memory it no longer uses.

Only on glibc; elsewhere (musl, macOS) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
from collections.abc import Callable

__all__ = ["Trimmer", "malloc_trim"]

_log = logging.getLogger("pilotboat")


def _libc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_TRIM = _libc_trim()


def malloc_trim() -> bool:
    """Return the heap's free pages to the system now; False where there is no glibc."""
    if _TRIM is None:
        return False
    _TRIM(0)
    return True


class Trimmer:
    """Calls :func:`malloc_trim` now and every ``interval`` seconds, on a daemon thread."""

    def __init__(self, interval: float = 30.0) -> None:
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if _TRIM is None or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="malloc-trim", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while True:
            try:
                malloc_trim()
            except Exception:  # noqa: BLE001 - memory is a nicety; the operator goes on
                _log.exception("returning free memory to the system failed")
                return
            if self._stop.wait(self._interval):
                return
