"""What every handler shares: the API client, a correlation id, events and the status write."""

from __future__ import annotations

import datetime as _dt
import logging
import uuid
from collections.abc import Iterable, Mapping
from concurrent.futures import Executor, Future
from concurrent.futures import wait as _wait_for
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from pilotboat.adapters.metric_provider import MetricProvider
from pilotboat.api.common import error_path
from pilotboat.core import reasons
from pilotboat.core.conditions import DesiredCondition, find_condition, set_conditions
from pilotboat.handlers.ports import Kube

__all__ = [
    "Reconcile",
    "Runtime",
    "configure_runtime",
    "describe_validation_error",
    "runtime",
]

_log = logging.getLogger("pilotboat")


@dataclass
class Runtime:
    """Process-wide dependencies, built once at operator start-up."""

    kube: Kube
    prometheus_url: str | None = None
    # Where the platform team's Secrets live (DatabaseServer admin and CA Secrets, owner
    # credentials): the operator's own namespace, never a tenant's.
    operator_namespace: str = "pilotboat-system"
    providers: dict[str, MetricProvider] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)
    # Threads that post a pass's Events side by side while the pass goes on (the pass waits
    # for them before it writes status, so an Event never comes after the status it
    # explains); None posts each in the pass's own thread, one after the other.
    event_poster: Executor | None = None


EVENT_POST_TIMEOUT_SECONDS = 30.0
"""How long a pass waits for its Events to be posted before it writes status."""


_runtime: Runtime | None = None


def configure_runtime(rt: Runtime) -> None:
    global _runtime
    _runtime = rt


def runtime() -> Runtime:
    if _runtime is None:
        raise RuntimeError("the operator runtime is not configured (pilotboat run does it)")
    return _runtime


def now_rfc3339() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def describe_validation_error(exc: ValidationError) -> str:
    """`spec.ports[0].port: Input should be ...; spec.image: Field required` — fields first."""
    return "; ".join(": ".join(error_path(err)) for err in exc.errors())


class _ObjectLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        kwargs["extra"] = {**(self.extra or {}), **kwargs.get("extra", {})}
        return msg, kwargs


@dataclass
class Reconcile:
    """One pass over one object: its identity, a correlation id, and how it reports."""

    kube: Kube
    body: Mapping[str, Any]
    correlation_id: str
    log: logging.LoggerAdapter[Any]
    emitted: set[str] = field(default_factory=set)
    poster: Executor | None = None
    posting: list[Future[None]] = field(default_factory=list)

    @classmethod
    def start(
        cls, kube: Kube, body: Mapping[str, Any], parent: Any = None, *,
        poster: Executor | None = None,
    ) -> Reconcile:
        """A pass begins; with `poster`, its Events are posted by those threads while it goes
        on (it must `flush` before it writes what they explain)."""
        meta = body["metadata"]
        cid = uuid.uuid4().hex[:12]
        ref = {
            "apiVersion": body.get("apiVersion"),
            "kind": body.get("kind"),
            "namespace": meta.get("namespace"),
            "name": meta.get("name"),
            "uid": meta.get("uid"),
        }
        log = _ObjectLog(_log, {"object": ref, "correlation_id": cid})
        return cls(kube, body, cid, log, poster=poster)

    def event(self, reason: str, message: str, *, warning: bool = False) -> None:
        """An Event on the object, and the same line in the log with the correlation id."""
        self.emitted.add(reason)
        level = logging.WARNING if warning else logging.INFO
        self.log.log(level, "%s: %s", reason, message, extra={"reason": reason})
        if self.poster is None:
            self._post(reason, message, warning)
        else:
            self.posting.append(self.poster.submit(self._post, reason, message, warning))

    def _post(self, reason: str, message: str, warning: bool) -> None:
        try:
            self.kube.event(
                dict(self.body),
                reason=reason,
                message=f"{message} [correlation id {self.correlation_id}]",
                type_="Warning" if warning else "Normal",
            )
        except Exception:  # an Event is a report; failing to post one must not stop the work
            self.log.exception("could not post event %s", reason)

    def flush(self) -> None:
        """Wait until the Events of this pass are posted (or given up on)."""
        posting, self.posting = self.posting, []
        if posting:
            _wait_for(posting, timeout=EVENT_POST_TIMEOUT_SECONDS)

    def write_status(
        self,
        status: Mapping[str, Any],
        conditions: Iterable[DesiredCondition],
        fields: Mapping[str, Any],
        *,
        warn: bool = False,
    ) -> bool:
        """Patch `status` when it differs from what is there; an Event per condition flip.

        Returns whether anything was written.
        """
        desired = list(conditions)
        generation = int(fields.get("observedGeneration", 0))
        old_conditions = list(status.get("conditions") or [])
        merged = set_conditions(old_conditions, desired, generation=generation, now=now_rfc3339())
        new_status = {**status, **fields, "conditions": merged}
        if new_status == dict(status):
            return False
        for want in desired:
            before = find_condition(old_conditions, want.type)
            flipped = before is None or before.get("status") != want.status
            if flipped or (before or {}).get("reason") != want.reason:
                if (want.type == reasons.READY or warn) and want.reason not in self.emitted:
                    self.event(want.reason, want.message, warning=want.status == "False" and warn)
        meta = self.body["metadata"]
        patch = {"status": {k: new_status.get(k) for k in {*fields, "conditions"}}}
        self.flush()
        self.kube.merge_patch(
            str(self.body["kind"]), meta["namespace"], meta["name"], patch, subresource="status"
        )
        self.log.info("status written", extra={"status": patch["status"]})
        return True
