"""Adopting a live Deployment (`spec.workloadRef`) under load, on the real node.

A plain Deployment `web` (three echo pods, `app: web`) serves behind its own Service `web`
(selector `app: web`), as a team's service does before Pilotboat. Customers in this process
call that Service's ClusterIP throughout (tests/fixtures/customers.py: a new connection per
request, so kube-proxy picks a ready pod for each). A Microservice `shop-web` then adopts the
Deployment: its pods carry the original template's labels, so the same Service selects them,
and the original is scaled down one pod for each of the Microservice's ready pods. Then a
change to the original's template is released as a canary, and deleting the Microservice
hands the original back before the Microservice's pods go.

The echo pods stop on SIGTERM at once; the original template has a `preStop` sleep, as any
Deployment needs for a rolling update without dropped requests (kube-proxy removes a
terminating pod's endpoint a moment after the kubelet signals it).

Without the real node these tests skip, saying why; a strict run fails instead.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes.client import ApiClient, CoreV1Api

from pilotboat import API_VERSION
from tests.fixtures.customers import Customers, wait_routed
from tests.fixtures.real_node import echo_image, require_real_node
from tests.story import Story

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("real_node", "operator")]

ORIGINAL = "web"
NAME = "shop-web"
REPLICAS = 3
RATE = 20.0
REPORT = Path(os.environ.get("PILOTBOAT_ADOPTION_REPORT", "")) if os.environ.get(
    "PILOTBOAT_ADOPTION_REPORT") else None


@pytest.fixture(scope="module")
def real_node(kube_api: ApiClient) -> Any:
    return require_real_node(kube_api)


def original_deployment(version: str, replicas: int = REPLICAS) -> dict[str, Any]:
    labels = {"app": "web"}
    env = [
        {"name": "VERSION", "value": version},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
    ]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": ORIGINAL, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "nodeSelector": {"type": "real"},
                    "terminationGracePeriodSeconds": 10,
                    "containers": [{
                        "name": "echo",
                        "image": echo_image("v1"),
                        "imagePullPolicy": "Never",
                        "env": env,
                        "ports": [{"name": "http", "containerPort": 8080}],
                        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"},
                                           "periodSeconds": 1},
                        "lifecycle": {"preStop": {"sleep": {"seconds": 3}}},
                        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"},
                                      "limits": {"memory": "128Mi"}},
                    }],
                },
            },
        },
    }


SERVICE = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": ORIGINAL},
    "spec": {"selector": {"app": "web"},
             "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
}


def adopting(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "Microservice",
        "metadata": {"name": NAME},
        "spec": {
            "version": "v1",
            "replicas": REPLICAS,
            "workloadRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": ORIGINAL},
            "rollout": {"canary": {"steps": [
                {"setWeight": 34}, {"pause": {"duration": "6s"}}, {"setWeight": 100},
            ]}},
            **spec,
        },
    }


def _replicas(story: Story, name: str) -> tuple[int, int]:
    """(spec.replicas, status.readyReplicas) of a Deployment; (-1, -1) when it is gone."""
    dep = story.get("Deployment", name)
    if dep is None:
        return -1, -1
    return int(dep["spec"].get("replicas", 0)), int(dep.get("status", {}).get("readyReplicas") or 0)


class ReadyWatch:
    """The fewest ready, not terminating pods behind the Service (`app: web`), polled."""

    def __init__(self, kube_api: ApiClient, namespace: str) -> None:
        self.core, self.namespace = CoreV1Api(kube_api), namespace
        self.fewest: int | None = None
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            pods = self.core.list_namespaced_pod(self.namespace, label_selector="app=web").items
            ready = sum(
                1 for p in pods
                if p.metadata.deletion_timestamp is None
                and any(c.type == "Ready" and c.status == "True"
                        for c in p.status.conditions or [])
            )
            self.fewest = ready if self.fewest is None else min(self.fewest, ready)
            self.samples += 1
            self._stop.wait(0.2)

    @contextmanager
    def watching(self) -> Iterator[ReadyWatch]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(5)


def _failed(customers: Customers) -> int:
    return sum(n for (_, code), n in customers.answers.items() if code != 200)


def _total(customers: Customers) -> int:
    return sum(customers.answers.values())


def _report(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)
    if REPORT is not None:
        with REPORT.open("a") as out:
            out.write(json.dumps(record) + "\n")


def _status(story: Story) -> dict[str, Any]:
    return (story.get("Microservice", NAME) or {}).get("status") or {}


@pytest.fixture
def hand_back_released(story: Story) -> Iterator[None]:
    """After a failed test, the hand-back finalizer off the Microservice's Deployment, so
    that the namespace can go even if the operator stops first."""
    yield
    dep = story.get("Deployment", NAME)
    if dep is not None and "pilotboat.dev/hand-back" in (dep["metadata"].get("finalizers") or []):
        story.kube.merge_patch("Deployment", story.namespace, NAME, {"metadata": {
            "finalizers": [f for f in dep["metadata"]["finalizers"]
                           if f != "pilotboat.dev/hand-back"]}})


@pytest.mark.usefixtures("hand_back_released")
def test_a_live_deployment_is_adopted_released_and_handed_back_without_a_failed_request(
    story: Story, kube_api: ApiClient
) -> None:
    story.apply(original_deployment("v1"), SERVICE)
    story.wait_for("Deployment", ORIGINAL, lambda d: _replicas(story, ORIGINAL) == (3, 3),
                   timeout=120, what="the original's 3 pods ready")
    service = story.get("Service", ORIGINAL)
    assert service is not None
    url = f"http://{service['spec']['clusterIP']}/"
    wait_routed(url, story.namespace)

    # 1. Adoption, under load.
    watch = ReadyWatch(kube_api, story.namespace)
    with watch.watching(), Customers(url, RATE) as customers:
        time.sleep(2)
        started = time.monotonic()
        story.apply(adopting())
        story.wait_for("Deployment", ORIGINAL, lambda _: _replicas(story, ORIGINAL)[0] == 0
                       and _replicas(story, NAME) == (3, 3), timeout=180,
                       what="the original at 0 and the Microservice's 3 pods ready")
        took = time.monotonic() - started
        time.sleep(5)  # the last original pod's preStop, and requests after it
    adopted = {"benchmark": "adoption", "adoption_requests": _total(customers),
               "adoption_dropped_requests": _failed(customers),
               "adoption_seconds": round(took, 1), "fewest_ready_pods": watch.fewest,
               "ready_samples": watch.samples}
    _report(adopted)
    assert _failed(customers) == 0, customers.answers
    assert _total(customers) >= RATE * 5, customers.answers
    assert watch.fewest is not None and watch.fewest >= REPLICAS, adopted

    original = story.get("Deployment", ORIGINAL)
    assert original is not None and original["spec"]["replicas"] == 0
    annotations = original["metadata"]["annotations"]
    assert annotations["pilotboat.dev/adopted-by"] == NAME
    assert annotations["pilotboat.dev/adopted-replicas"] == "3"
    stable = story.get("Deployment", NAME)
    assert stable is not None and "pilotboat.dev/hand-back" in stable["metadata"]["finalizers"]
    # The Service the team already had now leads to the Microservice's pods only.
    with httpx.Client(timeout=5, limits=httpx.Limits(max_keepalive_connections=0)) as client:
        pods = {client.get(url).json()["pod"] for _ in range(30)}
    assert pods and all(p.startswith(f"{NAME}-") for p in pods), pods
    scaled = [e["message"] for e in story.events(NAME) if e["reason"] == "AdoptedScaledDown"]
    assert any(" to 0 replicas: 3 of" in m for m in scaled), scaled

    # 2. A change to the original's template is a release: a canary, then promoted.
    revision = stable["metadata"]["annotations"]["pilotboat.dev/revision"]
    weights: list[int] = []
    with Customers(url, RATE) as released:
        # As `kubectl set env deployment/web VERSION=v2` does: the template only.
        current = story.get("Deployment", ORIGINAL)
        assert current is not None
        containers = current["spec"]["template"]["spec"]["containers"]
        containers[0]["env"] = original_deployment("v2")[
            "spec"]["template"]["spec"]["containers"][0]["env"]
        story.kube.merge_patch("Deployment", story.namespace, ORIGINAL, {
            "spec": {"template": {"spec": {"containers": containers}}}})

        def promoted(ms: dict[str, Any] | None) -> bool:
            weights.append(_status(story).get("canaryWeight", 0))
            dep = story.get("Deployment", NAME) or {"metadata": {}}
            return (_status(story).get("phase") == "Healthy"
                    and dep["metadata"].get("annotations", {}).get("pilotboat.dev/revision")
                    != revision and _replicas(story, NAME) == (3, 3))

        story.wait_for("Microservice", NAME, promoted, timeout=240,
                       what="the template change released and promoted")
        time.sleep(3)
    _report({"benchmark": "adoption", "release_requests": _total(released),
             "release_dropped_requests": _failed(released),
             "served_by_canary_v2": released.served("v2")})
    assert any(w > 0 for w in weights), weights  # it went through a canary step
    assert _failed(released) == 0, released.answers
    assert released.served("v2") > 0 and released.served("v1") > 0, released.answers
    assert _replicas(story, ORIGINAL)[0] == 0  # the original stays at 0

    # 3. Deleting the Microservice hands the original back before its pods go.
    with Customers(url, RATE) as leaving:
        story.kube.delete("Microservice", story.namespace, NAME)
        story.wait_for("Deployment", NAME, lambda d: d is None, timeout=180,
                       what="the Microservice's Deployment gone, after the hand-back")
        assert _replicas(story, ORIGINAL) == (3, 3)
        time.sleep(5)
    _report({"benchmark": "adoption", "hand_back_requests": _total(leaving),
             "hand_back_dropped_requests": _failed(leaving)})
    assert _failed(leaving) == 0, leaving.answers
    original = story.get("Deployment", ORIGINAL)
    assert original is not None
    assert "pilotboat.dev/adopted-by" not in (original["metadata"].get("annotations") or {})


@pytest.mark.parametrize(
    ("before", "field_text"),
    [
        ([], "spec.workloadRef.name: Deployment web does not exist"),
        ([original_deployment("v1", replicas=0)
          | {"metadata": {"name": ORIGINAL, "labels": {"app": "web"},
                          "annotations": {"pilotboat.dev/adopted-by": "someone-else"}}}],
         "spec.workloadRef.name: Deployment web is adopted by Microservice someone-else"),
    ],
)
def test_a_workload_ref_that_cannot_be_adopted_is_refused_naming_the_field(
    story: Story, before: list[dict[str, Any]], field_text: str
) -> None:
    story.apply(*before, adopting())

    def refused(ms: dict[str, Any] | None) -> bool:
        return any(c.get("type") == "SpecValid" and c.get("status") == "False"
                   and field_text in c.get("message", "")
                   for c in _status(story).get("conditions") or [])

    story.wait_for("Microservice", NAME, refused, timeout=60, what="SpecValid=False")
    assert any(field_text in e["message"] for e in story.events(NAME)), story.events(NAME)
    assert story.get("Deployment", NAME) is None


def test_a_workload_ref_with_a_template_is_refused_at_admission(story: Story) -> None:
    manifest = adopting(template={"spec": {"containers": [{"name": "a", "image": "a:1"}]}})
    with pytest.raises(Exception, match=r"spec.template must be absent with spec.workloadRef"):
        story.apply(manifest)
