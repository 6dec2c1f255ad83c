"""Flag propagation: from a FeatureFlag's change to the pods seeing it.

A Microservice reading one flag runs a real pod on the real node (the echo image); the
operator runs as a process. Each run flips the flag's `state` (the kill switch) and measures
two moments from the patch (t0): the operator has rewritten the service's `<service>-flags`
ConfigMap (`configmap`), and the flagd file mounted in the pod, read with `kubectl exec`,
says the new state (`pod`). The second is mostly the kubelet's: it refreshes mounted
ConfigMaps on its sync (`syncFrequency`, 10 s on the local node; 1 min by default on most
clusters) plus its ConfigMap cache's TTL.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tests.manifests import microservice
from tests.story import Story

from bench import runs_record
from pilotboat import API_VERSION
from pilotboat.adapters.kube import Kube
from pilotboat.testing import OperatorProcess

__all__ = ["BENCHMARKS"]

REPO = Path(__file__).resolve().parents[1]
KUBECTL = REPO / ".state" / "bin" / "kubectl"
FLAGS_FILE = "/etc/pilotboat/flags/flags.json"
RUNS = 5
FLAG = "kill-switch"
SERVICE = "checkout"


def _flag(state: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "FeatureFlag",
        "metadata": {"name": FLAG},
        "spec": {"state": state, "variants": {"on": True, "off": False}, "defaultVariant": "on"},
    }


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic()
        time.sleep(0.1)
    raise TimeoutError(f"not {what} within {timeout:.0f}s")


def _state_in(text: str | None) -> str | None:
    if not text:
        return None
    try:
        flags = json.loads(text).get("flags") or {}
    except json.JSONDecodeError:
        return None
    return (flags.get(FLAG) or {}).get("state")


def time_to_pods(kube: Kube, kubeconfig: Path) -> Iterator[dict[str, Any]]:
    """Seconds from a flag's patch to its ConfigMap and to the pod's mounted file, RUNS times."""
    ns = f"bench-flags-{secrets.token_hex(3)}"
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    story = Story(kube, ns)
    to_configmap: list[float] = []
    to_pod: list[float] = []

    def configmap_state() -> str | None:
        cm = kube.get("ConfigMap", ns, f"{SERVICE}-flags") or {}
        return _state_in((cm.get("data") or {}).get("flags.json"))

    def pod_state(pod: str) -> str | None:
        out = subprocess.run(
            [str(KUBECTL), "--kubeconfig", str(kubeconfig), "-n", ns, "exec", pod, "--",
             "cat", FLAGS_FILE], capture_output=True, text=True, timeout=20,
        )
        return _state_in(out.stdout) if out.returncode == 0 else None

    try:
        with tempfile.TemporaryDirectory() as logs:
            operator = OperatorProcess(kubeconfig, Path(logs), ["--namespace", ns])
            operator.start()
            try:
                story.apply(_flag("ENABLED"))
                story.apply(microservice(SERVICE, replicas=1, fake_nodes=False, flags=[FLAG]))
                story.wait_for("Microservice", SERVICE,
                               lambda o: ((o or {}).get("status") or {}).get("phase") == "Healthy",
                               timeout=180)
                pods = [p for p in kube.list("Pod", ns, labels={"app.kubernetes.io/name": SERVICE})
                        if p["status"].get("phase") == "Running"]
                pod = pods[0]["metadata"]["name"]
                _wait(lambda: pod_state(pod) == "ENABLED", 180, "mounted")
                state = "ENABLED"
                for _ in range(RUNS):
                    state = "DISABLED" if state == "ENABLED" else "ENABLED"
                    t0 = time.monotonic()
                    story.patch("FeatureFlag", FLAG, {"spec": {"state": state}})
                    to_configmap.append(
                        _wait(lambda s=state: configmap_state() == s, 60, "in the ConfigMap") - t0)
                    to_pod.append(
                        _wait(lambda s=state: pod_state(pod) == s, 300, "in the pod") - t0)
            finally:
                operator.stop()
    finally:
        kube.delete("Namespace", None, ns)
    for metric, seconds in (("flag_to_configmap_seconds", to_configmap),
                            ("flag_to_pod_seconds", to_pod)):
        yield runs_record(metric, seconds, kubelet_sync_frequency="10s")


BENCHMARKS = {"flag_propagation": time_to_pods}
