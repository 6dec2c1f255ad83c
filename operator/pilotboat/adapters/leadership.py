"""Leader election over a ``coordination.k8s.io`` Lease: of the operator's replicas, one acts.

Kopf's peering alone cannot choose between replicas: replicas of equal priority all pause,
and a replica of higher priority takes over while the other may still be acting. So
``pilotboat run --leader-elect`` waits for a Lease before Kopf starts, the way controllers
built on client-go do, with the Kubernetes client's own ``LeaderElection`` and ``LeaseLock``
(client-go's algorithm: a candidate takes the Lease when its holder has not renewed it for
``leaseDurationSeconds``, as observed on the candidate's own clock; every write is a replace
carrying the ``resourceVersion`` read, so of two candidates one wins).

* Standing by: the process answers its probes and waits, retrying every ``retry_period``.
* Leading: a daemon thread renews the Lease every ``retry_period``; if it cannot renew for
  ``renew_deadline``, the process exits at once (``on_lost``, by default ``os._exit(1)``):
  another replica may take the Lease ``lease_duration`` after the last renewal, and a process
  that may no longer hold it must not act. The kubelet restarts it and it stands by.
* Stopping (SIGTERM): :meth:`Leadership.release` empties the holder, and a standby takes over
  at its next retry instead of waiting for the Lease to expire.

A restarted container of the same pod has the same identity (the pod's name) and takes the
Lease back at once: the process that held it is gone.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import kubernetes.client as k8s
from kubernetes.client.exceptions import ApiException
from kubernetes.leaderelection import electionconfig, leaderelection
from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

from pilotboat.adapters.kube import FIELD_MANAGER

__all__ = ["Leadership", "lease_holder"]

log = logging.getLogger("pilotboat.leadership")
# The client's election logs each retry at INFO; the transitions are logged here instead.
logging.getLogger("leaderelection").setLevel(logging.WARNING)


class _FieldManagedLeases(k8s.CoordinationV1Api):
    """Lease writes that name the operator as their field manager, like all its writes."""

    def create_namespaced_lease(  # type: ignore[override]
        self, namespace: str, body: Any, **kwargs: Any
    ) -> Any:
        kwargs.setdefault("field_manager", FIELD_MANAGER)
        return super().create_namespaced_lease(namespace, body, **kwargs)

    def replace_namespaced_lease(  # type: ignore[override]
        self, name: str, namespace: str, body: Any, **kwargs: Any
    ) -> Any:
        kwargs.setdefault("field_manager", FIELD_MANAGER)
        return super().replace_namespaced_lease(name, namespace, body, **kwargs)


class _Lock(LeaseLock):
    """The client's LeaseLock on a given ApiClient, that writes nothing once released."""

    def __init__(self, api: k8s.ApiClient, name: str, namespace: str, identity: str):
        super().__init__(name, namespace, identity)  # type: ignore[no-untyped-call]
        self.api_instance = _FieldManagedLeases(api)
        self.released = False

    def create(self, name: str, namespace: str, election_record: Any) -> bool:
        return (
            False
            if self.released
            else bool(
                super().create(name, namespace, election_record)  # type: ignore[no-untyped-call]
            )
        )

    def update(self, name: str, namespace: str, updated_record: Any) -> bool:
        return (
            False
            if self.released
            else bool(
                super().update(name, namespace, updated_record)  # type: ignore[no-untyped-call]
            )
        )


def lease_holder(api: k8s.ApiClient, namespace: str, name: str) -> str | None:
    """Who holds the Lease `namespace/name` now (None: nobody, or no such Lease)."""
    try:
        lease = k8s.CoordinationV1Api(api).read_namespaced_lease(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return (lease.spec and lease.spec.holder_identity) or None


def _exit_at_once() -> None:
    log.critical("lost the lease: exiting so that no two replicas act at once")
    logging.shutdown()
    os._exit(1)


class Leadership:
    def __init__(
        self,
        api: k8s.ApiClient,
        namespace: str,
        name: str,
        identity: str,
        *,
        lease_duration: int = 15,
        renew_deadline: int = 10,
        retry_period: int = 2,
        on_lost: Callable[[], None] = _exit_at_once,
    ):
        self.namespace, self.name, self.identity = namespace, name, identity
        self._lock = _Lock(api, name, namespace, identity)
        self._leading = threading.Event()
        self._on_lost = on_lost
        self._config = electionconfig.Config(  # type: ignore[no-untyped-call]
            self._lock, lease_duration, renew_deadline, retry_period,
            onstarted_leading=self._leading.set, onstopped_leading=self._stopped,
        )  # fmt: skip
        self._thread: threading.Thread | None = None

    @property
    def leading(self) -> bool:
        return self._leading.is_set()

    def holder(self) -> str | None:
        """Who holds the Lease now, as the API server has it (None: nobody)."""
        return lease_holder(self._lock.api_instance.api_client, self.namespace, self.name)

    def acquire(self, timeout: float | None = None) -> bool:
        """Block until this process leads (True), or `timeout` seconds pass (False)."""
        if self._thread is None:
            log.info(
                "waiting for the lease %s/%s as %s (held by %s)",
                self.namespace,
                self.name,
                self.identity,
                self.holder(),
            )
            election = leaderelection.LeaderElection(self._config)  # type: ignore[no-untyped-call]
            self._thread = threading.Thread(
                target=election.run, name="leader-election", daemon=True
            )
            self._thread.start()
        deadline = None if timeout is None else time.monotonic() + timeout
        # Short waits: signal handlers run between them.
        while not self._leading.wait(1.0 if deadline is None else min(1.0, timeout or 0)):
            if deadline is not None and time.monotonic() >= deadline:
                return False
        log.info("leading: holding the lease %s/%s as %s", self.namespace, self.name, self.identity)
        return True

    def release(self) -> None:
        """Stop renewing and hand the Lease over (the holder emptied), if this process holds it."""
        self._lock.released = True
        if not self._leading.is_set():
            return
        self._leading.clear()
        api = self._lock.api_instance
        try:
            lease = api.read_namespaced_lease(self.name, self.namespace)
            if lease.spec is None or lease.spec.holder_identity != self.identity:
                return
            lease.spec.holder_identity = None
            lease.spec.lease_duration_seconds = 1
            api.replace_namespaced_lease(self.name, self.namespace, lease)
            log.info("released the lease %s/%s", self.namespace, self.name)
        except ApiException as exc:  # it expires by itself in lease_duration
            log.warning(
                "could not release the lease %s/%s: %s", self.namespace, self.name, exc.reason
            )

    def _stopped(self) -> None:
        if self._lock.released:
            return
        self._leading.clear()
        self._on_lost()
