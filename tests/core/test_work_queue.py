"""The reconcile work queue and the watch-fed child cache, without a cluster."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from pilotboat.handlers.cache import ChildCache
from pilotboat.handlers.loop import WorkQueue

pytestmark = pytest.mark.core


def test_a_burst_of_events_for_one_key_is_one_pass_and_one_more() -> None:
    queue = WorkQueue()
    for _ in range(5):
        queue.add(("shop", "orders"))
    assert len(queue) == 1
    key = queue.get()
    for _ in range(5):  # while its pass runs: it comes back once, not five times
        queue.add(key)
    assert len(queue) == 0
    queue.done(key)
    assert len(queue) == 1 and queue.get() == key
    queue.done(key)
    assert len(queue) == 0


def test_no_key_is_worked_on_by_two_workers_at_once() -> None:
    queue = WorkQueue()
    running: set[tuple[str, str]] = set()
    overlaps: list[tuple[str, str]] = []
    passes = {("ns", str(i)): 0 for i in range(5)}
    lock = threading.Lock()

    def worker() -> None:
        while True:
            key = queue.get()
            if key == ("stop", "stop"):
                queue.done(key)
                return
            with lock:
                if key in running:
                    overlaps.append(key)
                running.add(key)
            time.sleep(0.001)
            with lock:
                running.discard(key)
                passes[key] += 1
            queue.done(key)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for _ in range(200):
        for key in passes:
            queue.add(key)
    deadline = time.monotonic() + 10
    while len(queue) and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)
    for _ in threads:
        queue.add(("stop", "stop"))
        time.sleep(0.01)
    for thread in threads:
        thread.join(timeout=5)
    assert overlaps == []
    assert all(1 <= n < 200 for n in passes.values()), passes  # collapsed, never lost


def body(name: str, version: str, ready: int = 0) -> dict[str, Any]:
    return {"metadata": {"namespace": "shop", "name": name, "resourceVersion": version},
            "status": {"readyReplicas": ready}}


class Counting:
    def __init__(self) -> None:
        self.gets: list[tuple[str, str, str]] = []

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        self.gets.append((kind, namespace, name))
        return None


def test_the_cache_answers_what_the_watch_delivered_and_asks_on_a_miss() -> None:
    cache, kube = ChildCache(), Counting()
    cache.seen("Deployment", body("orders", "10", ready=1))
    cache.seen("Deployment", body("orders", "12", ready=2))
    cache.seen("Deployment", body("orders", "11", ready=9))  # a late, older event
    found = cache.get(kube, "Deployment", "shop", "orders")  # type: ignore[arg-type]
    assert found is not None and found["status"]["readyReplicas"] == 2
    assert kube.gets == []
    assert cache.get(kube, "Deployment", "shop", "orders-canary") is None  # type: ignore[arg-type]
    assert kube.gets == [("Deployment", "shop", "orders-canary")]  # a miss asks
    cache.seen("Deployment", body("orders", "13"), deleted=True)
    assert cache.get(kube, "Deployment", "shop", "orders") is None  # type: ignore[arg-type]
    assert (cache.hits, cache.misses) == (1, 2)


def test_an_object_deleted_during_its_pass_is_forgotten_after_that_pass() -> None:
    """The pass in flight read the object before it went and reports it when it ends; the
    pass queued by the deletion runs after it, finds nothing, and forgets the object."""
    from pilotboat.handlers import context
    from pilotboat.handlers.loop import ReconcileLoop

    context.configure_runtime(context.Runtime(kube=None))  # type: ignore[arg-type]
    store: dict[tuple[str, str], dict[str, Any]] = {
        ("shop", "cart"): {"kind": "Microservice", "metadata": {"namespace": "shop",
                                                                 "name": "cart"}}}
    known: dict[tuple[str, str], str] = {}
    reading, release, reported = threading.Event(), threading.Event(), threading.Event()

    def reconcile(kube: Any, body: Any, rc: Any) -> None:
        reading.set()
        release.wait(5)
        known[("shop", "cart")] = "Degraded"  # what the pass saw, reported as it ends
        reported.set()

    def forget(namespace: str, name: str) -> None:
        known.pop((namespace, name), None)

    loop = ReconcileLoop("Microservice", reconcile, retry_after=1.0, workers=2,
                         read=lambda kube, ns, name: store.get((ns, name)), gone=forget)
    loop.enqueue("shop", "cart")
    assert reading.wait(5)
    del store[("shop", "cart")]  # the DELETED event: gone from the cache, queued once more
    forget("shop", "cart")
    loop.enqueue("shop", "cart")
    release.set()
    assert reported.wait(5)
    deadline = time.monotonic() + 5
    while known and time.monotonic() < deadline:
        time.sleep(0.01)
    assert known == {}


def test_a_pass_that_must_look_again_runs_again_at_once_without_a_retry_delay() -> None:
    from pilotboat.handlers import context
    from pilotboat.handlers.loop import LookAgain, ReconcileLoop

    context.configure_runtime(context.Runtime(kube=None))  # type: ignore[arg-type]
    body = {"kind": "Microservice", "metadata": {"namespace": "shop", "name": "cart"}}
    passes: list[float] = []
    second = threading.Event()

    def reconcile(kube: Any, body: Any, rc: Any) -> None:
        passes.append(time.monotonic())
        if len(passes) == 1:
            raise LookAgain("orders-canary appeared since the last pass")
        second.set()

    loop = ReconcileLoop("Microservice", reconcile, retry_after=60.0, workers=1,
                         read=lambda kube, ns, name: body)
    loop.enqueue("shop", "cart")
    assert second.wait(10), "the pass was not run again (a retry waits 60 s)"
    assert len(passes) == 2


def test_urgent_keys_go_first_and_the_others_still_get_a_fair_share() -> None:
    q = WorkQueue()
    for i in range(8):
        q.add(("shop", f"status-{i}"))
    for i in range(8):
        q.add(("shop", f"new-{i}"), urgent=True)
    q.add(("shop", "status-7"), urgent=True)  # its spec changed while it waited: moves up
    taken = [q.get()[1] for _ in range(len(q))]
    assert taken[:3] == ["new-0", "new-1", "new-2"]
    assert taken.index("status-7") < taken.index("status-2"), "moved to the urgent lane"
    assert taken[3] == "status-0", "every fourth key comes from the others"
    assert sorted(taken) == sorted([f"status-{i}" for i in range(8)] +
                                   [f"new-{i}" for i in range(8)]), "each key exactly once"
    q.add(("shop", "new-0"), urgent=True)  # worked on: marked, and urgent when it comes back
    q.add(("shop", "status-0"))
    q.done(("shop", "new-0"))
    assert q.get() == ("shop", "new-0")
