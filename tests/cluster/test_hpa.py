"""A real HorizontalPodAutoscaler scales a Microservice from real pod metrics, mid-canary.

The HPA controller of the real kube-controller-manager reads the pods' CPU from the
`metrics.k8s.io` API, which metrics-server (hack/metrics-server.sh, started by
hack/cluster.sh up with the real node) serves from the real node's kubelet. Customers' requests
make the echo pods burn CPU above the HPA's target; the HPA raises `spec.replicas` through
`microservices/<name>/scale`, and the operator splits the new count between the canary and
the stable Deployment at the canary's weight.

Skipped, with the reason, when the real node is not Ready (a strict run fails on it:
tests/fixtures/strict.py); fails when the metrics API is not served, as it always is with
the real node.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from kubernetes.client import ApiClient, AutoscalingV2Api, CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from pilotboat import GROUP, VERSION
from tests.fixtures.customers import Customers, wait_routed
from tests.fixtures.real_node import on_the_real_node, require_real_node
from tests.manifests import microservice
from tests.story import Story, phase_is

pytestmark = pytest.mark.usefixtures("real_node", "operator")

NAME = "catalog"
TARGET = 50  # averageUtilization, percent of the pods' CPU request
STEPS = [{"setWeight": 50}, {"pause": {"untilPromoted": True}}]
# Idle (a readiness probe a second) an echo pod uses a few millicores, under the customers'
# 40 requests a second several times 10m: well below and well above the target.
RESOURCES = {"requests": {"cpu": "20m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}}


def service_spec(tag: str) -> dict[str, Any]:
    return {**on_the_real_node(tag), "resources": RESOURCES}


@pytest.fixture(scope="module")
def real_node(kube_api: ApiClient) -> Any:
    return require_real_node(kube_api)


def tracks(story: Story) -> tuple[int | None, int | None]:
    """The replicas the stable and canary Deployments ask for (None: no such Deployment)."""
    stable = story.get("Deployment", NAME)
    canary = story.get("Deployment", f"{NAME}-canary")
    return (
        stable["spec"]["replicas"] if stable else None,
        canary["spec"]["replicas"] if canary else None,
    )


def pod_metrics(story: Story) -> dict[str, str]:
    """CPU usage by pod name, as `kubectl top pods` reads it (metrics.k8s.io)."""
    custom = CustomObjectsApi(story.kube.api_client)
    try:
        listed: Any = custom.list_namespaced_custom_object(
            "metrics.k8s.io", "v1beta1", story.namespace, "pods"
        )
    except ApiException as err:
        raise AssertionError(
            f"the metrics API does not answer ({err.status} {err.reason}); is metrics-server "
            "up? `hack/metrics-server.sh status`, log .state/metrics-server/metrics-server.log"
        ) from err
    return {
        item["metadata"]["name"]: item["containers"][0]["usage"]["cpu"]
        for item in listed["items"]
        if item.get("containers")
    }


def test_a_real_hpa_scales_from_pod_cpu_and_the_canary_split_follows(story: Story) -> None:
    story.given(microservice(NAME, replicas=2, fake_nodes=False, **service_spec("v1"),
                             rollout={"canary": {"steps": STEPS}}))  # fmt: skip
    story.wait_for("Microservice", NAME, phase_is("Healthy"), timeout=90, what="Healthy")
    # A release of v2 pauses at 50%: one stable pod, one canary pod.
    story.patch("Microservice", NAME, {"spec": {"version": "v2", **service_spec("v2")}})
    story.wait_for("Microservice", NAME, phase_is("Paused", 1), timeout=90, what="paused at 50%")
    story.wait_for("Microservice", NAME, lambda _: tracks(story) == (1, 1), timeout=30,
                   what="split 1/1")  # fmt: skip

    hpa: dict[str, Any] = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": NAME, "namespace": story.namespace},
        "spec": {
            "scaleTargetRef": {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Microservice",
                               "name": NAME},
            "minReplicas": 2,
            "maxReplicas": 4,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                "type": "Utilization", "averageUtilization": TARGET}}}],
        },
    }  # fmt: skip
    autoscaling = AutoscalingV2Api(story.kube.api_client)
    autoscaling.create_namespaced_horizontal_pod_autoscaler(story.namespace, hpa)

    def status() -> Any:
        return autoscaling.read_namespaced_horizontal_pod_autoscaler(NAME, story.namespace).status

    def conditions() -> dict[str, tuple[str, str]]:
        return {c.type: (c.status, c.reason) for c in status().conditions or []}

    # Idle, the HPA reads the pods' CPU (below target) and keeps its minimum.
    deadline = time.monotonic() + 120
    while conditions().get("ScalingActive", ("", ""))[0] != "True":
        assert time.monotonic() < deadline, (
            f"the HPA never got a metric in 120s: {conditions()}; pods' CPU: {pod_metrics(story)}"
        )
        time.sleep(2)
    # metrics-server reports a pod from its second scrape on: the canary pod may come later
    deadline = time.monotonic() + 90
    while len(pod_metrics(story)) != 2:
        assert time.monotonic() < deadline, f"metrics of two pods: {pod_metrics(story)}"
        time.sleep(2)
    idle = status()
    print(f"idle: cpu {idle.current_metrics[0].resource.current.average_utilization}% of request")
    assert idle.current_metrics[0].resource.current.average_utilization < TARGET
    assert idle.desired_replicas == 2

    service = story.get("Service", NAME)
    assert service is not None
    url = f"http://{service['spec']['clusterIP']}:8080/"
    wait_routed(url, story.namespace)
    started = time.monotonic()
    with Customers(url, rate=40) as customers:
        # CPU over target: the HPA asks for more pods through /scale, from the metric.
        ms = story.wait_for("Microservice", NAME,
                            lambda o: ((o or {}).get("spec") or {}).get("replicas", 0) > 2,
                            timeout=180, what="scaled up by the HPA")  # fmt: skip
        reacted = time.monotonic() - started
        assert ms is not None
        # The HPA writes /scale, then its status: the metric it scaled on.
        deadline = time.monotonic() + 30
        while (scaled := status()).desired_replicas <= 2:
            assert time.monotonic() < deadline, f"HPA status not updated: {scaled}"
            time.sleep(0.5)
        utilization = scaled.current_metrics[0].resource.current.average_utilization
        print(f"HPA scaled {NAME} 2 -> {ms['spec']['replicas']} {reacted:.0f}s after load began; "
              f"cpu {utilization}% of request; pods' CPU {pod_metrics(story)}")  # fmt: skip
        assert utilization > TARGET, scaled
        rescales = [e for e in story.events(NAME)
                    if e["involvedObject"]["kind"] == "HorizontalPodAutoscaler"
                    and e["reason"] == "SuccessfulRescale"]  # fmt: skip
        assert rescales, "no SuccessfulRescale event from the HPA"
        assert "cpu resource utilization (percentage of request) above target" in (
            rescales[0]["message"]), rescales[0]["message"]  # fmt: skip

        # The split follows whatever count the HPA asked for, still paused at 50%.
        story.wait_for("Microservice", NAME, lambda o: (o or {}).get("spec", {}).get("replicas")
                       == 4, timeout=90, what="4 replicas (the HPA's maximum)")  # fmt: skip
        story.wait_for("Microservice", NAME, lambda _: tracks(story) == (2, 2), timeout=60,
                       what="split 2/2 after the HPA's 4")  # fmt: skip

        def settled(o: dict[str, Any] | None) -> bool:
            status = (o or {}).get("status") or {}
            return (status.get("replicas"), status.get("readyReplicas")) == (4, 4)

        ms = story.wait_for("Microservice", NAME, settled, timeout=90, what="4 pods, all ready")
        assert ms is not None
        assert phase_is("Paused", 1)(ms), "scaling is not a release step"
        assert ms["status"]["canaryWeight"] == 50
        assert tracks(story) == (2, 2)
    assert customers.served("v1", 200) and customers.served("v2", 200), customers.answers
    assert status().desired_replicas == 4
