"""The watch-fed cache of children and the work queue: newest resourceVersion wins, a
deletion takes the object out, a miss asks the API server, and what is kept of a child
leaves out its managedFields."""

from __future__ import annotations

import doctest
import threading
from typing import Any

import pytest

import pilotboat.handlers.cache
import pilotboat.handlers.children
import pilotboat.handlers.loop
import pilotboat.handlers.microservice
import pilotboat.handlers.prefetch
from pilotboat.handlers.cache import ChildCache
from pilotboat.testing import FakeKube

pytestmark = pytest.mark.core


def deployment(rv: str, replicas: int) -> dict[str, object]:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web-stable", "namespace": "shop", "resourceVersion": rv,
                         "managedFields": [{"manager": "pilotboat", "fieldsV1": {"f:spec": {}}}]},
            "spec": {"replicas": replicas}}  # fmt: skip


def test_the_newest_version_wins_and_managed_fields_are_not_kept() -> None:
    cache, kube = ChildCache(), FakeKube()
    cache.seen("Deployment", deployment("12", 3))
    cache.seen("Deployment", deployment("11", 1))  # a late event of an older version
    found = cache.get(kube, "Deployment", "shop", "web-stable")
    assert found is not None
    assert found["spec"] == {"replicas": 3}
    assert "managedFields" not in found["metadata"]
    assert found["metadata"]["resourceVersion"] == "12"
    assert (cache.hits, cache.misses) == (1, 0)


def test_a_deleted_child_is_asked_of_the_api_server() -> None:
    cache, kube = ChildCache(), FakeKube()
    cache.seen("Deployment", deployment("12", 3))
    cache.seen("Deployment", deployment("13", 3), deleted=True)
    assert cache.get(kube, "Deployment", "shop", "web-stable") is None
    assert (cache.hits, cache.misses, len(cache)) == (0, 1, 0)


def test_a_child_cache_keeps_only_what_the_operator_labelled() -> None:
    cache = ChildCache(labelled="pilotboat")
    foreign = deployment("12", 3)  # a person's web-stable: no managed-by label
    cache.seen("Deployment", foreign)
    assert len(cache) == 0  # served from the API server, where ChildNotOwned is found
    ours = deployment("13", 3)
    ours["metadata"]["labels"] = {"app.kubernetes.io/managed-by": "pilotboat"}  # type: ignore[index]
    cache.seen("Deployment", ours)
    assert len(cache) == 1
    cache.seen("Deployment", {"metadata": {"namespace": "shop", "name": "web-stable"}},
               deleted=True)  # a deletion needs no labels
    assert len(cache) == 0


def test_the_misses_of_one_pass_are_asked_side_by_side_and_the_hits_not_at_all() -> None:
    cache, kube = ChildCache(remember_absent=True), FakeKube()
    cache.seen("Deployment", deployment("12", 3))
    misses = [("Deployment", "shop", "web-canary"), ("Service", "shop", "web")]
    together = threading.Barrier(len(misses), timeout=5)  # broken unless both ask at once
    asked: list[tuple[str, str, str]] = []

    class SlowKube:
        def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
            asked.append((kind, namespace, name))
            together.wait()
            return kube.get(kind, namespace, name)

    found = cache.get_many(SlowKube(), [("Deployment", "shop", "web-stable"), *misses])  # type: ignore[arg-type]
    assert sorted(asked) == sorted(misses)
    assert found[("Deployment", "shop", "web-stable")]["spec"] == {"replicas": 3}  # type: ignore[index]
    assert [found[key] for key in misses] == [None, None]
    assert (cache.hits, cache.misses) == (1, 2)


@pytest.mark.parametrize(
    "module",
    [pilotboat.handlers.cache, pilotboat.handlers.children, pilotboat.handlers.loop,
     pilotboat.handlers.microservice, pilotboat.handlers.prefetch],
)
def test_the_examples_in_the_docstrings_hold(module: object) -> None:
    result = doctest.testmod(module)  # type: ignore[arg-type]
    assert result.attempted > 0 and result.failed == 0
