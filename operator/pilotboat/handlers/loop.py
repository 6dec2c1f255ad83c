"""The reconcile loop every kind shares: one pass at a time per object, on a fresh read,
retried after a failure, and visited again when the pass asks to be.

A pass is `reconcile(kube, body, rc) -> seconds | None`: it gets the object as the API
server has it now and returns when to look again (None: only when something changes).
Passes that time schedules run on a small pool, so one slow pass (a migration, a Prometheus
query) never holds up the others.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kubernetes.client.exceptions import ApiException

from pilotboat.adapters.kube import Kube
from pilotboat.handlers import metrics
from pilotboat.handlers.context import Reconcile, runtime
from pilotboat.handlers.requeue import Requeue

__all__ = ["ReconcileLoop", "Pass"]

Pass = Callable[[Kube, Mapping[str, Any], Reconcile], float | None]


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
    ) -> None:
        self._kind = kind
        self._reconcile = reconcile
        self._retry_after = retry_after
        self._skip_deleting = skip_deleting
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._guard = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=kind.lower())
        self._requeue = Requeue(self._submit)

    def _submit(self, namespace: str, name: str) -> None:
        self._pool.submit(self.run, namespace, name)

    def _lock_for(self, namespace: str, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault((namespace, name), threading.Lock())

    def schedule(self, namespace: str, name: str, after: float) -> None:
        """Visit the object after `after` seconds (an earlier visit already due wins)."""
        self._requeue.schedule(namespace, name, after)

    def run(self, namespace: str, name: str, logger: Any = None) -> None:
        """One pass over the object, now, in this thread."""
        kube = runtime().kube
        again: float | None = None
        with self._lock_for(namespace, name):
            fresh = kube.get(self._kind, namespace, name)
            if fresh is None:
                return
            if self._skip_deleting and fresh["metadata"].get("deletionTimestamp"):
                return
            rc = Reconcile.start(kube, fresh, logger)
            try:
                with metrics.reconciling(self._kind):
                    again = self._reconcile(kube, fresh, rc)
            except Exception as exc:
                if isinstance(exc, ApiException) and exc.status == 404:
                    return  # deleted while the pass ran
                rc.log.exception("reconcile failed; retrying in %ss", self._retry_after)
                self.schedule(namespace, name, self._retry_after)
                return
        if again is not None:
            self.schedule(namespace, name, again)
