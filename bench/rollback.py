"""Time to rollback: from the moment a canary's real error ratio crosses the threshold to the
moment all traffic is back on stable.

Everything is real but the pods: the operator runs as a process, Prometheus (hack/
prometheus.sh) scrapes echo processes standing in for the stable and canary pods
(tests/fixtures/standins.py; the canary analysis tests run real pods instead), and customers
send them requests split by the weight the operator reports. Each run releases v2 at 50%
with an analysis every ``INTERVAL``; once the canary has passed a measurement, the canary
process is restarted on the same port with ``ERROR_RATIO=0.5`` (t0: from its first answer
on, half its requests fail, ten times the 5% threshold). The run ends when status says
canaryWeight 0 and the canary Deployment is scaled to 0 replicas (t1). Reported: median and
max of t1 - t0 over the runs, the interval, and the Prometheus queries one measurement
sends. The canary turns bad a drawn delay after the measurement it passed
(:func:`phase_delay`), so that runs sample every phase of the interval.
"""

from __future__ import annotations

import os
import random
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from tests.fixtures.prometheus import STATE, LocalPrometheus
from tests.fixtures.standins import Traffic, echo, free_port, standin_labels
from tests.manifests import microservice
from tests.story import Story

from bench import runs_record
from pilotboat.adapters.kube import Kube
from pilotboat.api import AnalysisTemplate
from pilotboat.api.common import parse_duration
from pilotboat.core.analysis import queries_per_interval
from pilotboat.testing import OperatorProcess

__all__ = ["BENCHMARKS"]

INTERVAL = "5s"
RUNS = int(os.environ.get("PILOTBOAT_BENCH_ROLLBACK_RUNS", "3"))
MAX_RATIO = 0.05
CANARY_ERROR_RATIO = 0.5


def _analysis(prometheus: LocalPrometheus) -> dict[str, Any]:
    return {
        "interval": INTERVAL,
        "minSampleSize": 10,
        "failureLimit": 0,
        "inconclusiveLimit": 3,
        "consecutiveErrorLimit": 3,
        "prometheus": {"address": prometheus.url},
        "signals": {
            "errors": {"maxRatio": MAX_RATIO},
            "latency": {"quantile": 0.99, "maxSeconds": 0.25},
        },
    }


def _service(name: str, version: str, prometheus: LocalPrometheus) -> dict[str, Any]:
    return microservice(
        name,
        version=version,
        replicas=2,
        rollout={
            "canary": {
                "steps": [{"setWeight": 50}, {"analysis": {"intervals": 1000}}],
                "analysis": _analysis(prometheus),
            }
        },
    )


def _status(story: Story, name: str) -> dict[str, Any]:
    return ((story.get("Microservice", name) or {}).get("status")) or {}


def _passed_a_measurement(story: Story, name: str) -> bool:
    status = _status(story, name)
    measurements = (status.get("analysis") or {}).get("measurements") or []
    return status.get("currentStepIndex") == 1 and any(
        m.get("verdict") == "Successful" for m in measurements
    )


def _rolled_back(story: Story, name: str) -> bool:
    status = _status(story, name)
    canary = story.get("Deployment", f"{name}-canary") or {}
    return (
        status.get("phase") == "Degraded"
        and int(status.get("canaryWeight") or 0) == 0
        and (canary.get("spec") or {}).get("replicas") == 0
    )


def wait_for(
    predicate: Callable[[], bool], timeout: float, what: str, every: float = 0.05
) -> None:
    """Poll `predicate` every `every` seconds; TimeoutError naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not {what} after {timeout}s")
        time.sleep(every)


def summary(metric: str, seconds: list[float]) -> dict[str, Any]:
    """The record of a rollback benchmark's runs: median, max and every run's seconds."""
    return runs_record(metric, seconds, analysis_interval=INTERVAL,
                       error_ratio_threshold=MAX_RATIO, canary_error_ratio=CANARY_ERROR_RATIO)


Service = Callable[[str, str, LocalPrometheus], dict[str, Any]]
Passed = Callable[[Story, str], bool]


def phase_delay(run: int) -> float:
    """Seconds to wait, after the healthy canary was judged, before it turns bad: drawn
    from [0, INTERVAL) by the run's number, the same for every tool, so that the failure
    falls anywhere in the analysis interval (a real one does not wait for a measurement)."""
    return random.Random(run).uniform(0, parse_duration(INTERVAL))


def turn_bad_and_time(
    story: Story, prometheus: LocalPrometheus, name: str, service: Service, passed: Passed,
    delay: float = 0.0,
) -> tuple[float, dict[str, Any]]:
    """One release of `service` (v1 -> v2) over echo stand-ins: `delay` seconds after
    `passed` says the healthy canary was judged, the canary turns bad (ERROR_RATIO 0.5 on
    its port); seconds until the operator has rolled back, and the status then."""
    v1, v2 = (standin_labels(story.namespace, service(name, v, prometheus)) for v in ("v1", "v2"))
    canary_port = free_port()
    target = f"{story.namespace}-{name}"
    with echo("v1") as stable, ExitStack() as healthy:
        canary = healthy.enter_context(echo("v2", port=canary_port))
        with (
            prometheus.scraped(f"{target}-v1", stable, v1),
            prometheus.scraped(f"{target}-v2", canary, v2),
        ):
            story.given(service(name, "v1", prometheus))
            wait_for(lambda: _status(story, name).get("phase") == "Healthy", 90, "Healthy")
            with Traffic(story, name, stable, canary, rate=30):
                story.apply(service(name, "v2", prometheus))
                wait_for(lambda: passed(story, name), 120, "judged healthy")
                time.sleep(delay)
                healthy.close()  # the healthy canary stops; a bad one takes its port
                with echo("v2", port=canary_port, ERROR_RATIO=str(CANARY_ERROR_RATIO)):
                    t0 = time.monotonic()
                    wait_for(lambda: _rolled_back(story, name), 120, "rolled back")
                    elapsed = time.monotonic() - t0
    return elapsed, _status(story, name)


def prometheus_url() -> str:
    """The local Prometheus (``hack/prometheus.sh``) the stand-ins are scraped by."""
    return f"http://127.0.0.1:{os.environ.get('PILOTBOAT_PROMETHEUS_PORT', '19090')}"


@contextmanager
def operator_on_standins(
    kube: Kube, kubeconfig: Path, prefix: str
) -> Iterator[tuple[Story, LocalPrometheus]]:
    """A namespace of its own (`prefix`-random), the operator as a process watching it and
    the local Prometheus (started if it was not up); all of it gone afterwards."""
    prometheus = LocalPrometheus(prometheus_url(), STATE / "prometheus" / "targets")
    started_prometheus = not prometheus.is_up()
    prometheus.start()
    ns = f"{prefix}-{secrets.token_hex(3)}"
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    try:
        with tempfile.TemporaryDirectory() as logs:
            operator = OperatorProcess(kubeconfig, Path(logs), ["--namespace", ns])
            operator.start()
            try:
                yield Story(kube, ns), prometheus
            finally:
                operator.stop()
    finally:
        kube.delete("Namespace", None, ns)
        if started_prometheus:
            prometheus.stop()


def time_to_rollback(kube: Kube, kubeconfig: Path) -> Iterator[dict[str, Any]]:
    """Seconds from the canary turning bad to all traffic on stable, over RUNS releases."""
    seconds: list[float] = []
    queries: list[int] = []
    verdicts: list[list[str]] = []
    with operator_on_standins(kube, kubeconfig, "bench-rollback") as (story, prometheus):
        for run in range(RUNS):
            elapsed, status = turn_bad_and_time(
                story, prometheus, f"payments-{run}", _service, _passed_a_measurement,
                phase_delay(run))
            seconds.append(elapsed)
            analysis = status.get("analysis") or {}
            queries.append(int(analysis.get("queries") or 0))
            verdicts.append([str(m.get("verdict")) for m in analysis.get("measurements") or []])
    planned = queries_per_interval(AnalysisTemplate.model_validate(_analysis(prometheus)))
    yield {
        **summary("time_to_rollback_seconds", seconds),
        "verdicts": verdicts,  # each run's measurements of the step, in order
        "prometheus_queries_per_interval": max(queries, default=planned),
        "prometheus_queries_per_interval_planned": planned,
    }


BENCHMARKS: dict[str, Callable[[Kube, Path], Iterator[dict[str, Any]]]] = {
    "time_to_rollback": time_to_rollback,
}
