"""Canary analysis judged by a real Prometheus on real traffic to real pods, as in the demo.

Each Microservice runs the echo image (images/echo/echo.py) on the real node `pilotboat-real`;
its canary misbehaves because the new version's spec says so (``ERROR_RATIO``,
``LATENCY_SECONDS`` in its env), so the operator's own canary pods fail or slow down. A
Prometheus of this module's own finds the pods by pod discovery (tests/fixtures/prometheus.py,
``pod_prometheus``) and scrapes them; customers in this process call the Service's ClusterIP,
where kube-proxy splits the requests by the ratio of ready replicas the operator sets. Every
number the operator judges comes from those requests.

Without the real node these tests skip, saying why; a strict run (``make test``, CI) fails
instead (tests/fixtures/strict.py). Requests go from this process to the Service's address, so
the tests run on the machine that hosts the node.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from kubernetes.client import ApiClient

from tests.fixtures.customers import Customers, wait_routed
from tests.fixtures.prometheus import LocalPrometheus
from tests.fixtures.real_node import on_the_real_node, require_real_node
from tests.manifests import microservice
from tests.story import Story

pytestmark = pytest.mark.usefixtures("real_node", "operator")

NAME = "payments"


@pytest.fixture(scope="module")
def real_node(kube_api: ApiClient) -> Any:
    return require_real_node(kube_api)


def analysed_service(
    version: str, prometheus: LocalPrometheus, env: dict[str, str] | None = None, **analysis: Any
) -> dict[str, Any]:
    spec: dict[str, Any] = on_the_real_node(version)
    if env:  # the new version's own: the canary runs with it, the stable track keeps its own
        spec["env"] = [{"name": k, "value": v} for k, v in env.items()]
    return microservice(
        NAME,
        version=version,
        replicas=2,
        fake_nodes=False,
        **spec,
        rollout={
            "canary": {
                "steps": [{"setWeight": 50}, {"analysis": {"intervals": 2}}, {"setWeight": 100}],
                "analysis": {
                    "interval": "8s",
                    "minSampleSize": 20,
                    "consecutiveErrorLimit": 1,
                    "inconclusiveLimit": 1,
                    "prometheus": {"address": prometheus.url},
                    "signals": {
                        "errors": {"maxRatio": 0.05},
                        "latency": {"quantile": 0.99, "maxSeconds": 0.25},
                    },
                    **analysis,
                },
            }
        },
    )


@contextmanager
def release(
    story: Story,
    prometheus: LocalPrometheus,
    canary_env: dict[str, str],
    rate: float = 20,
    **analysis: Any,
) -> Iterator[Customers]:
    """v1 healthy, scraped and reachable through its Service; then, with `rate` customers a
    second calling the Service, v2 applied with `canary_env` (and `analysis` settings)."""
    story.given(analysed_service("v1", prometheus, **analysis))
    story.wait_for("Microservice", NAME, _phase("Healthy"), timeout=120, what="Healthy")
    prometheus.wait_pods_scraped(story.namespace, NAME, 2)
    service = story.get("Service", NAME)
    assert service is not None
    url = f"http://{service['spec']['clusterIP']}:8080/"
    wait_routed(url, story.namespace)
    with Customers(url, rate) as customers:
        story.apply(analysed_service("v2", prometheus, canary_env, **analysis))
        yield customers


def _phase(phase: str) -> Callable[[dict[str, Any] | None], bool]:
    return lambda ms: ((ms or {}).get("status") or {}).get("phase") == phase


def _promoted(ms: dict[str, Any] | None) -> bool:
    return _phase("Healthy")(ms) and (ms or {})["status"].get("stableVersion") == "v2"


def test_a_healthy_canary_is_promoted_on_real_signals(
    story: Story, pod_prometheus: LocalPrometheus
) -> None:
    with release(story, pod_prometheus, {}) as customers:
        ms = story.wait_for("Microservice", NAME, _promoted, timeout=180, what="promoted to v2")
    assert ms is not None and customers.served("v2", 200) > 40, customers.answers
    passed = [e["message"] for e in story.events(NAME) if e["reason"] == "AnalysisPassed"]
    assert passed and re.search(r"2 of \d+ checks passed", passed[0]), passed
    assert "error ratio" in passed[0]


def test_an_erroring_canary_is_rolled_back_with_the_numbers(
    story: Story, pod_prometheus: LocalPrometheus
) -> None:
    with release(story, pod_prometheus, {"ERROR_RATIO": "0.4"}) as customers:
        ms = story.wait_for(
            "Microservice", NAME, _phase("Degraded"), timeout=180, what="rolled back"
        )
    assert ms is not None
    assert customers.served("v2", 500) > 0 and customers.served("v1", 500) == 0, customers.answers
    status = ms["status"]
    assert status["stableVersion"] == "v1" and status["canaryWeight"] == 0
    assert "error ratio" in status["message"] and "> 5.0%" in status["message"], status["message"]
    assert status["failedChecks"] >= 1
    assert story.get("Deployment", f"{NAME}-canary")["spec"]["replicas"] == 0  # type: ignore[index]
    errors = [h for h in status["analysis"]["history"] if h["signal"] == "errors"]
    assert errors and errors[-1]["verdict"] == "Failed" and errors[-1]["value"] > 0.05
    rolled = [e["message"] for e in story.events(NAME) if e["reason"] == "RolledBack"]
    assert len(rolled) == 1 and "error ratio" in rolled[0]


def test_a_slow_canary_is_rolled_back_on_latency(
    story: Story, pod_prometheus: LocalPrometheus
) -> None:
    with release(story, pod_prometheus, {"LATENCY_SECONDS": "0.4"}) as customers:
        ms = story.wait_for(
            "Microservice", NAME, _phase("Degraded"), timeout=180, what="rolled back"
        )
    assert ms is not None
    assert customers.served("v2", 200) > 0, customers.answers
    assert "latency" in ms["status"]["message"], ms["status"]["message"]
    assert ms["status"]["stableVersion"] == "v1"


def test_too_little_traffic_is_inconclusive_and_pauses_never_promotes(
    story: Story, pod_prometheus: LocalPrometheus
) -> None:
    """One request a second, about half of it to the canary: far below 20 in 8s."""
    with release(story, pod_prometheus, {}, rate=1):
        ms = story.wait_for(
            "Microservice", NAME, _phase("Paused"), timeout=180, what="paused as inconclusive"
        )
    assert ms is not None
    assert "inconclusive" in ms["status"]["pauseReason"], ms["status"]["pauseReason"]
    assert ms["status"]["stableVersion"] == "v1"
    assert (
        story.get("Deployment", NAME)["metadata"]["labels"][  # type: ignore[index]
            "app.kubernetes.io/version"
        ]
        == "v1"
    )


def test_prometheus_down_pauses_and_the_release_resumes_when_it_is_back(
    story: Story, pod_prometheus: LocalPrometheus
) -> None:
    # Right after the outage an 8s window holds a gap where no scrape was taken, so the first
    # checks may count too few requests (inconclusive, never a pass); the limit leaves room.
    with release(story, pod_prometheus, {}, inconclusiveLimit=4):
        story.wait_for(
            "Microservice",
            NAME,
            lambda o: ((o or {}).get("status") or {}).get("currentStepIndex") == 1,
            timeout=120,
            what="analysing",
        )
        pod_prometheus.stop()
        try:
            ms = story.wait_for(
                "Microservice",
                NAME,
                _phase("Paused"),
                timeout=120,
                what="paused while Prometheus is down",
            )
            assert ms is not None
            assert "could not be taken" in ms["status"]["pauseReason"], ms["status"]["pauseReason"]
            assert ms["status"]["stableVersion"] == "v1"
        finally:
            pod_prometheus.start()
        ms = story.wait_for(
            "Microservice",
            NAME,
            _promoted,
            timeout=180,
            what="promoted once Prometheus answered again",
        )
    assert ms is not None
