"""The real node `pilotboat-real` (hack/node.sh): real pods from images built by
hack/images.sh, a real bridge network and kube-proxy's iptables rules.

Skipped, with the reason, when that node is not there or not Ready: it needs root and
`hack/node.sh up` (docs/local-cluster.md). The skip fails a strict run (`make test`, CI;
tests/fixtures/strict.py) and is allowed only on a cluster chosen with PILOTBOAT_KUBECONFIG,
which may have no such node. Requests go from this process to Service and pod
addresses, so the tests run on the machine that hosts the node.
"""

from __future__ import annotations

import collections
import ipaddress
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import kubernetes
import pytest
from kubernetes.client import ApiClient, CoreV1Api

from tests.fixtures.real_node import NODE, _image_versions, echo_image, require_real_node

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
POD_CIDR = ipaddress.ip_network("10.244.0.0/24")
T = TypeVar("T")


ECHO_IMAGE = echo_image(_image_versions()["ECHO_VERSION"])


@pytest.fixture(scope="module", autouse=True)
def real_node(kube_api: ApiClient) -> Iterator[Any]:
    """The node object; skips the module when the node is missing or not Ready."""
    yield require_real_node(kube_api)


def _wait(what: str, probe: Callable[[], T | None], timeout: float = 90) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.3)


def echo_deployment(
    name: str, version: str, replicas: int, env: dict[str, str] | None = None
) -> dict[str, Any]:
    labels = {"app": "echo", "version": version, "deployment": name}
    variables: list[dict[str, Any]] = [
        {"name": "VERSION", "value": version},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    ]
    variables += [{"name": k, "value": v} for k, v in (env or {}).items()]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "nodeSelector": {"type": "real"},
                    "terminationGracePeriodSeconds": 2,
                    "containers": [
                        {
                            "name": "echo",
                            "image": ECHO_IMAGE,
                            "imagePullPolicy": "Never",
                            "env": variables,
                            "ports": [{"name": "http", "containerPort": 8080}],
                            "readinessProbe": {
                                "httpGet": {"path": "/healthz", "port": "http"},
                                "periodSeconds": 1,
                            },
                            "resources": {
                                "requests": {"cpu": "10m", "memory": "32Mi"},
                                "limits": {"memory": "128Mi"},
                            },
                        }
                    ],
                },
            },
        },
    }


def ready_pods(
    kube_api: ApiClient, namespace: str, name: str, replicas: int, label: str = "deployment"
) -> list[Any]:
    """Waits until the Deployment `name` has `replicas` Running and Ready pods; returns them.

    Fails at once, saying why, when a pod cannot start (image missing, sandbox refused).
    """
    core = CoreV1Api(kube_api)

    def probe() -> list[Any] | None:
        pods = core.list_namespaced_pod(namespace, label_selector=f"{label}={name}").items
        for pod in pods:
            for status in pod.status.container_statuses or []:
                waiting = status.state.waiting
                if waiting and waiting.reason in {"ErrImageNeverPull", "CreateContainerError"}:
                    raise AssertionError(
                        f"{pod.metadata.name}: {waiting.reason}: {waiting.message} "
                        "(are the images imported? hack/images.sh)"
                    )
        ready = [
            p
            for p in pods
            if p.status.phase == "Running"
            and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
        ]
        return ready if len(ready) == replicas and len(pods) == replicas else None

    try:
        return _wait(f"{replicas} ready pods of {name}", probe)
    except AssertionError:
        events = core.list_namespaced_event(namespace).items
        tail = "; ".join(f"{e.involved_object.name}: {e.reason}: {e.message}" for e in events[-8:])
        raise AssertionError(f"{name} has no {replicas} ready pods; last events: {tail}") from None


def apply(kube_api: ApiClient, namespace: str, *objects: dict[str, Any]) -> None:
    kubernetes.utils.create_from_dict(
        kube_api, {"kind": "List", "items": list(objects)}, namespace=namespace
    )


def scrape(url: str) -> dict[str, float]:
    """A Prometheus text page as {series: value}."""
    samples = {}
    for line in httpx.get(url, timeout=5).text.splitlines():
        if line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            samples[series] = float(value)
    return samples


def test_the_real_node_runs_containerd_with_the_clusters_kubelet(real_node: Any) -> None:
    assert real_node.metadata.labels["type"] == "real"
    assert not real_node.spec.taints
    info = real_node.status.node_info
    assert info.container_runtime_version.startswith("containerd://")
    versions = (REPO / "hack" / "versions.env").read_text()
    assert f"KUBERNETES_VERSION={info.kubelet_version}" in versions


def test_echo_pods_become_ready_and_serve_their_version(
    kube_api: ApiClient, namespace: str
) -> None:
    apply(kube_api, namespace, echo_deployment("echo", "v1", replicas=2))
    pods = ready_pods(kube_api, namespace, "echo", 2)

    for pod in pods:
        assert pod.spec.node_name == NODE
        assert ipaddress.ip_address(pod.status.pod_ip) in POD_CIDR
        (container,) = pod.status.container_statuses
        assert container.ready and container.restart_count == 0
        answer = httpx.get(f"http://{pod.status.pod_ip}:8080/", timeout=5).json()
        assert answer["version"] == "v1" and answer["pod"] == pod.metadata.name


def test_error_ratio_and_latency_show_in_answers_and_metrics(
    kube_api: ApiClient, namespace: str
) -> None:
    env = {"ERROR_RATIO": "1", "LATENCY_SECONDS": "0.2"}
    apply(kube_api, namespace, echo_deployment("broken", "v9", replicas=1, env=env))
    (pod,) = ready_pods(kube_api, namespace, "broken", 1)  # probes are never failed on purpose
    base = f"http://{pod.status.pod_ip}:8080"

    codes = [httpx.get(f"{base}/", timeout=5).status_code for _ in range(5)]

    assert codes == [500] * 5
    metrics = scrape(f"{base}/metrics")
    labels = 'code="500",method="GET"'
    assert metrics[f"http_requests_total{{{labels}}}"] == 5
    assert metrics[f'http_request_duration_seconds_bucket{{{labels},le="0.1"}}'] == 0
    assert metrics[f'http_request_duration_seconds_bucket{{{labels},le="0.5"}}'] == 5
    assert metrics[f"http_request_duration_seconds_sum{{{labels}}}"] >= 1.0
    assert metrics['echo_build_info{version="v9"}'] == 1


def test_a_cluster_ip_service_spreads_requests_in_proportion_to_replicas(
    kube_api: ApiClient, namespace: str
) -> None:
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "echo"},
        "spec": {"selector": {"app": "echo"}, "ports": [{"port": 80, "targetPort": "http"}]},
    }
    apply(
        kube_api,
        namespace,
        echo_deployment("echo-v1", "v1", replicas=3),
        echo_deployment("echo-v2", "v2", replicas=1),
        service,
    )
    pods = ready_pods(kube_api, namespace, "echo-v1", 3) + ready_pods(
        kube_api, namespace, "echo-v2", 1
    )
    cluster_ip = CoreV1Api(kube_api).read_namespaced_service("echo", namespace).spec.cluster_ip
    url = f"http://{cluster_ip}/"

    names = {p.metadata.name for p in pods}

    def all_pods_answer() -> bool:
        """kube-proxy has synced every endpoint, and only these: a ClusterIP freed by an
        earlier test's Service can still lead, for a sync period, to that Service's pods."""
        seen = set()
        for _ in range(40):
            try:
                seen.add(httpx.get(url, timeout=2).json().get("pod"))
            except (httpx.HTTPError, ValueError, AttributeError):
                return False
        return seen == names

    _wait("kube-proxy to route to all four pods", all_pods_answer, timeout=60)
    before = {p.metadata.name: _served(p) for p in pods}

    # One connection per request: kube-proxy picks a backend per connection.
    answers = [httpx.get(url, timeout=5).json() for _ in range(400)]

    versions = collections.Counter(a["version"] for a in answers)
    per_pod = collections.Counter(a["pod"] for a in answers)
    share_v2 = versions["v2"] / len(answers)
    # 1 replica in 4: 25%; with 400 requests one standard deviation is 2.2 points
    assert 0.14 <= share_v2 <= 0.36, versions
    assert set(per_pod) == set(before) and min(per_pod.values()) >= 50, per_pod
    # Each pod counted what it served: its counter moved by exactly its share
    for pod in pods:
        assert _served(pod) - before[pod.metadata.name] == per_pod[pod.metadata.name]


def _served(pod: Any) -> float:
    metrics = scrape(f"http://{pod.status.pod_ip}:8080/metrics")
    return metrics.get('http_requests_total{code="200",method="GET"}', 0.0)


def test_prometheus_discovers_the_operators_pods_with_their_labels(
    kube_api: ApiClient, namespace: str, prometheus: Any, operator: Any
) -> None:
    """A Microservice's pods on the real node are found by pod discovery and scraped, with
    the namespace, pod, service and version labels the analysis queries select on."""
    from pilotboat.adapters.kube import Kube
    from tests.manifests import microservice

    kube = Kube(kube_api, field_manager="pilotboat-tests")
    body = microservice(
        "inventory",
        version="v1",
        replicas=2,
        image=ECHO_IMAGE,
        fake_nodes=False,
        nodeSelector={"type": "real"},
        imagePullPolicy="Never",
        readinessProbe={"path": "/healthz"},
    )
    body["metadata"]["namespace"] = namespace
    kube.apply(body)
    pods = ready_pods(kube_api, namespace, "inventory", 2, label="app.kubernetes.io/name")
    service_ip = CoreV1Api(kube_api).read_namespaced_service("inventory", namespace).spec.cluster_ip

    def service_answers() -> bool | None:  # kube-proxy has synced the new Service's rules
        try:
            return httpx.get(f"http://{service_ip}:8080/", timeout=2).status_code == 200 or None
        except httpx.HTTPError:
            return None

    _wait("kube-proxy to route the Service", service_answers, timeout=60)
    answers = [httpx.get(f"http://{service_ip}:8080/", timeout=5) for _ in range(20)]
    assert all(r.status_code == 200 for r in answers)

    def scraped() -> list[dict[str, Any]] | None:
        result = prometheus.api("query", query=f'up{{namespace="{namespace}"}} == 1')["result"]
        return result if len(result) == 2 else None

    series = _wait("Prometheus to discover and scrape both pods", scraped, timeout=90)
    labels = sorted(
        (s["metric"]["pod"], s["metric"]["service"], s["metric"]["version"], s["metric"]["track"])
        for s in series
    )
    assert labels == sorted((p.metadata.name, "inventory", "v1", "stable") for p in pods)

    def counted() -> float | None:
        query = (
            f'sum(http_requests_total{{namespace="{namespace}",service="inventory",version="v1"}})'
        )
        result = prometheus.api("query", query=query)["result"]
        value = float(result[0]["value"][1]) if result else 0.0
        return value if value >= 20 else None

    assert _wait("the requests to show in Prometheus", counted, timeout=60) >= 20
