"""Reconcile again later: for pauses, analysis intervals and anything else that waits on
time rather than on a watch event.

In memory only, on purpose: after a restart Kopf lists every object and each reconcile
schedules its own next visit again, so nothing is lost when the schedule is.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable

__all__ = ["Requeue"]

Key = tuple[str, str]


class Requeue:
    """A single timer thread calling `callback(namespace, name)` when each key is due.

    Scheduling a key that is already scheduled keeps the earlier time.
    """

    def __init__(self, callback: Callable[[str, str], None]) -> None:
        self._callback = callback
        self._heap: list[tuple[float, Key]] = []
        self._due: dict[Key, float] = {}
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def schedule(self, namespace: str, name: str, after: float) -> None:
        key = (namespace, name)
        at = time.monotonic() + max(after, 0.0)
        with self._cond:
            if key in self._due and self._due[key] <= at:
                return
            self._due[key] = at
            heapq.heappush(self._heap, (at, key))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="requeue", daemon=True)
                self._thread.start()
            self._cond.notify()

    def _next_due(self) -> Key:
        with self._cond:
            while True:
                while self._heap and self._due.get(self._heap[0][1]) != self._heap[0][0]:
                    heapq.heappop(self._heap)  # superseded by an earlier schedule
                if not self._heap:
                    self._cond.wait()
                    continue
                at, key = self._heap[0]
                wait = at - time.monotonic()
                if wait <= 0:
                    heapq.heappop(self._heap)
                    del self._due[key]
                    return key
                self._cond.wait(wait)

    def _run(self) -> None:
        while True:
            namespace, name = self._next_due()
            try:
                self._callback(namespace, name)
            except Exception:  # the callback logs its own failures; the timer must go on
                pass
