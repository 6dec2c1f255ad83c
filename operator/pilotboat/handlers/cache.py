"""The children the operator labelled, as the watch last delivered them: reads without a GET.

Kopf watches the Deployments and Services that carry ``app.kubernetes.io/managed-by:
pilotboat`` (the handlers in :mod:`pilotboat.handlers.microservice`); every event puts the
object here, and a deletion takes it out. A pass reads its children from here and asks the
API server only on a miss: an object the watch has not delivered yet, or one the operator
does not label (a foreign ``web-canary`` that must be refused as ``ChildNotOwned``, never
overwritten), so a miss is exactly as safe as before.

:data:`owners` does the same for the Microservices themselves, fed by their watch events
and by the object each status write returns, so a pass starts without a GET and never on a
status older than the operator's own last write.

The cache keeps a child without its ``metadata.managedFields`` (no pass reads them of a
child), which is much of a Deployment's size. A hit may be one event old: the write a pass
just made arrives with the next watch event, which visits the object again. Writes are
server-side applies, so acting on a state one event old repeats a write at worst, as with
any informer-fed controller.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from pilotboat.core.workload import LABEL_MANAGED_BY
from pilotboat.handlers.ports import Kube

__all__ = ["ChildCache", "children", "owners"]

Key = tuple[str, str, str]  # kind, namespace, name


class ChildCache:
    """Objects by kind, namespace and name, newest resourceVersion wins."""

    def __init__(self, *, lean: bool = True, labelled: str | None = None) -> None:
        self._lean = lean
        self._labelled = labelled
        self._objects: dict[Key, Mapping[str, Any]] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def seen(self, kind: str, body: Mapping[str, Any], *, deleted: bool = False) -> None:
        """What a watch event delivered."""
        meta = body.get("metadata") or {}
        key = (kind, str(meta.get("namespace")), str(meta.get("name")))
        if not deleted and self._labelled is not None and (
                (meta.get("labels") or {}).get(LABEL_MANAGED_BY) != self._labelled):
            return  # not the operator's: never served from here (see the module docstring)
        with self._lock:
            if deleted:
                self._objects.pop(key, None)
                return
            known = self._objects.get(key)
            if known is not None and _older(body, known):
                return  # a late event of an older version
            self._objects[key] = _lean(body) if self._lean else body

    def get(self, kube: Kube, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The object as the watch last delivered it, else as the API server has it now."""
        with self._lock:
            found = self._objects.get((kind, namespace, name))
            if found is not None:
                self.hits += 1
                return dict(found)
            self.misses += 1
        return kube.get(kind, namespace, name)

    def __len__(self) -> int:
        with self._lock:
            return len(self._objects)

    def clear(self) -> None:
        """Forget everything (a new API server: the in-memory one of the fast tests)."""
        with self._lock:
            self._objects.clear()


def _lean(body: Mapping[str, Any]) -> Mapping[str, Any]:
    """`body` without ``metadata.managedFields``, which no pass reads of a child and which
    is often the larger part of a Deployment (one entry per writer, each field listed).

    >>> _lean({"metadata": {"name": "web", "managedFields": [{"manager": "pilotboat"}]}})
    {'metadata': {'name': 'web'}}
    """
    meta = body.get("metadata") or {}
    if "managedFields" not in meta:
        return body
    return {**body, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}


def _older(body: Mapping[str, Any], than: Mapping[str, Any]) -> bool:
    try:
        return int(body["metadata"]["resourceVersion"]) < int(than["metadata"]["resourceVersion"])
    except (KeyError, TypeError, ValueError):
        return False  # resourceVersions are opaque in general; then the latest event wins


children = ChildCache(labelled="pilotboat")
"""Deployments and Services the operator labelled (``app.kubernetes.io/managed-by:
pilotboat``); an object without that label is never kept, whoever delivers it."""

owners = ChildCache(lean=False)
"""Microservices, whole: a pass reads its object from here, as the watch or the operator's
own last write left it (whichever is newer), and asks the API server only on a miss. Their
``managedFields`` stay, since they tell the operator's status from a forged one."""
