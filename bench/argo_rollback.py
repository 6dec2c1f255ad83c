"""Time to rollback, Argo Rollouts beside Pilotboat: the same stand-ins, the same Prometheus,
the same PromQL and the same analysis interval.

Pilotboat's runs are :mod:`bench.rollback`'s. Argo Rollouts' runs do the same with a
Rollout (2 replicas, ``setWeight: 50`` then an analysis step) whose AnalysisTemplate asks
the local Prometheus, every ``INTERVAL``, for the canary's error ratio with the query
Pilotboat's default errors signal renders for it, and fails at more than 5 %
(``failureLimit: 0``; no data yet is not a failure). ``rollouts-controller`` runs as a
process of this machine watching one namespace (built by ``hack/argo-rollouts/build.sh``).
The pods are on KWOK nodes; echo processes stand in for them, scraped by Prometheus with the
labels the query selects, and customers send them requests split by the weight of the
Rollout's current step. Once the analysis has passed a measurement, and after the same
drawn delay for both tools (:func:`bench.rollback.phase_delay`), the canary turns bad
(``ERROR_RATIO=0.5``, t0); the run ends when the Rollout is aborted and its canary
ReplicaSet is scaled to 0 (t1). Reported for each tool: median and max of t1 - t0.
"""

from __future__ import annotations

import secrets
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import kubernetes
from tests.fixtures.prometheus import STATE, LocalPrometheus
from tests.fixtures.standins import Traffic, echo, free_port
from tests.manifests import FAKE_NODE_PLACEMENT
from tests.story import Story

from bench import rollback
from bench.argo_rollouts import ArgoRolloutsProcess, _argo_dir, _argo_version, _install_argo_crds
from bench.rollback import wait_for
from pilotboat.adapters.kube import Kube
from pilotboat.core.analysis import DEFAULT_QUERIES

__all__ = ["BENCHMARKS"]

GROUP, VERSION = "argoproj.io", "v1alpha1"
INTERVAL = rollback.INTERVAL
RUNS = rollback.RUNS
MAX_RATIO = rollback.MAX_RATIO
REVISION = {"v1": "argo-v1", "v2": "argo-v2"}  # the stand-ins' revision label, per version


def _labels(namespace: str, name: str, version: str) -> dict[str, str]:
    return {"namespace": namespace, "service": name, "version": version,
            "revision": REVISION[version]}  # fmt: skip


def _errors_query(namespace: str, name: str) -> str:
    """Pilotboat's default errors query, rendered for the canary stand-in."""
    query = DEFAULT_QUERIES["errors"]
    for key, value in (("namespace", namespace), ("service", name),
                       ("revision", REVISION["v2"]), ("interval", INTERVAL)):  # fmt: skip
        query = query.replace("{{ " + key + " }}", value)
    return query


def _template(namespace: str, name: str, address: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AnalysisTemplate",
        "metadata": {"name": f"{name}-errors"},
        "spec": {"metrics": [{
            "name": "errors",
            "interval": INTERVAL,
            "count": 1000,  # as Pilotboat's analysis step ({"intervals": 1000})
            "failureLimit": 0,
            "consecutiveErrorLimit": 3,
            "successCondition": f"isNaN(result[0]) || result[0] <= {MAX_RATIO}",
            "provider": {"prometheus": {"address": address,
                                        "query": _errors_query(namespace, name)}},
        }]},
    }  # fmt: skip


def _rollout(name: str, version: str) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": name}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Rollout",
        "metadata": {"name": name},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": {**labels, "version": version}},
                "spec": {
                    "containers": [{"name": "app", "image": f"localhost/pilotboat/echo:{version}",
                                    "env": [{"name": "VERSION", "value": version}]}],
                    **FAKE_NODE_PLACEMENT,
                },
            },
            "strategy": {"canary": {"steps": [
                {"setWeight": 50},
                {"analysis": {"templates": [{"templateName": f"{name}-errors"}]}},
            ]}},
        },
    }  # fmt: skip


class _Argo:
    """The Rollouts, AnalysisRuns and ReplicaSets of one namespace."""

    def __init__(self, kube: Kube, namespace: str):
        self.custom = kubernetes.client.CustomObjectsApi(kube.api_client)
        self.kube, self.namespace = kube, namespace

    def apply(self, body: dict[str, Any], plural: str) -> None:
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, plural, body["metadata"]["name"], body,
            field_manager="pilotboat-bench", force=True,
            _content_type="application/apply-patch+yaml")  # fmt: skip

    def get(self, plural: str, name: str) -> dict[str, Any]:
        try:
            found: dict[str, Any] = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, plural, name)
        except kubernetes.client.exceptions.ApiException as exc:
            if exc.status == 404:
                return {}
            raise
        return found

    def runs(self, name: str) -> list[dict[str, Any]]:
        listing = self.custom.list_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "analysisruns")
        return [r for r in listing.get("items", [])
                if any(o.get("name") == name for o in r["metadata"].get("ownerReferences", []))]

    def weight(self, name: str) -> int:
        """The weight of the Rollout's current step (0 once aborted or fully promoted)."""
        rollout = self.get("rollouts", name)
        status = rollout.get("status") or {}
        if status.get("abort") or status.get("stableRS") == status.get("currentPodHash"):
            return 0
        steps = rollout["spec"]["strategy"]["canary"]["steps"]
        index = min(int(status.get("currentStepIndex") or 0), len(steps) - 1)
        weights = [s["setWeight"] for s in steps[: index + 1] if "setWeight" in s]
        return int(weights[-1]) if weights else 0

    def passed_a_measurement(self, name: str) -> bool:
        for run in self.runs(name):
            for metric in (run.get("status") or {}).get("metricResults") or []:
                if int(metric.get("successful") or 0) >= 1:
                    return True
        return False

    def rolled_back(self, name: str) -> bool:
        status = self.get("rollouts", name).get("status") or {}
        canary_hash = status.get("currentPodHash")
        if not status.get("abort") or not canary_hash:
            return False
        for rs in self.kube.list("ReplicaSet", self.namespace):
            labels = rs["metadata"].get("labels") or {}
            if labels.get("rollouts-pod-template-hash") == canary_hash:
                return int((rs.get("spec") or {}).get("replicas") or 0) == 0
        return False


class _ArgoTraffic(Traffic):
    """Customers split by the Rollout's step weight instead of a Microservice's status."""

    def __init__(self, argo: _Argo, story: Story, name: str, stable: str, canary: str):
        super().__init__(story, name, stable, canary, rate=30)
        self.argo = argo

    def _watch_weight(self) -> None:
        while not self._stop.wait(0.5):
            self.weight = self.argo.weight(self.name)


def _argo_run(
    argo: _Argo, story: Story, prometheus: LocalPrometheus, name: str, delay: float
) -> float:
    ns = story.namespace
    canary_port = free_port()
    with echo("v1") as stable, ExitStack() as healthy:
        canary = healthy.enter_context(echo("v2", port=canary_port))
        with (
            prometheus.scraped(f"{ns}-{name}-v1", stable, _labels(ns, name, "v1")),
            prometheus.scraped(f"{ns}-{name}-v2", canary, _labels(ns, name, "v2")),
        ):
            argo.apply(_template(ns, name, prometheus.url), "analysistemplates")
            argo.apply(_rollout(name, "v1"), "rollouts")
            wait_for(lambda: (argo.get("rollouts", name).get("status") or {}).get("phase")
                  == "Healthy", 90, "Healthy")
            with _ArgoTraffic(argo, story, name, stable, canary):
                argo.apply(_rollout(name, "v2"), "rollouts")
                wait_for(lambda: argo.passed_a_measurement(name), 120, "judged healthy")
                time.sleep(delay)
                healthy.close()  # the healthy canary stops; a bad one takes its port
                with echo("v2", port=canary_port, ERROR_RATIO=str(rollback.CANARY_ERROR_RATIO)):
                    t0 = time.monotonic()
                    wait_for(lambda: argo.rolled_back(name), 120, "rolled back")
                    return time.monotonic() - t0
    raise AssertionError("unreachable")


def rollback_side_by_side(kube: Kube, kubeconfig: Path) -> Iterator[dict[str, Any]]:
    """Seconds from the canary turning bad to all traffic on stable, RUNS releases each."""
    binary = Path(_argo_dir()) / "rollouts-controller"
    _install_argo_crds(kube)
    prometheus = LocalPrometheus(rollback.prometheus_url(), STATE / "prometheus" / "targets")
    started_prometheus = not prometheus.is_up()
    prometheus.start()
    ns = f"bench-argo-rollback-{secrets.token_hex(3)}"
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    argo_seconds: list[float] = []
    try:
        with tempfile.TemporaryDirectory() as logs:
            controller = ArgoRolloutsProcess(binary, kubeconfig, Path(logs), ns)
            controller.start()
            try:
                argo, story = _Argo(kube, ns), Story(kube, ns)
                for run in range(RUNS):
                    argo_seconds.append(_argo_run(argo, story, prometheus, f"payments-{run}",
                                                  rollback.phase_delay(run)))
            finally:
                controller.stop()
    finally:
        kube.delete("Namespace", None, ns)
        if started_prometheus:
            prometheus.stop()
    yield {"tool": "argo-rollouts", "tool_version": _argo_version(),
           **rollback.summary("time_to_rollback_seconds", argo_seconds)}
    for record in rollback.time_to_rollback(kube, kubeconfig):
        yield {"tool": "pilotboat", "tool_version": "work tree", **record}


BENCHMARKS: dict[str, Callable[[Kube, Path], Iterator[dict[str, Any]]]] = {
    "rollback_side_by_side": rollback_side_by_side,
}
