"""Which namespaces an operator's own webhook configurations apply to, on a real API server:
run for one namespace by name, they carry a ``namespaceSelector`` on
``kubernetes.io/metadata.name`` (no CEL condition on the namespace), and the API server calls
its webhooks for a write in that namespace and for none in another. (What they carry for
every kind of pattern: tests/core/test_webhook_scope.py.)"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pilotboat.adapters.kube import Kube
from pilotboat.handlers.webhooks import webhook_configuration_name
from pilotboat.testing import OperatorProcess
from tests.cluster.test_metrics import samples, value
from tests.manifests import microservice
from tests.story import Story

KINDS = ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")


@pytest.fixture
def operator_by_name(kubeconfig: Path, private_namespace: str, kube: Kube, tmp_path: Path
                     ) -> Iterator[str]:
    """An operator run for ``private_namespace`` by name; its metrics' address."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = OperatorProcess(kubeconfig, tmp_path, ["--namespace", private_namespace,
                                                  "--metrics-port", str(port),
                                                  "--metrics-address", "127.0.0.1"])
    proc.start()
    yield f"http://127.0.0.1:{port}"
    proc.stop()
    for kind in KINDS:
        kube.delete(kind, None, webhook_configuration_name([private_namespace], None))


def _children_reviews(base: str) -> float:
    return value(samples(base), "pilotboat_admission_review_duration_seconds_count",
                 webhook="microservice-children")


def test_an_operator_watching_a_namespace_by_name_is_asked_about_that_namespace_alone(
    operator_by_name: str, kube: Kube, private_namespace: str, namespace: str,
) -> None:
    base = operator_by_name
    name = webhook_configuration_name([private_namespace], None)
    selector = {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In",
                                      "values": [private_namespace]}]}
    watched, elsewhere = Story(kube, private_namespace), Story(kube, namespace)
    for kind in KINDS:
        found = watched.wait_for(kind, name, lambda o: o is not None, what="registered")
        assert found is not None
        for hook in found["webhooks"]:
            assert hook["namespaceSelector"] == selector, hook["name"]
            assert "watched-namespaces" not in {c["name"] for c in hook.get("matchConditions", [])}
    deadline, version = time.monotonic() + 60, 0
    while _children_reviews(base) == 0:  # until the API server uses the new configuration
        assert time.monotonic() < deadline, "the children webhook was never called"
        version += 1
        watched.apply(microservice("warm", version=f"v{version}", replicas=0))
        time.sleep(0.5)

    def reviews_of(create: Callable[[], object]) -> float:
        before = _children_reviews(base)
        create()
        time.sleep(1)  # a review the API server would make is answered before the write returns
        return _children_reviews(base) - before

    assert reviews_of(lambda: elsewhere.given(microservice("elsewhere", replicas=0))) == 0
    assert reviews_of(lambda: watched.given(microservice("here", replicas=0))) == 1
