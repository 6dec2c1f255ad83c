"""Children the API server refuses, told in the Microservice's own fields, and the back-off
between attempts to write them.

A Microservice the CRD accepts can still render a Deployment or Service the API server
refuses (a name that is no valid Service name, an environment variable name Kubernetes
rejects, a port out of range …). Admission asks the API server first, by a server-side dry
run of the rendered children (:func:`dry_run_children`); whatever is refused later makes
``Ready=False ChildRejected`` with the API server's words, and the next attempts back off.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from kubernetes.client.exceptions import ApiException

from pilotboat.api import MicroserviceSpec
from pilotboat.core.release import ChildRejection, controlled_by
from pilotboat.core.workload import Owner, render_deployment, render_service, source_field
from pilotboat.handlers.ports import Kube

__all__ = [
    "ChildBackoff",
    "CREATE_ONLY",
    "ChildRefusal",
    "child_refusal",
    "controlled_by",
    "create_only",
    "dry_run_children",
]

_REFUSED = (400, 422)

CREATE_ONLY = "18446744073709551615"
"""A ``metadata.resourceVersion`` no object has (the largest the API server parses). A
server-side apply carrying it creates the object when there is none (a create ignores it)
and, when one of that name exists, whoever's, is refused with 409 Conflict: the
resourceVersion of an update must match the object's. So a child the operator observed
absent is created without asking first whether someone made one since, and never written
over (``tests/cluster/test_child_rejected.py`` has the real API server show both)."""


def create_only(body: Mapping[str, Any]) -> dict[str, Any]:
    """``body`` as a server-side apply that only creates (:data:`CREATE_ONLY`).

    >>> create_only({"kind": "Service", "metadata": {"name": "web"}})["metadata"]
    {'name': 'web', 'resourceVersion': '18446744073709551615'}
    """
    return {**body, "metadata": {**body["metadata"], "resourceVersion": CREATE_ONLY}}

DRY_RUN_THREADS = 8
"""Two for each thread of the admission pool (``ADMISSION_WORKERS`` in
:mod:`pilotboat.handlers.webhooks`), so that every review in progress asks for its
Deployment and its Service at once, however many run side by side."""

_dry_runs = ThreadPoolExecutor(max_workers=DRY_RUN_THREADS, thread_name_prefix="dry-runs")
"""Where :func:`dry_run_children` asks for its children side by side (its own threads: the
admission pool's are the callers, and a pool that waits on itself can run out)."""


@dataclass(frozen=True)
class ChildRefusal:
    kind: str
    name: str
    message: str
    """The API server's reasons, each led by the Microservice field it comes from."""


# Server-side apply cannot even build the patch of an object whose list-map keys repeat (two
# ports 8080/TCP): the API server answers 500 with this message, a refusal all the same.
_TYPED_PATCH = re.compile(r"failed to create typed patch object \([^)]*\): \.(?P<field>[^:]+): ")


def _typed_patch_cause(message: str, child: Mapping[str, Any]) -> dict[str, str] | None:
    """The cause in a typed-patch failure, as a cause of a 422 would carry it (a container
    named by its key is named by its index in the rendered template)."""
    match = _TYPED_PATCH.search(message)
    if match is None:
        return None
    pod = ((child.get("spec") or {}).get("template") or {}).get("spec") or {}
    names = {str(c.get("name")): i for i, c in enumerate(pod.get("containers") or ())}
    field = re.sub(r'containers\[name="([^"]*)"\]',
                   lambda m: f"containers[{names.get(m[1], 0)}]", match["field"])
    return {"field": field, "message": message[match.end():]}


def child_refusal(
    exc: ApiException, child: Mapping[str, Any], spec: MicroserviceSpec
) -> ChildRefusal | None:
    """What the API server said about ``child``, if ``exc`` is a refusal (not an outage)."""
    try:
        body = json.loads(exc.body or "{}")
    except ValueError:
        body = {}
    typed = (_typed_patch_cause(str(body.get("message") or ""), child)
             if exc.status == 500 else None)
    if exc.status not in _REFUSED and typed is None:
        return None
    if typed is not None:
        body = {"details": {"causes": [typed]}}
    kind, name = str(child.get("kind") or "object"), str((child.get("metadata") or {}).get("name"))
    env_count = len(spec.env or ())
    parts = []
    for cause in (body.get("details") or {}).get("causes") or []:
        field = cause.get("field")
        source = source_field(kind, field, env_count=env_count, spec=spec) if field else None
        where = source or (f"{kind} field {field}" if field else kind)
        parts.append(f"{where}: {cause.get('message') or cause.get('reason')}")
    if not parts:
        parts.append(str(body.get("message") or exc.reason))
    message = (
        f"the API server refuses the {kind} {name} rendered from this Microservice: "
        + "; ".join(parts)
    )
    return ChildRefusal(kind, name, message[:2000])


def dry_run_children(kube: Kube, owner: Owner, spec: MicroserviceSpec) -> ChildRefusal | None:
    """Ask the API server, storing nothing, whether it takes the children ``spec`` renders.

    The Deployment and the Service are asked side by side: this runs inside the admission
    request of every create and changed spec, so one round trip less is what ``kubectl
    apply`` (and the release it starts) waits. The first refusal in render order is the
    answer, as if they had been asked one after the other."""
    children = [
        render_deployment(owner, spec, track="stable", replicas=spec.replicas),
        render_service(owner, spec),
    ]
    for child in children:
        child["metadata"].pop("ownerReferences", None)  # no UID before the object exists

    def ask(child: dict[str, Any]) -> ApiException | None:
        try:
            kube.apply(child, dry_run=True)
        except ApiException as exc:
            return exc
        return None

    for child, exc in zip(children, _dry_runs.map(ask, children), strict=True):
        if exc is None:
            continue
        meta = child["metadata"]
        # Asked only now, so an admitted spec costs one request per child: another's
        # object is never written, and the reconciler says so (ChildNotOwned).
        existing = kube.get(str(child["kind"]), meta["namespace"], meta["name"])
        if existing is not None and not controlled_by(existing, owner):
            continue
        refusal = child_refusal(exc, child, spec)
        if refusal is not None:
            return refusal
        raise exc
    return None


class ChildBackoff:
    """Per object and generation: when writing its children may be tried again.

    Delays double from ``first`` to ``longest``; a new generation or a success starts over.
    Kept in memory: after a restart the first attempt comes at once, which is what a
    changed cluster (a quota raised, a webhook fixed) deserves anyway.
    """

    def __init__(self, first: float = 5.0, longest: float = 300.0) -> None:
        self._first, self._longest = first, longest
        self._lock = threading.Lock()
        self._state: dict[str, tuple[int, int, float]] = {}  # uid → generation, tries, next
        self._messages: dict[str, str] = {}  # uid → the API server's words on the last try

    def wait(self, uid: str, generation: int, now: float | None = None) -> float | None:
        """Seconds to wait before the next attempt, or None when it may go now."""
        now = time.monotonic() if now is None else now
        with self._lock:
            state = self._state.get(uid)
        if state is None or state[0] != generation or now >= state[2]:
            return None
        return state[2] - now

    def pending(self, uid: str, generation: int, now: float | None = None) -> ChildRejection | None:
        """The refusal this generation waits out, or None when the next attempt may go."""
        wait = self.wait(uid, generation, now)
        with self._lock:
            message = self._messages.get(uid)
        return None if wait is None or message is None else ChildRejection(message, wait)

    def failed(
        self, uid: str, generation: int, now: float | None = None, *, message: str = ""
    ) -> float:
        """Record a refusal (and the API server's words); returns the delay before the next
        attempt."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._messages[uid] = message
            gen, tries, _ = self._state.get(uid, (generation, 0, now))
            tries = tries + 1 if gen == generation else 1
            delay = float(min(self._first * 2 ** (tries - 1), self._longest))
            self._state[uid] = (generation, tries, now + delay)
        return delay

    def succeeded(self, uid: str) -> None:
        with self._lock:
            self._state.pop(uid, None)
            self._messages.pop(uid, None)
