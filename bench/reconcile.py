"""Reconcile latency and operator memory, with the operator as a real process."""

from __future__ import annotations

import secrets
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pilotboat import API_VERSION
from pilotboat.adapters.kube import Kube
from pilotboat.testing import OperatorProcess

__all__ = ["BENCHMARKS"]

_PLACEMENT = {
    "nodeSelector": {"type": "kwok"},
    "tolerations": [
        {"key": "kwok.x-k8s.io/node", "operator": "Equal", "value": "fake", "effect": "NoSchedule"}
    ],
}


def _microservice(name: str, replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "Microservice",
        "metadata": {"name": name},
        "spec": {
            "image": "localhost/pilotboat/echo:v1",
            "version": "v1",
            "replicas": replicas,
            **_PLACEMENT,
        },
    }


def _namespace(kube: Kube, prefix: str) -> str:
    name = f"{prefix}-{secrets.token_hex(3)}"
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    return name


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def _wait(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def reconcile_latency(kube: Kube, kubeconfig: Path, count: int = 100) -> Iterator[dict[str, Any]]:
    """Create → its Deployment exists, per object, created one after another."""
    ns = _namespace(kube, "bench-latency")
    with tempfile.TemporaryDirectory() as logs:
        op = OperatorProcess(kubeconfig, Path(logs), ["--namespace", ns])
        op.start()
        latencies: list[float] = []
        try:
            for i in range(count):
                obj = _microservice(f"svc-{i:03d}", replicas=1)
                obj["metadata"]["namespace"] = ns
                t0 = time.monotonic()
                kube.create(obj)
                if _wait(lambda i=i: kube.get("Deployment", ns, f"svc-{i:03d}") is not None, 60):
                    latencies.append(time.monotonic() - t0)
        finally:
            op.stop()
            kube.delete("Namespace", None, ns)
    yield {
        "metric": "reconcile_latency_seconds",
        "objects": count,
        "measured": len(latencies),
        "p50": round(_percentile(latencies, 0.50), 4),
        "p99": round(_percentile(latencies, 0.99), 4),
        "max": round(max(latencies), 4),
        "mean": round(statistics.fmean(latencies), 4),
    }


def operator_memory(kube: Kube, kubeconfig: Path, count: int = 500) -> Iterator[dict[str, Any]]:
    """Resident memory of the operator once it has reconciled `count` Microservices.

    Replicas are 0 so the measurement is about the operator, not 500 fake pods on 2 cores.
    """
    ns = _namespace(kube, "bench-memory")
    with tempfile.TemporaryDirectory() as logs:
        op = OperatorProcess(kubeconfig, Path(logs), ["--namespace", ns])
        op.start()
        idle = op.rss_bytes()
        try:
            t0 = time.monotonic()
            names = [f"svc-{i:03d}" for i in range(count)]

            def create(batch: list[str]) -> None:
                for name in batch:
                    obj = _microservice(name, replicas=0)
                    obj["metadata"]["namespace"] = ns
                    kube.create(obj)

            threads = [threading.Thread(target=create, args=(names[i::4],)) for i in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            done = _wait(lambda: len(kube.list("Deployment", ns)) >= count, 600)
            elapsed = time.monotonic() - t0
            time.sleep(5)
            rss = op.rss_bytes()
        finally:
            op.stop()
            kube.delete("Namespace", None, ns)
    yield {
        "metric": "operator_rss_bytes",
        "objects": count,
        "all_reconciled": done,
        "seconds_to_reconcile_all": round(elapsed, 2),
        "rss_idle_mib": round(idle / 2**20, 1),
        "rss_mib": round(rss / 2**20, 1),
    }


BENCHMARKS: dict[str, Callable[[Kube, Path], Iterator[dict[str, Any]]]] = {
    "reconcile_latency": reconcile_latency,
    "operator_memory": operator_memory,
}
