"""The reconcile loop every kind shares: a work queue of object keys, one pass at a time per
object, on a fresh read (the Microservices' from their watch-fed cache), retried after a
failure, and visited again when the pass asks to be.

A pass is `reconcile(kube, body, rc) -> seconds | None`: it gets the object as the API
server has it now (or, with `read`, as a watch-fed cache has it: the Microservices') and
returns when to look again (None: only when something changes).

Watch events only *enqueue* the object's key (as client-go's work queue does): a key that
is already waiting is not added again, and a key whose pass is running is marked and runs
once more when that pass ends. A burst of events (a Deployment's status changing five
times while its pods start) therefore costs one or two passes, not five, and Kopf's event
threads never wait on a pass. A small pool of workers takes keys in order; a slow pass
(a migration, a Prometheus query) holds up only its own worker.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes.client.exceptions import ApiException

from pilotboat.handlers import metrics
from pilotboat.handlers.context import Reconcile, runtime
from pilotboat.handlers.ports import Kube
from pilotboat.handlers.requeue import Requeue

__all__ = ["LookAgain", "Pass", "ReconcileLoop", "WorkQueue"]

Pass = Callable[[Kube, Mapping[str, Any], Reconcile], float | None]
Read = Callable[[Kube, str, str], Mapping[str, Any] | None]
Key = tuple[str, str]


class WorkQueue:
    """Keys in the order they came, each at most once; a key is never handed to two workers
    at a time, and a key added while it is being worked on comes back once that work ends.

    A key added as *urgent* (a new object, a changed spec: what a person just asked for)
    goes before the others, which wait for the Deployment controller's news and the
    operator's own status writes; one key in :data:`FAIR_SHARE` is still taken from the
    others, so a stream of urgent keys never starves them.

    >>> q = WorkQueue()
    >>> q.add(("ns", "a")); q.add(("ns", "b")); q.add(("ns", "a"))
    >>> q.get()
    ('ns', 'a')
    >>> q.add(("ns", "a"))   # while it is worked on: marked, not handed out twice
    >>> q.get()
    ('ns', 'b')
    >>> q.done(("ns", "a")); q.get()
    ('ns', 'a')
    >>> q = WorkQueue()
    >>> q.add(("ns", "c")); q.add(("ns", "d")); q.add(("ns", "d"), urgent=True); q.get()
    ('ns', 'd')
    >>> q.get()
    ('ns', 'c')
    """

    FAIR_SHARE = 4

    def __init__(self) -> None:
        self._urgent: deque[Key] = deque()
        self._order: deque[Key] = deque()
        self._waiting: dict[Key, bool] = {}  # key → whether it waits in the urgent lane
        self._working: set[Key] = set()
        self._again: dict[Key, bool] = {}  # key → urgent, for keys added while worked on
        self._taken = 0
        self._cond = threading.Condition()

    def add(self, key: Key, *, urgent: bool = False) -> None:
        with self._cond:
            if key in self._working:
                self._again[key] = self._again.get(key, False) or urgent
            elif key not in self._waiting:
                self._line_up(key, urgent)
            elif urgent and not self._waiting[key]:
                self._order.remove(key)  # waiting behind others: moves up
                self._line_up(key, urgent)

    def _line_up(self, key: Key, urgent: bool) -> None:
        self._waiting[key] = urgent
        (self._urgent if urgent else self._order).append(key)
        self._cond.notify()

    def get(self) -> Key:
        """The next key; blocks until there is one."""
        with self._cond:
            while not self._urgent and not self._order:
                self._cond.wait()
            self._taken += 1
            fair_turn = self._taken % self.FAIR_SHARE == 0
            lane = self._urgent if self._urgent and not (fair_turn and self._order) else self._order
            key = lane.popleft()
            del self._waiting[key]
            self._working.add(key)
            return key

    def done(self, key: Key) -> None:
        with self._cond:
            self._working.discard(key)
            if key in self._again:
                urgent = self._again.pop(key)
                if key not in self._waiting:
                    self._line_up(key, urgent)

    def __len__(self) -> int:
        with self._cond:
            return len(self._urgent) + len(self._order)


class LookAgain(Exception):  # noqa: N818 - it is an instruction, not an error
    """Raised by a pass that found the world no longer as it observed it, before writing
    what that observation planned: the pass ends (its status unwritten) and the object is
    visited again at once, from what is there now."""


class ReconcileLoop:
    """Runs one kind's reconcile passes; see the module docstring for the contract."""

    def __init__(
        self,
        kind: str,
        reconcile: Pass,
        *,
        retry_after: float,
        workers: int = 2,
        skip_deleting: bool = True,
        read: Read | None = None,
        gone: Callable[[str, str], None] | None = None,
        events_aside: bool = False,
    ) -> None:
        self._kind = kind
        self._reconcile = reconcile
        self._retry_after = retry_after
        self._skip_deleting = skip_deleting
        self._read = read
        self._gone = gone
        self._events_aside = events_aside  # post Events on the runtime's event_poster
        self._queue = WorkQueue()
        self._workers = workers
        self._started = False
        self._start_guard = threading.Lock()
        self._running: set[Key] = set()
        self._running_cond = threading.Condition()
        self._requeue = Requeue(self.enqueue)

    def enqueue(self, namespace: str, name: str, *, urgent: bool = False) -> None:
        """Visit the object soon, on a worker (at most once more however often it is asked);
        `urgent` before the keys that are not (see :class:`WorkQueue`)."""
        self._start()
        self._queue.add((namespace, name), urgent=urgent)

    def schedule(self, namespace: str, name: str, after: float) -> None:
        """Visit the object after `after` seconds (an earlier visit already due wins)."""
        self._requeue.schedule(namespace, name, after)

    def _start(self) -> None:
        with self._start_guard:
            if self._started:
                return
            self._started = True
        for number in range(self._workers):
            threading.Thread(target=self._work, name=f"{self._kind.lower()}-{number}",
                             daemon=True).start()

    def _work(self) -> None:
        while True:
            key = self._queue.get()
            try:
                self.run(*key)
            except Exception:  # run() logs what it can; the worker must go on
                pass
            finally:
                self._queue.done(key)

    def run(self, namespace: str, name: str, logger: Any = None) -> None:
        """One pass over the object, now, in this thread (after any pass of it already
        running, in another thread, has ended)."""
        key = (namespace, name)
        with self._running_cond:
            while key in self._running:
                self._running_cond.wait()
            self._running.add(key)
        try:
            again = self._pass(namespace, name, logger)
        finally:
            with self._running_cond:
                self._running.discard(key)
                self._running_cond.notify_all()
        if again is not None:
            self.schedule(namespace, name, again)

    def _pass(self, namespace: str, name: str, logger: Any) -> float | None:
        kube = runtime().kube
        if self._read is not None:
            fresh = self._read(kube, namespace, name)
        else:
            fresh = kube.get(self._kind, namespace, name)
        if fresh is None or (self._skip_deleting and fresh["metadata"].get("deletionTimestamp")):
            self._forget(namespace, name)
            return None
        poster = runtime().event_poster if self._events_aside else None
        rc = Reconcile.start(kube, fresh, logger, poster=poster)
        try:
            with metrics.reconciling(self._kind):
                try:
                    return self._reconcile(kube, fresh, rc)
                finally:
                    rc.flush()  # a pass ends with its Events posted
        except LookAgain as again:
            rc.log.info("%s; looking again now", again)
            return 0.0
        except Exception as exc:
            if isinstance(exc, ApiException) and exc.status == 404:
                self._forget(namespace, name)  # deleted while the pass ran
                return None
            rc.log.exception("reconcile failed; retrying in %ss", self._retry_after)
            return self._retry_after

    def _forget(self, namespace: str, name: str) -> None:
        """The object is gone or going: what the process keeps of it goes too. This runs in
        a pass, so after any pass of the object that was running when it went."""
        if self._gone is not None:
            self._gone(namespace, name)
