"""Requests dropped while a Microservice adopts a live Deployment (`spec.workloadRef`).

The same scene as tests/cluster/test_adoption.py, on the real node: a plain Deployment of
three echo pods behind its own Service, customers calling that Service's ClusterIP at
``RATE`` requests a second (a new connection each), and a Microservice adopting the
Deployment. Reported: the requests sent from just before the Microservice is applied until
the original is at 0 and the Microservice's three pods are ready (plus 5 s), the failed
ones among them (no answer, or not 200), the fewest ready pods behind the Service at any
poll, and the seconds the adoption took. The Microservice is then deleted, which hands the
original back (counted too). Without the real node it reports why it did not run.
"""

from __future__ import annotations

import secrets
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from tests.cluster.test_adoption import (
    NAME,
    ORIGINAL,
    RATE,
    SERVICE,
    ReadyWatch,
    _failed,
    _replicas,
    _total,
    adopting,
    original_deployment,
)
from tests.fixtures.customers import Customers, wait_routed
from tests.fixtures.real_node import require_real_node
from tests.story import Story

from bench.rollback import wait_for
from pilotboat.adapters.kube import Kube
from pilotboat.testing import OperatorProcess

__all__ = ["BENCHMARKS"]

POLL = 0.25  # seconds between looks at the Deployments (fewer reads beside the customers)


def adoption_dropped_requests(kube: Kube, kubeconfig: Path) -> Iterator[dict[str, Any]]:
    api = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
    try:
        require_real_node(api)
    except pytest.skip.Exception as skipped:
        yield {"metric": "adoption_dropped_requests", "skipped": str(skipped)}
        return
    ns = f"bench-adoption-{secrets.token_hex(3)}"
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    story = Story(kube, ns)
    try:
        with tempfile.TemporaryDirectory() as logs:
            operator = OperatorProcess(kubeconfig, Path(logs), ["--namespace", ns])
            operator.start()
            try:
                story.apply(original_deployment("v1"), SERVICE)
                wait_for(lambda: _replicas(story, ORIGINAL) == (3, 3), 120, "original ready",
                         every=POLL)
                service = story.get("Service", ORIGINAL)
                assert service is not None
                url = f"http://{service['spec']['clusterIP']}/"
                wait_routed(url, ns)
                watch = ReadyWatch(api, ns)
                with watch.watching(), Customers(url, RATE) as customers:
                    time.sleep(2)
                    started = time.monotonic()
                    story.apply(adopting())
                    wait_for(lambda: _replicas(story, ORIGINAL)[0] == 0
                             and _replicas(story, NAME) == (3, 3), 180, "adopted", every=POLL)
                    took = time.monotonic() - started
                    time.sleep(5)
                with Customers(url, RATE) as leaving:
                    kube.delete("Microservice", ns, NAME)
                    wait_for(lambda: story.get("Deployment", NAME) is None, 180, "handed back",
                             every=POLL)
                    time.sleep(5)
            finally:
                dep = story.get("Deployment", NAME)
                if dep is not None and dep["metadata"].get("finalizers"):
                    kube.merge_patch("Deployment", ns, NAME, {"metadata": {"finalizers": []}})
                operator.stop()
    finally:
        kube.delete("Namespace", None, ns)
    yield {
        "metric": "adoption_dropped_requests",
        "adoption_dropped_requests": _failed(customers),
        "requests": _total(customers),
        "rate_per_second": RATE,
        "adoption_seconds": round(took, 1),
        "fewest_ready_pods": watch.fewest,
        "replicas": 3,
        "hand_back_dropped_requests": _failed(leaving),
        "hand_back_requests": _total(leaving),
    }


BENCHMARKS: dict[str, Callable[[Kube, Path], Iterator[dict[str, Any]]]] = {
    "adoption": adoption_dropped_requests,
}
