"""A change that keeps ``version`` is still a canary, measured on its own pods.

The operator labels each track's pods with the revision of their pod template
(``pilotboat.dev/revision``, relabelled by Prometheus to ``revision``), and the default
analysis queries select on it. Here v1 runs healthy, then the same v1 is applied with only
its env changed (echo answers 40% of its requests with 500): a canary of the same version,
which a query selecting on ``version`` would judge against itself, both tracks' requests
mixed (about 20% errors on either side). It must be rolled back on its own error ratio, with
the stable's measured apart (no errors).

Real pods on the real node, a real Prometheus finding them by pod discovery, customers
calling the Service's ClusterIP (tests/cluster/test_canary_analysis.py, whose service and
steps this reuses). Without the real node it skips, saying why; a strict run fails instead.
"""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes.client import ApiClient

from pilotboat.core.workload import pod_revision
from tests.cluster.test_canary_analysis import NAME, _phase, analysed_service
from tests.fixtures.customers import Customers, wait_routed
from tests.fixtures.prometheus import LocalPrometheus
from tests.fixtures.real_node import require_real_node
from tests.story import Story

pytestmark = pytest.mark.usefixtures("real_node", "operator")


@pytest.fixture(scope="module")
def real_node(kube_api: ApiClient) -> Any:
    return require_real_node(kube_api)


def test_an_env_only_change_of_the_same_version_is_rolled_back_on_its_own_errors(
    story: Story, pod_prometheus: LocalPrometheus
) -> None:
    story.given(analysed_service("v1", pod_prometheus))
    story.wait_for("Microservice", NAME, _phase("Healthy"), timeout=120, what="Healthy")
    pod_prometheus.wait_pods_scraped(story.namespace, NAME, 2)
    stable = story.get("Deployment", NAME)
    service = story.get("Service", NAME)
    assert stable is not None and service is not None
    stable_revision = pod_revision(stable)
    url = f"http://{service['spec']['clusterIP']}:8080/"
    wait_routed(url, story.namespace)
    with Customers(url, 20) as customers:
        story.apply(analysed_service("v1", pod_prometheus, {"ERROR_RATIO": "0.4"}))
        ms = story.wait_for(
            "Microservice", NAME, _phase("Degraded"), timeout=180, what="rolled back"
        )
    assert ms is not None
    assert customers.served("v1", 500) > 0, customers.answers

    canary = story.get("Deployment", f"{NAME}-canary")
    assert canary is not None and canary["spec"]["replicas"] == 0
    canary_revision = pod_revision(canary)
    assert len(stable_revision) == len(canary_revision) == 16
    assert canary_revision != stable_revision
    for track in (stable, canary):  # the same version on both tracks
        assert track["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/version"] == "v1"
    after = story.get("Deployment", NAME)
    assert after is not None and pod_revision(after) == stable_revision  # stable untouched

    status = ms["status"]
    assert status["stableVersion"] == "v1" and status["canaryWeight"] == 0
    assert "error ratio" in status["message"] and "> 5.0%" in status["message"], status["message"]
    errors = [h for h in status["analysis"]["history"] if h["signal"] == "errors"]
    assert errors and errors[-1]["verdict"] == "Failed", errors
    # Each track on its own pods: the canary failed on its own errors (its 40 %, less in a
    # window that began before all its pods served), the stable read 0. Selecting on
    # version, both tracks would read the two tracks' requests together: the stable too.
    assert errors[-1]["value"] > 0.05 and errors[-1]["stableValue"] == 0.0, errors[-1]
