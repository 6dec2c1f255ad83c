"""The children the operator labelled, as the watch last delivered them: reads without a GET.

Kopf watches the Deployments and Services that carry ``app.kubernetes.io/managed-by:
pilotboat`` (the handlers in :mod:`pilotboat.handlers.microservice`); every event puts the
object here, and a deletion takes it out. A pass reads its children from here and asks the
API server only on a miss: an object the watch has not delivered yet, or one the operator
does not label (a foreign ``web-canary`` that must be refused as ``ChildNotOwned``, never
overwritten), so a miss is exactly as safe as before.

:data:`owners` does the same for the Microservices themselves, fed by their watch events
and by the object each status write returns, so a pass starts without a GET and never on a
status older than the operator's own last write. The watch event that brings a status
write back is no news when nothing but that write changed the object since the pass read
it (:meth:`ChildCache.wrote`, :meth:`ChildCache.echo`): it starts no pass, as a
controller-runtime predicate would drop it.

A child the API server answered 404 for is remembered as absent, so a Microservice without
a canary does not ask for ``web-canary`` on every pass; the watch's first event of the
child replaces the mark. A foreign object of that name created later carries no label, so
no event tells of it: the operator *creates* a child it observed absent with a server-side
apply that only creates (:data:`pilotboat.handlers.children.CREATE_ONLY`), which the API
server refuses when an object of that name exists, whoever's. Such a name is then
:meth:`ChildCache.contested`: every later read of it asks the API server, which tells whose
it is.

A Microservice's first pass (it has no status yet) does not ask at all for the children
the cache does not hold (``get_many(..., assume_absent=True)``): a new object's children do
not exist, almost always, and the create-only write finds out when one does. A later pass
asks as before, so a foreign ``web-canary`` that the first pass had no reason to write is
found by the second.

The cache keeps a child without its ``metadata.managedFields`` (no pass reads them of a
child), which is much of a Deployment's size. A hit may be one event old: the write a pass
just made arrives with the next watch event, which visits the object again. Writes are
server-side applies, so acting on a state one event old repeats a write at worst, as with
any informer-fed controller.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pilotboat.core.workload import LABEL_MANAGED_BY
from pilotboat.handlers.ports import Kube

__all__ = ["ChildCache", "children", "owners"]

Key = tuple[str, str, str]  # kind, namespace, name

CONTESTED = 4096
"""Names kept as contested at most (:meth:`ChildCache.contested`); each comes of a taken name."""

READERS = 4
"""Threads that ask the API server for the misses of one :meth:`ChildCache.get_many` at once."""
_readers = ThreadPoolExecutor(max_workers=READERS, thread_name_prefix="cache-reads")


class _Absent:
    """The API server answered 404 for the key (:data:`_ABSENT`, the one instance)."""


_ABSENT = _Absent()


class ChildCache:
    """Objects by kind, namespace and name, newest resourceVersion wins; with
    ``remember_absent``, also the keys the API server last answered 404 for."""

    def __init__(
        self, *, lean: bool = True, labelled: str | None = None, remember_absent: bool = False
    ) -> None:
        self._lean = lean
        self._labelled = labelled
        self._remember_absent = remember_absent
        self._objects: dict[Key, Mapping[str, Any] | _Absent] = {}
        self._echoes: dict[Key, str] = {}  # key → resourceVersion of a settled own write
        self._contested: dict[Key, None] = {}  # keys always asked of the API server
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def seen(self, kind: str, body: Mapping[str, Any], *, deleted: bool = False) -> None:
        """What a watch event delivered."""
        meta = body.get("metadata") or {}
        key = _key_of(kind, meta)
        if not deleted and self._labelled is not None and (
                (meta.get("labels") or {}).get(LABEL_MANAGED_BY) != self._labelled):
            return  # not the operator's: never served from here (see the module docstring)
        if deleted:
            with self._lock:
                self._objects.pop(key, None)
                self._echoes.pop(key, None)
                self._contested.pop(key, None)
            return
        kept: Mapping[str, Any] = _compact(_lean(body) if self._lean else body)
        with self._lock:
            known = self._objects.get(key)
            if isinstance(known, Mapping) and _older(body, known):
                return  # a late event of an older version
            self._objects[key] = kept
            self._contested.pop(key, None)  # held now: whose it is is in it

    def wrote(self, kind: str, body: Mapping[str, Any], *, settled: bool) -> None:
        """What the operator's own write returned, kept as :meth:`seen` keeps an event.
        ``settled``: the object is the one the writing pass read with only that pass's
        change on it, so the watch event that brings this version back is no news to a
        pass (:meth:`echo`)."""
        self.seen(kind, body)
        meta = body.get("metadata") or {}
        key = _key_of(kind, meta)
        version = meta.get("resourceVersion")
        with self._lock:
            if settled and version:
                self._echoes[key] = str(version)
            else:
                self._echoes.pop(key, None)

    def echo(self, kind: str, body: Mapping[str, Any]) -> bool:
        """Whether ``body``, as a watch delivered it, is the version of a settled own write
        (:meth:`wrote`). Asked once per event: any event clears the mark, so whatever
        comes after the echo is news again.

        >>> c = ChildCache()
        >>> mine = {"metadata": {"namespace": "ns", "name": "web", "resourceVersion": "7"}}
        >>> c.wrote("Microservice", mine, settled=True)
        >>> c.echo("Microservice", mine), c.echo("Microservice", mine)
        (True, False)
        >>> c.wrote("Microservice", mine, settled=False); c.echo("Microservice", mine)
        False
        """
        meta = body.get("metadata") or {}
        key = _key_of(kind, meta)
        with self._lock:
            version = self._echoes.pop(key, None)
        return version is not None and version == str(meta.get("resourceVersion"))

    def forget(self, kind: str, namespace: str, name: str) -> None:
        """Drop what is known of the object (kept or known absent): the next read asks."""
        with self._lock:
            self._objects.pop((kind, namespace, name), None)

    def contested(self, kind: str, namespace: str, name: str) -> None:
        """An object of that name exists though a pass observed it absent (its create-only
        write was refused): forget what is known of it, and have every read of it ask the
        API server until the watch delivers it as the operator's (a foreign object never
        comes). At most :data:`CONTESTED` names are kept, the oldest dropped first."""
        key = (kind, namespace, name)
        with self._lock:
            self._objects.pop(key, None)
            self._contested.pop(key, None)
            self._contested[key] = None
            while len(self._contested) > CONTESTED:
                del self._contested[next(iter(self._contested))]

    def get(self, kube: Kube, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The object as the watch last delivered it, else as the API server has it now."""
        key = (kind, namespace, name)
        with self._lock:
            found = self._objects.get(key)
            if found is not None:
                self.hits += 1
                return None if isinstance(found, _Absent) else dict(found)
            self.misses += 1
        got = kube.get(kind, namespace, name)
        if got is None and self._remember_absent:
            with self._lock:  # an event that came meanwhile is newer than this 404
                self._objects.setdefault(key, _ABSENT)
        return got

    def get_many(
        self, kube: Kube, keys: Iterable[Key], *, assume_absent: bool = False
    ) -> dict[Key, dict[str, Any] | None]:
        """:meth:`get` of every key; the misses are asked of the API server side by side
        (under load each GET waits its turn at the API server). With ``assume_absent`` (a
        new Microservice's first pass) a miss is read as absent without asking, unless its
        name is :meth:`contested`; nothing is remembered of it.

        >>> from pilotboat.testing import FakeKube
        >>> cache, kube = ChildCache(remember_absent=True), FakeKube()
        >>> keys = [("Deployment", "shop", "web"), ("Service", "shop", "web")]
        >>> cache.get_many(kube, keys) == dict.fromkeys(keys)
        True
        >>> cache.misses, cache.get_many(kube, keys) == dict.fromkeys(keys), cache.hits
        (2, True, 2)
        """
        wanted = list(dict.fromkeys(keys))
        with self._lock:
            missed = [key for key in wanted if key not in self._objects]
            assumed = ({key for key in missed if key not in self._contested}
                       if assume_absent else set())  # fmt: skip
        missed = [key for key in missed if key not in assumed]

        def ask(key: Key) -> dict[str, Any] | None:
            return self.get(kube, *key)

        asked = dict(zip(missed, _readers.map(ask, missed) if len(missed) > 1
                         else map(ask, missed), strict=True))  # fmt: skip
        return {key: asked[key] if key in asked else None if key in assumed else ask(key)
                for key in wanted}  # fmt: skip

    def generation(self, kind: str, namespace: str, name: str) -> int | None:
        """The ``metadata.generation`` of the object kept, or None when none is."""
        with self._lock:
            found = self._objects.get((kind, namespace, name))
        if not isinstance(found, Mapping):
            return None
        return int((found.get("metadata") or {}).get("generation") or 0)

    def __len__(self) -> int:
        """The objects kept (keys known absent are not counted)."""
        with self._lock:
            return sum(1 for found in self._objects.values() if not isinstance(found, _Absent))

    def clear(self) -> None:
        """Forget everything (a new API server: the in-memory one of the fast tests)."""
        with self._lock:
            self._objects.clear()
            self._echoes.clear()
            self._contested.clear()


def _key_of(kind: str, meta: Mapping[str, Any]) -> Key:
    """The cache key of an object of ``kind`` with metadata ``meta``."""
    return (kind, str(meta.get("namespace")), str(meta.get("name")))


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


_SHORT = 64
"""Strings up to this length are kept once per process (see :func:`_compact`)."""


def _compact(value: Any) -> Any:
    """A copy of ``value`` whose keys and short strings are each kept once per process.

    A watch event's JSON is read into new strings every time: each Deployment held its own
    ``"metadata"``, ``"apiVersion"``, ``"apps/v1"``, ``"True"`` and a hundred more. Kept
    once (:func:`sys.intern`), a cached Deployment takes less than half the memory, which at
    thousands of objects is most of the operator's (docs/benchmarks.md).

    >>> a, b = _compact({"kind": "Deployment"}), _compact({"kind": "Deployment"})
    >>> a == {"kind": "Deployment"}, next(iter(a)) is next(iter(b)), a["kind"] is b["kind"]
    (True, True, True)
    """
    if isinstance(value, Mapping):
        return {sys.intern(str(k)): _compact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_compact(v) for v in value]
    if isinstance(value, str) and len(value) <= _SHORT:
        return sys.intern(value)
    return value


def _older(body: Mapping[str, Any], than: Mapping[str, Any]) -> bool:
    try:
        return int(body["metadata"]["resourceVersion"]) < int(than["metadata"]["resourceVersion"])
    except (KeyError, TypeError, ValueError):
        return False  # resourceVersions are opaque in general; then the latest event wins


children = ChildCache(labelled="pilotboat", remember_absent=True)
"""Deployments and Services the operator labelled (``app.kubernetes.io/managed-by:
pilotboat``); an object without that label is never kept, whoever delivers it. A 404 is
remembered (see the module docstring)."""

owners = ChildCache(lean=False)
"""Microservices, whole: a pass reads its object from here, as the watch or the operator's
own last write left it (whichever is newer), and asks the API server only on a miss. Their
``managedFields`` stay, since they tell the operator's status from a forged one."""
