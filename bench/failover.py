"""Leader failover: how long the operator's replicas are without a leader.

Two ``pilotboat run --leader-elect`` processes share a Lease in a namespace of their own.
Each run stops the leader and measures until the standby holds the Lease and has
reconciled a change made at the moment of the stop (a Microservice's replicas, observed in
its status):

* ``stop`` — SIGTERM, as a rolling update or a drain does: the leader hands the Lease over;
* ``kill`` — SIGKILL, as a crash or an OOM kill does: the standby waits out the Lease
  (15 s after the last renewal).

The stopped process is started again as the new standby, so the runs alternate leaders.
"""

from __future__ import annotations

import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.manifests import microservice
from tests.story import Story

from pilotboat.adapters.kube import Kube
from pilotboat.adapters.leadership import lease_holder
from pilotboat.testing import OperatorProcess

__all__ = ["BENCHMARKS"]

RUNS = 3


def failover(kube: Kube, kubeconfig: Path) -> Iterator[dict[str, Any]]:
    namespace = f"bench-failover-{uuid.uuid4().hex[:6]}"
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    args = ["--namespace", namespace, "--leader-elect", "--lease-namespace", namespace,
            "--no-webhooks"]
    with tempfile.TemporaryDirectory() as tmp:
        procs = {name: OperatorProcess(kubeconfig, Path(tmp) / name, args, {"POD_ID": name})
                 for name in ("a", "b")}
        try:
            procs["a"].start()
            procs["b"].start()
            story = Story(kube, namespace)
            story.given(microservice("web", replicas=1))
            story.wait_condition("Microservice", "web", "Ready", timeout=60)
            replicas = 1
            for how in ("stop", "kill"):
                gaps, converged = [], []
                for _ in range(RUNS):
                    leader = lease_holder(kube.api_client, namespace, "pilotboat") or ""
                    standby = next(n for n in procs if n != leader)
                    replicas = 3 - replicas  # 1 <-> 2
                    t0 = time.monotonic()
                    if how == "stop":
                        procs[leader].stop()
                    else:
                        procs[leader].kill()
                    story.apply(microservice("web", replicas=replicas))
                    while lease_holder(kube.api_client, namespace, "pilotboat") != standby:
                        time.sleep(0.05)
                    gaps.append(time.monotonic() - t0)
                    want = replicas
                    story.wait_for("Microservice", "web", lambda o, want=want: (
                        (o or {}).get("status") or {}).get("readyReplicas") == want
                        and (o or {})["status"].get("observedGeneration")
                        == (o or {})["metadata"]["generation"], timeout=90)
                    converged.append(time.monotonic() - t0)
                    procs[leader].start()
                yield {
                    "how": how,
                    "runs": RUNS,
                    "lease_taken_median_s": round(statistics.median(gaps), 2),
                    "lease_taken_max_s": round(max(gaps), 2),
                    "change_reconciled_median_s": round(statistics.median(converged), 2),
                    "change_reconciled_max_s": round(max(converged), 2),
                }
        finally:
            for proc in procs.values():
                proc.stop()
            kube.delete("Namespace", None, namespace)


BENCHMARKS = {"failover": failover}
