"""The demo: start the operator, release a service by canary, print what happens.

Exits 0 only when every step behaved as described.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import kubernetes
import yaml

from pilotboat.adapters.kube import Kube
from pilotboat.testing import OperatorProcess

REPO = Path(__file__).resolve().parents[1]
STATE = REPO / ".state"
NAMESPACE = "pilotboat-demo"
T0 = time.monotonic()


def say(text: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {text}", flush=True)


def wait(kube: Kube, name: str, what: str, check: Any, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        ms = kube.get("Microservice", NAMESPACE, name) or {}
        status = ms.get("status") or {}
        line = (f"{status.get('phase')} step={status.get('currentStepIndex')} "
                f"weight={status.get('canaryWeight')}% — {status.get('message')}")
        if line != last:
            say(f"  {name}: {line}")
            last = line
        if check(status):
            return ms
        time.sleep(0.5)
    raise SystemExit(f"demo failed: {name} did not become {what} within {timeout}s")


def main() -> int:
    kubeconfig = STATE / "kubeconfig"
    kube = Kube(kubernetes.config.new_client_from_config(config_file=str(kubeconfig)))
    for crd in sorted((REPO / "crds").glob("*.yaml")):
        kube.apply(yaml.safe_load(crd.read_text()))
    kube.delete("Namespace", None, NAMESPACE)
    while kube.get("Namespace", None, NAMESPACE) is not None:
        time.sleep(0.5)
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    while kube.get("ServiceAccount", NAMESPACE, "default") is None:
        time.sleep(0.2)
    operator = OperatorProcess(kubeconfig, STATE / "logs" / "demo", ["--namespace", NAMESPACE])
    operator.start()
    say(f"operator running (log: {operator.log_path})")
    try:
        service = yaml.safe_load((REPO / "examples/01-canary/microservice.yaml").read_text())
        service["metadata"]["namespace"] = NAMESPACE
        kube.apply(service)
        say("applied catalog v1")
        wait(kube, "catalog", "Healthy", lambda s: s.get("phase") == "Healthy")
        service["spec"]["version"] = "v2"
        service["spec"]["image"] = "localhost/pilotboat/echo:2"
        kube.apply(service)
        say("released catalog v2 (canary: 25% → pause 5s → 50% → wait for a person)")
        wait(kube, "catalog", "Paused for promotion", lambda s: s.get("phase") == "Paused"
             and s.get("currentStepIndex") == 3)
        kube.merge_patch("Microservice", NAMESPACE, "catalog",
                         {"status": {"commands": {"promote": str(time.time())}}},
                         subresource="status")
        say("promoted by a person (kubectl pilotboat promote catalog)")
        wait(kube, "catalog", "Healthy at v2",
             lambda s: s.get("phase") == "Healthy" and s.get("stableVersion") == "v2")
        events = [e for e in kube.list("Event", NAMESPACE)
                  if e.get("involvedObject", {}).get("kind") == "Microservice"]
        say("events (kubectl describe msvc catalog):")
        for e in sorted(events, key=lambda e: e.get("lastTimestamp") or ""):
            say(f"  {e['type']:<7} {e['reason']:<16} {e['message'][:100]}")
    finally:
        operator.stop()
    say("demo passed: v2 released by canary and promoted")
    return 0


if __name__ == "__main__":
    sys.exit(main())
