"""Leader election over a real Lease: one holder at a time, a hand-over when the holder stops,
an exit when the holder cannot renew, and `pilotboat run --leader-elect` standing by while
another process leads (answering its probes, acting on nothing)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import kubernetes
import pytest

from pilotboat.adapters.kube import Kube
from pilotboat.adapters.leadership import Leadership, lease_holder
from pilotboat.testing import OperatorProcess
from tests.fixtures.standins import free_port
from tests.manifests import microservice
from tests.story import Story


def fast(api: kubernetes.client.ApiClient, namespace: str, identity: str,
         **kwargs: object) -> Leadership:
    return Leadership(api, namespace, "pb-test", identity, lease_duration=3, renew_deadline=2,
                      retry_period=1, **kwargs)  # type: ignore[arg-type]


def test_one_holder_at_a_time_and_a_hand_over_on_release(
    kube_api: kubernetes.client.ApiClient, private_namespace: str
) -> None:
    a, b = fast(kube_api, private_namespace, "a"), fast(kube_api, private_namespace, "b")
    assert a.acquire(timeout=10)
    assert not b.acquire(timeout=5)  # more than a lease duration: a keeps renewing it
    assert lease_holder(kube_api, private_namespace, "pb-test") == "a"
    assert a.leading and not b.leading

    started = time.monotonic()
    a.release()
    assert b.acquire(timeout=10)
    assert time.monotonic() - started < 3, "a released Lease is taken at the next retry"
    assert lease_holder(kube_api, private_namespace, "pb-test") == "b"
    time.sleep(2.5)  # a, released, does not take it back
    assert lease_holder(kube_api, private_namespace, "pb-test") == "b"
    b.release()


def test_a_holder_that_cannot_renew_stops(
    kube_api: kubernetes.client.ApiClient, private_namespace: str
) -> None:
    lost = threading.Event()
    a = fast(kube_api, private_namespace, "a", on_lost=lost.set)
    assert a.acquire(timeout=10)
    # Someone else writes the Lease (as a replica that saw it expire would): a's next
    # renewals find another holder, and after its renew deadline it gives up.
    coordination = kubernetes.client.CoordinationV1Api(kube_api)
    while True:  # a's renewals move the resourceVersion: read and write again on a conflict
        lease = coordination.read_namespaced_lease("pb-test", private_namespace)
        lease.spec.holder_identity = "intruder"
        try:
            coordination.replace_namespaced_lease("pb-test", private_namespace, lease)
            break
        except kubernetes.client.ApiException as exc:
            if exc.status != 409:
                raise
    assert lost.wait(10), "a kept acting without the Lease"
    assert not a.leading
    assert lease_holder(kube_api, private_namespace, "pb-test") == "intruder"


@pytest.fixture
def two_operators(
    kubeconfig: Path, private_namespace: str, tmp_path: Path
) -> Iterator[list[OperatorProcess]]:
    args = ["--namespace", private_namespace, "--leader-elect", "--lease-namespace",
            private_namespace, "--no-webhooks"]
    procs = []
    for name in ("one", "two"):
        proc = OperatorProcess(kubeconfig, tmp_path / name, [*args, "--metrics-port",
                                                             str(free_port())])
        procs.append(proc)
    yield procs
    for proc in procs:
        proc.stop()


def _metrics_url(proc: OperatorProcess) -> str:
    port = proc.extra_args[proc.extra_args.index("--metrics-port") + 1]
    return f"http://127.0.0.1:{port}"


def test_run_with_leader_election_stands_by_until_the_leader_stops(
    two_operators: list[OperatorProcess], kube: Kube, kube_api: kubernetes.client.ApiClient,
    private_namespace: str,
) -> None:
    one, two = two_operators
    one.start(env={"POD_ID": "one"})
    two.start(env={"POD_ID": "two"})  # live: it answers its liveness probe while standing by
    assert lease_holder(kube_api, private_namespace, "pilotboat") == "one"
    ready = httpx.get(f"{_metrics_url(two)}/readyz", timeout=2)
    assert (ready.status_code, ready.text) == (200, "standing by\n")
    assert "pilotboat_leader 0.0" in httpx.get(f"{_metrics_url(two)}/metrics", timeout=2).text
    assert "pilotboat_leader 1.0" in httpx.get(f"{_metrics_url(one)}/metrics", timeout=2).text

    story = Story(kube, private_namespace)
    story.given(microservice("web", replicas=1))
    story.wait_condition("Microservice", "web", "Ready", timeout=60)
    assert "Handler '" in one.log_text()
    assert "Handler '" not in two.log_text()

    one.stop()  # SIGTERM: it hands the Lease over
    deadline = time.monotonic() + 20
    while lease_holder(kube_api, private_namespace, "pilotboat") != "two":
        assert time.monotonic() < deadline, two.log_text()[-2000:]
        time.sleep(0.2)
    story.apply(microservice("web", replicas=2))
    story.wait_for("Microservice", "web",
                   lambda o: ((o or {}).get("status") or {}).get("readyReplicas") == 2,
                   timeout=60, what="2 ready replicas")
    assert "Handler '" in two.log_text()
    assert "pilotboat_leader 1.0" in httpx.get(f"{_metrics_url(two)}/metrics", timeout=2).text


def test_a_standby_stops_at_once_on_sigterm(
    two_operators: list[OperatorProcess], kube_api: kubernetes.client.ApiClient,
    private_namespace: str,
) -> None:
    """In a container the process is PID 1, for which SIGTERM without a handler does nothing:
    the standby handles it, and exits 0 instead of waiting to be killed."""
    one, two = two_operators
    one.start(env={"POD_ID": "one"})
    two.start(env={"POD_ID": "two"})
    assert lease_holder(kube_api, private_namespace, "pilotboat") == "one"
    assert two.proc is not None
    two.proc.terminate()
    assert two.wait_exit(timeout=10) == 0
    assert "stopping while standing by (SIGTERM)" in two.log_text()
    assert lease_holder(kube_api, private_namespace, "pilotboat") == "one"
