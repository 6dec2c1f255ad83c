"""What admission asks for on behalf of a new Microservice's first pass.

A new Microservice's first pass reads nothing but the namespace's SchemaMigrations (its
children do not exist yet; see :mod:`pilotboat.handlers.cache`), and that list is a round
trip before its first Deployment. The admission webhook that dry-runs the Microservice's
children (:func:`pilotboat.handlers.webhooks.rendered_children_check`) is already waiting
on the API server when the object is created, so it asks for the list beside its dry runs,
and the first pass of the same object (by UID) takes the answer instead of asking again.

The list is read when the create is admitted, before the object exists: every
SchemaMigration created before the Microservice is in it, as a list at the first pass
would have it; one created while the Microservice's create was in flight may be missing
from either. A migration's status in it can be older than the pass by up to
:data:`FRESH_SECONDS`; an older answer is not used (the pass lists again), nor is one
this process did not ask for (a standby replica served the webhook, or none ran).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from pilotboat.handlers.ports import Kube

__all__ = ["FRESH_SECONDS", "schema_migrations_for", "take_schema_migrations"]

FRESH_SECONDS = 5.0
"""How old an answer may be when the first pass takes it."""

KEPT = 1024
"""Answers kept at most; the oldest go first (a create refused after this webhook, or an
object whose first pass never came here, leaves one behind)."""

_lists = ThreadPoolExecutor(max_workers=4, thread_name_prefix="prefetch")
_lock = threading.Lock()
_asked: dict[str, tuple[float, Future[list[dict[str, Any]]]]] = {}  # uid → asked at, answer


def schema_migrations_for(kube: Kube, namespace: str, uid: str) -> None:
    """Ask, aside, for the SchemaMigrations of ``namespace`` for the Microservice ``uid``
    being created."""
    if not uid:
        return
    answer = _lists.submit(kube.list, "SchemaMigration", namespace)
    with _lock:
        _asked[uid] = (time.monotonic(), answer)
        while len(_asked) > KEPT:
            del _asked[next(iter(_asked))]


def take_schema_migrations(
    uid: str, now: float | None = None
) -> Future[list[dict[str, Any]]] | None:
    """The answer asked for ``uid`` at admission, if it is fresh (taken once).

    >>> from pilotboat.testing import FakeKube
    >>> schema_migrations_for(FakeKube(), "shop", "uid-1")
    >>> take_schema_migrations("uid-1").result(), take_schema_migrations("uid-1")
    ([], None)
    >>> schema_migrations_for(FakeKube(), "shop", "uid-2")
    >>> take_schema_migrations("uid-2", now=time.monotonic() + FRESH_SECONDS + 1) is None
    True
    """
    with _lock:
        asked = _asked.pop(uid, None)
    now = time.monotonic() if now is None else now
    if asked is None or now - asked[0] > FRESH_SECONDS:
        return None
    return asked[1]
