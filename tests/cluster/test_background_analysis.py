"""Background analysis on the real node: a canary healthy at its setWeight, waiting in a
`pause: {untilPromoted: true}`, starts failing and is rolled back within about one interval.

The Microservice runs the echo image (images/echo/echo.py) on the real node `pilotboat-real`,
as in tests/cluster/test_canary_analysis.py, and the same Prometheus of the module's own
(tests/fixtures/prometheus.py, ``pod_prometheus``) scrapes its pods. The canary's pod
template starts echo through a wrapper (``command``) that adds one path, ``/degrade``: from
the answer to it on, that pod fails every request with 500 (echo's own ``ERROR_RATIO``,
raised to 1 in the running process), so the canary degrades without a change of spec, that
is in the middle of its pause. Customers in this process call the Service's ClusterIP; the
test calls ``/degrade`` there until the canary's pod answers it (the stable's answers 404).

Without the real node these tests skip, saying why; a strict run (``make test``, CI) fails
instead (tests/fixtures/strict.py).
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from kubernetes.client import ApiClient

from tests.fixtures.customers import Customers, wait_routed
from tests.fixtures.prometheus import LocalPrometheus
from tests.fixtures.real_node import on_the_real_node, require_real_node
from tests.manifests import microservice
from tests.story import Story

pytestmark = pytest.mark.usefixtures("real_node", "operator")

NAME = "billing"
INTERVAL = 8.0

# echo, with GET /degrade turning every later answer of this process into a 500.
DEGRADABLE = """
import sys
sys.path.insert(0, "/app")
import echo
serve = echo.Handler._serve
def _serve(self):
    if self.path == "/degrade":
        echo.Handler.error_ratio = 1.0
        self._send(200, b"degraded\\n", "text/plain")
        return
    serve(self)
echo.Handler.do_GET = _serve
echo.main()
"""


@pytest.fixture(scope="module")
def real_node(kube_api: ApiClient) -> Any:
    return require_real_node(kube_api)


def service(version: str, prometheus: LocalPrometheus, degradable: bool = False) -> dict[str, Any]:
    spec: dict[str, Any] = on_the_real_node(version)
    if degradable:
        command = ["python3", "-c", DEGRADABLE]
        spec["template"] = {"spec": {"containers": [{"name": NAME, "command": command}]}}
    return microservice(
        NAME,
        version=version,
        replicas=2,
        fake_nodes=False,
        **spec,
        rollout={
            "canary": {
                "steps": [{"setWeight": 50}, {"pause": {"untilPromoted": True}}],
                "backgroundAnalysis": {},
                "analysis": {
                    "interval": f"{INTERVAL:g}s",
                    "minSampleSize": 20,
                    "prometheus": {"address": prometheus.url},
                    "signals": {"errors": {"maxRatio": 0.05}},
                },
            }
        },
    )


def _status(ms: dict[str, Any] | None) -> dict[str, Any]:
    return (ms or {}).get("status") or {}


def _passed_in_the_pause(ms: dict[str, Any] | None) -> bool:
    status = _status(ms)
    records = (status.get("backgroundAnalysis") or {}).get("measurements") or []
    return status.get("phase") == "Paused" and any(
        r["step"] == 1 and r["verdict"] == "Successful" for r in records
    )


def _degrade(url: str, timeout: float = 30) -> float:
    """Call /degrade until the canary's pod answers it; returns when it did (monotonic)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with httpx.Client(timeout=2) as client:  # a new connection: kube-proxy picks again
            answer = client.get(url + "degrade")
        if answer.status_code == 200 and answer.text == "degraded\n":
            return time.monotonic()
        time.sleep(0.1)
    raise TimeoutError(f"the canary's pod did not answer {url}degrade within {timeout}s")


def test_a_canary_degrading_in_a_pause_until_promoted_is_rolled_back_within_an_interval(
    story: Story, pod_prometheus: LocalPrometheus
) -> None:
    story.given(service("v1", pod_prometheus))
    story.wait_for("Microservice", NAME, lambda o: _status(o).get("phase") == "Healthy",
                   timeout=120, what="Healthy")  # fmt: skip
    pod_prometheus.wait_pods_scraped(story.namespace, NAME, 2)
    found = story.get("Service", NAME)
    assert found is not None
    url = f"http://{found['spec']['clusterIP']}:8080/"
    wait_routed(url, story.namespace)
    with Customers(url, rate=20) as customers:
        story.apply(service("v2", pod_prometheus, degradable=True))
        healthy = story.wait_for("Microservice", NAME, _passed_in_the_pause, timeout=120,
                                 what="a passed background measurement in the pause")  # fmt: skip
        assert _status(healthy)["canaryWeight"] == 50
        assert customers.served("v2", 500) == 0, customers.answers
        degraded_at = _degrade(url)
        rolled_back = None
        while time.monotonic() < degraded_at + 6 * INTERVAL:
            ms = story.get("Microservice", NAME)
            if _status(ms).get("phase") == "Degraded":
                rolled_back = time.monotonic()
                break
            time.sleep(0.2)
        served_500 = customers.served("v2", 500)
    assert rolled_back is not None, story.describe("Microservice", NAME)
    seconds = rolled_back - degraded_at
    print(f"background_analysis_rollback_s={seconds:.2f} (interval {INTERVAL:g}s)")
    # One interval, plus the scrape that brings the first errors to Prometheus and a pass.
    assert seconds <= INTERVAL + 6, f"rolled back {seconds:.1f}s after the canary degraded"
    assert served_500 > 0, customers.answers
    status = _status(story.get("Microservice", NAME))
    assert status["stableVersion"] == "v1" and status["canaryWeight"] == 0
    rolled = next(c for c in status["conditions"] if c["type"] == "RolledBack")
    assert (rolled["status"], rolled["reason"]) == ("True", "BackgroundAnalysisFailed")
    assert "background analysis at step 2/2" in status["message"], status["message"]
    assert "error ratio" in status["message"], status["message"]
    records = status["backgroundAnalysis"]["measurements"]
    assert records[-1]["verdict"] == "Failed" and records[-1]["step"] == 1, records
    assert any(r["verdict"] == "Successful" and r["step"] == 1 for r in records), records
    canary = story.get("Deployment", f"{NAME}-canary")
    assert canary is not None and canary["spec"]["replicas"] == 0
    events = story.events(NAME)
    failed = [e["message"] for e in events if e["reason"] == "BackgroundAnalysisFailed"]
    assert len(failed) == 1 and "all traffic back to stable v1" in failed[0], failed
    told = [e["message"] for e in events if e["reason"] == "BackgroundAnalysis"]
    assert any("Successful" in m for m in told), told
