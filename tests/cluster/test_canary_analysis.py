"""Canary analysis judged by a real Prometheus on real HTTP traffic.

The pods of these Microservices run on KWOK's fake nodes, so real processes of the echo
service (images/echo/echo.py, the same program the images run) stand in for them: one for
the stable version and one for the canary, on loopback ports, scraped by Prometheus with the
labels pod discovery would give them. A driver sends real requests and splits them between
the two as the Service would, by the canary weight the operator reports in status. Every
number the operator judges comes from those requests.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.fixtures.prometheus import LocalPrometheus
from tests.fixtures.standins import Traffic, echo
from tests.manifests import microservice
from tests.story import Story

pytestmark = pytest.mark.usefixtures("operator")


def analysed_service(name: str, version: str, prometheus: LocalPrometheus) -> dict[str, Any]:
    return microservice(
        name,
        version=version,
        replicas=2,
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
                },
            }
        },
    )


@contextmanager
def release(
    story: Story, prometheus: LocalPrometheus, name: str, canary_env: dict[str, str],
    traffic: bool = True,
) -> Iterator[Traffic]:
    labels = {"namespace": story.namespace, "service": name}
    with echo("v1") as stable, echo("v2", **canary_env) as canary:
        with (
            prometheus.scraped(f"{story.namespace}-{name}-v1", stable, {**labels, "version": "v1"}),
            prometheus.scraped(f"{story.namespace}-{name}-v2", canary, {**labels, "version": "v2"}),
        ):
            story.given(analysed_service(name, "v1", prometheus))
            story.wait_for("Microservice", name, _phase("Healthy"), timeout=90, what="Healthy")
            driver = Traffic(story, name, stable, canary, rate=30 if traffic else 0.001)
            with driver:
                story.apply(analysed_service(name, "v2", prometheus))
                yield driver


def _phase(phase: str):  # type: ignore[no-untyped-def]
    return lambda ms: ((ms or {}).get("status") or {}).get("phase") == phase


def test_a_healthy_canary_is_promoted_on_real_signals(
    story: Story, prometheus: LocalPrometheus
) -> None:
    with release(story, prometheus, "payments", {}) as traffic:
        ms = story.wait_for(
            "Microservice", "payments",
            lambda o: _phase("Healthy")(o) and o["status"]["stableVersion"] == "v2",  # type: ignore[index]
            timeout=150, what="promoted to v2",
        )
    assert ms is not None and traffic.sent["canary"] > 40
    passed = [e["message"] for e in story.events("payments") if e["reason"] == "AnalysisPassed"]
    assert passed and re.search(r"2 of \d+ checks passed", passed[0]), passed
    assert "error ratio" in passed[0]


def test_an_erroring_canary_is_rolled_back_with_the_numbers(
    story: Story, prometheus: LocalPrometheus
) -> None:
    with release(story, prometheus, "payments", {"ERROR_RATIO": "0.4"}):
        ms = story.wait_for("Microservice", "payments", _phase("Degraded"), timeout=150,
                            what="rolled back")
    assert ms is not None
    status = ms["status"]
    assert status["stableVersion"] == "v1" and status["canaryWeight"] == 0
    assert "error ratio" in status["message"] and "> 5.0%" in status["message"], status["message"]
    assert status["failedChecks"] >= 1
    assert story.get("Deployment", "payments-canary")["spec"]["replicas"] == 0  # type: ignore[index]
    errors = [h for h in status["analysis"]["history"] if h["signal"] == "errors"]
    assert errors and errors[-1]["verdict"] == "Failed" and errors[-1]["value"] > 0.05
    rolled = [e["message"] for e in story.events("payments") if e["reason"] == "RolledBack"]
    assert len(rolled) == 1 and "error ratio" in rolled[0]


def test_a_slow_canary_is_rolled_back_on_latency(
    story: Story, prometheus: LocalPrometheus
) -> None:
    with release(story, prometheus, "payments", {"LATENCY_SECONDS": "0.4"}):
        ms = story.wait_for("Microservice", "payments", _phase("Degraded"), timeout=150,
                            what="rolled back")
    assert ms is not None
    assert "latency" in ms["status"]["message"], ms["status"]["message"]


def test_no_traffic_is_inconclusive_and_pauses_never_promotes(
    story: Story, prometheus: LocalPrometheus
) -> None:
    with release(story, prometheus, "payments", {}, traffic=False):
        ms = story.wait_for("Microservice", "payments", _phase("Paused"), timeout=150,
                            what="paused as inconclusive")
    assert ms is not None
    assert "inconclusive" in ms["status"]["pauseReason"], ms["status"]["pauseReason"]
    assert ms["status"]["stableVersion"] == "v1"
    assert story.get("Deployment", "payments")["metadata"]["labels"][  # type: ignore[index]
        "app.kubernetes.io/version"
    ] == "v1"


def test_prometheus_down_pauses_and_the_release_resumes_when_it_is_back(
    story: Story, prometheus: LocalPrometheus
) -> None:
    with release(story, prometheus, "payments", {}):
        story.wait_for(
            "Microservice", "payments",
            lambda o: ((o or {}).get("status") or {}).get("currentStepIndex") == 1,
            timeout=90, what="analysing",
        )
        prometheus.stop()
        try:
            ms = story.wait_for("Microservice", "payments", _phase("Paused"), timeout=120,
                                what="paused while Prometheus is down")
            assert ms is not None
            assert "could not be taken" in ms["status"]["pauseReason"], ms["status"]["pauseReason"]
            assert ms["status"]["stableVersion"] == "v1"
        finally:
            prometheus.start()
        ms = story.wait_for(
            "Microservice", "payments",
            lambda o: _phase("Healthy")(o) and o["status"]["stableVersion"] == "v2",  # type: ignore[index]
            timeout=180, what="promoted once Prometheus answered again",
        )
    assert ms is not None
