"""The scale subresource and the progress deadline on the local control plane.

`kubectl scale` and a HorizontalPodAutoscaler change `spec.replicas` through
`microservices/<name>/scale`; the operator follows, splitting the new count mid-canary. A
canary whose pods never become ready is rolled back at `spec.progressDeadlineSeconds`, and
the stable track keeps all its pods meanwhile. The pods here run on the KWOK nodes, which
have no kubelet and so no metrics: an HPA here resolves its target and enforces its bounds;
tests/cluster/test_hpa.py has a real HPA act on the real node's pod metrics (metrics-server).
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from kubernetes.client import AutoscalingV2Api, CoreV1Api, CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from pilotboat import GROUP, VERSION
from tests.manifests import microservice
from tests.story import Story, phase_is

pytestmark = pytest.mark.usefixtures("operator")

STEPS = [{"setWeight": 50}, {"pause": {"untilPromoted": True}}]
REAL_NODE = "pilotboat-real"


def tracks(story: Story, name: str) -> tuple[int | None, int | None]:
    """The replicas the stable and canary Deployments ask for (None: no such Deployment)."""
    stable = story.get("Deployment", name)
    canary = story.get("Deployment", f"{name}-canary")
    return (
        stable["spec"]["replicas"] if stable else None,
        canary["spec"]["replicas"] if canary else None,
    )


def scale(story: Story, name: str, replicas: int) -> None:
    """What `kubectl scale msvc NAME --replicas=N` does: PATCH .../microservices/NAME/scale."""
    story.kube.merge_patch(
        "Microservice", story.namespace, name, {"spec": {"replicas": replicas}}, subresource="scale"
    )


def read_scale(story: Story, name: str) -> dict[str, Any]:
    custom = CustomObjectsApi(story.kube.api_client)
    scale_obj: dict[str, Any] = custom.get_namespaced_custom_object_scale(
        GROUP, VERSION, story.namespace, "microservices", name
    )
    return scale_obj


def test_kubectl_scale_moves_the_deployments_and_mid_canary_the_split_follows(
    story: Story,
) -> None:
    story.given(microservice("cart", replicas=2, rollout={"canary": {"steps": STEPS}}))
    story.wait_for("Microservice", "cart", phase_is("Healthy"), timeout=90, what="Healthy")

    scale(story, "cart", 4)
    story.wait_for(
        "Microservice",
        "cart",
        lambda o: phase_is("Healthy")(o) and o["status"].get("readyReplicas") == 4,  # type: ignore[index]
        timeout=60,
        what="Healthy on 4 ready pods",
    )
    assert tracks(story, "cart") == (4, None)
    scaled = read_scale(story, "cart")
    assert scaled["spec"]["replicas"] == 4
    assert scaled["status"] == {"replicas": 4, "selector": "app.kubernetes.io/name=cart"}

    # A release without `replicas` in the patch, as a manifest does once an autoscaler owns it
    v2 = {"version": "v2", "image": "localhost/pilotboat/echo:v2"}
    story.patch("Microservice", "cart", {"spec": v2})
    story.wait_for("Microservice", "cart", phase_is("Paused", 1), timeout=90, what="at 50%")
    story.wait_for("Microservice", "cart", lambda _: tracks(story, "cart") == (2, 2), timeout=30,
                   what="split 2/2")  # fmt: skip

    scale(story, "cart", 6)
    story.wait_for("Microservice", "cart", lambda _: tracks(story, "cart") == (3, 3), timeout=60,
                   what="split 3/3 after scaling to 6")  # fmt: skip
    # Settled: 6 pods, all ready. The stable track keeps a fourth pod until the canary's
    # third is ready (surge first), and its Deployment can still count that pod for a moment
    # after both tracks' ready pods add up to 6.
    ms = story.wait_for("Microservice", "cart",
                        lambda o: ((o or {}).get("status", {}).get("readyReplicas"),
                                   (o or {}).get("status", {}).get("replicas")) == (6, 6),
                        timeout=60, what="6 pods, all ready")  # fmt: skip
    assert ms is not None
    assert phase_is("Paused", 1)(ms), "scaling is not a release step"
    assert (ms["status"]["canaryWeight"], ms["status"]["replicas"]) == (50, 6)
    assert read_scale(story, "cart")["spec"]["replicas"] == 6
    spec_writers = {
        entry["manager"]
        for entry in ms["metadata"]["managedFields"]
        if "f:spec" in (entry.get("fieldsV1") or {})
    }
    assert "pilotboat" not in spec_writers, "the operator never writes spec"


def test_an_autoscaler_resolves_the_microservice_as_its_target(story: Story) -> None:
    story.given(microservice("search", replicas=1))
    story.wait_for("Microservice", "search", phase_is("Healthy"), timeout=90, what="Healthy")
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "search", "namespace": story.namespace},
        "spec": {
            "scaleTargetRef": {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Microservice",
                               "name": "search"},
            "minReplicas": 3,
            "maxReplicas": 5,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                "type": "Utilization", "averageUtilization": 60}}}],
        },
    }  # fmt: skip
    autoscaling = AutoscalingV2Api(story.kube.api_client)
    autoscaling.create_namespaced_horizontal_pod_autoscaler(story.namespace, hpa)

    # Below its minimum the HPA scales without asking for a metric: through /scale
    ms = story.wait_for("Microservice", "search",
                        lambda o: (o or {}).get("status", {}).get("readyReplicas") == 3,
                        timeout=90, what="scaled to the HPA's minimum of 3")  # fmt: skip
    assert ms is not None and ms["spec"]["replicas"] == 3
    assert tracks(story, "search") == (3, None)

    def conditions() -> dict[str, tuple[str, str]]:
        obj = autoscaling.read_namespaced_horizontal_pod_autoscaler("search", story.namespace)
        return {c.type: (c.status, c.reason) for c in obj.status.conditions or []}

    deadline = time.monotonic() + 90
    while "ScalingActive" not in conditions() and time.monotonic() < deadline:
        time.sleep(1)
    seen = conditions()
    assert seen.get("AbleToScale", ("", ""))[0] == "True", seen
    # The selector resolves (no InvalidSelector); only the metric is missing: the pods run on
    # KWOK nodes, which no kubelet (and so no metrics-server) measures.
    assert seen["ScalingActive"] == ("False", "FailedGetResourceMetric"), seen


def _real_node_ready(story: Story) -> bool:
    try:
        node = CoreV1Api(story.kube.api_client).read_node(REAL_NODE)
    except ApiException as err:
        if err.status == 404:
            return False
        raise
    return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])


NEVER_READY = {
    "unschedulable": {"nodeSelector": {"type": "nowhere"}},
    "image never pulled": {
        "image": "localhost/pilotboat/does-not-exist:1",
        "imagePullPolicy": "Never",
        "nodeSelector": {"type": "real"},
    },
}


@pytest.mark.parametrize("cause", list(NEVER_READY))
def test_a_canary_never_ready_is_rolled_back_at_the_progress_deadline(
    story: Story, cause: str
) -> None:
    if cause == "image never pulled" and not _real_node_ready(story):
        pytest.skip(f"node {REAL_NODE} is not Ready: start it with `sudo hack/node.sh up`")
    story.given(microservice("inventory", replicas=2, progressDeadlineSeconds=10,
                             rollout={"canary": {"steps": STEPS}}))  # fmt: skip
    story.wait_for("Microservice", "inventory", phase_is("Healthy"), timeout=90, what="Healthy")

    story.patch("Microservice", "inventory", {"spec": {"version": "v2", "image":
                "localhost/pilotboat/echo:v2", **NEVER_READY[cause]}})  # fmt: skip
    story.wait_for("Microservice", "inventory", lambda _: tracks(story, "inventory") == (2, 1),
                   timeout=30, what="canary asked for")  # fmt: skip
    until = time.monotonic() + 60
    while phase_is("Progressing", 0)(story.get("Microservice", "inventory")):
        assert time.monotonic() < until, "still waiting for the canary after 60s"
        stable = story.get("Deployment", "inventory") or {}
        assert stable["spec"]["replicas"] == 2, "stable gave way to an unready canary"
        assert (stable.get("status") or {}).get("readyReplicas") == 2
        time.sleep(0.5)

    ms = story.wait_condition("Microservice", "inventory", "RolledBack", timeout=30)
    rolled_back = next(c for c in ms["status"]["conditions"] if c["type"] == "RolledBack")
    assert rolled_back["reason"] == "ProgressDeadlineExceeded"
    assert "0/1 canary pods ready" in rolled_back["message"]
    assert "progress deadline of 10s" in rolled_back["message"]
    assert ms["status"]["phase"] == "Degraded" and ms["status"]["stableVersion"] == "v1"
    story.wait_for("Microservice", "inventory", lambda _: tracks(story, "inventory") == (2, 0),
                   timeout=30, what="canary at zero, stable whole")  # fmt: skip
    warnings = [e for e in story.events("inventory") if e["reason"] == "ProgressDeadlineExceeded"]
    assert len(warnings) == 1 and warnings[0]["type"] == "Warning"


@pytest.mark.parametrize(("max_surge", "split", "actual"), [(None, (1, 1), 50), (1, (2, 1), 33)])
def test_a_weight_two_replicas_cannot_give_is_reported_and_met_with_surge(
    story: Story, max_surge: int | None, split: tuple[int, int], actual: int
) -> None:
    """setWeight 10 of 2 replicas: without maxSurge one canary pod is half the pods and
    status.actualWeight says 50; with maxSurge 1 the stable track keeps both pods, 33 %."""
    ratio = {} if max_surge is None else {"maxSurge": max_surge}
    steps = [{"setWeight": 10}, {"pause": {"untilPromoted": True}}]
    story.given(microservice("tiny", replicas=2, rollout={"canary": {
        "steps": steps, "trafficRouting": {"replicaRatio": ratio}}}))  # fmt: skip
    story.wait_for("Microservice", "tiny", phase_is("Healthy"), timeout=90, what="Healthy")
    story.patch("Microservice", "tiny", {"spec": {"version": "v2",
                                                  "image": "localhost/pilotboat/echo:v2"}})
    ms = story.wait_for(
        "Microservice", "tiny",
        lambda o: phase_is("Paused", 1)(o) and (o or {})["status"].get("actualWeight") == actual,
        timeout=90, what=f"paused at 10 % with {actual} % on the canary")  # fmt: skip
    assert ms is not None and ms["status"]["canaryWeight"] == 10
    assert tracks(story, "tiny") == split
