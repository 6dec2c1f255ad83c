"""Background analysis: from the moment a canary waiting in `pause: {untilPromoted: true}`
turns bad to the moment all traffic is back on stable.

Set up as bench/rollback.py (the operator as a process, Prometheus scraping echo processes
standing in for the pods, customers split by the weight the operator reports), but the
release is `setWeight: 50` then a pause until promoted, with `backgroundAnalysis: {}` and no
analysis step: only background analysis can roll it back. Once a background measurement in
the pause has passed, the canary process is restarted on the same port with
``ERROR_RATIO=0.5`` (t0); the run ends when status says canaryWeight 0 and the canary
Deployment is scaled to 0 (t1). Reported: median and max of t1 - t0 over the runs and the
interval. The real-node version of this is tests/cluster/test_background_analysis.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tests.fixtures.prometheus import LocalPrometheus
from tests.manifests import microservice
from tests.story import Story

from bench.rollback import (
    RUNS,
    _analysis,
    _status,
    operator_on_standins,
    summary,
    turn_bad_and_time,
)
from pilotboat.adapters.kube import Kube

__all__ = ["BENCHMARKS"]


def _service(name: str, version: str, prometheus: LocalPrometheus) -> dict[str, Any]:
    return microservice(
        name,
        version=version,
        replicas=2,
        rollout={
            "canary": {
                "steps": [{"setWeight": 50}, {"pause": {"untilPromoted": True}}],
                "backgroundAnalysis": {},
                "analysis": _analysis(prometheus),
            }
        },
    )


def _passed_in_the_pause(story: Story, name: str) -> bool:
    status = _status(story, name)
    records = (status.get("backgroundAnalysis") or {}).get("measurements") or []
    return status.get("phase") == "Paused" and any(
        r.get("step") == 1 and r.get("verdict") == "Successful" for r in records
    )


def background_analysis_rollback(kube: Kube, kubeconfig: Path) -> Iterator[dict[str, Any]]:
    """Seconds from a paused canary turning bad to all traffic on stable, over RUNS runs."""
    seconds: list[float] = []
    with operator_on_standins(kube, kubeconfig, "bench-background") as (story, prometheus):
        for run in range(RUNS):
            elapsed, _ = turn_bad_and_time(story, prometheus, f"billing-{run}", _service,
                                           _passed_in_the_pause)
            seconds.append(elapsed)
    yield {**summary("background_analysis_rollback_s", seconds), "step": "pause untilPromoted"}


BENCHMARKS: dict[str, Callable[[Kube, Path], Iterator[dict[str, Any]]]] = {
    "background_analysis_rollback": background_analysis_rollback,
}
