"""Children the API server refuses: refused at admission naming the Microservice's field, or,
where admission did not run, ``Ready=False ChildRejected`` with the API server's message and
retries that back off."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from pilotboat.adapters.kube import Kube
from pilotboat.api import MicroserviceSpec
from pilotboat.core.workload import Owner, render_deployment, render_service
from pilotboat.handlers.children import CREATE_ONLY, create_only
from pilotboat.testing import OperatorProcess
from tests.manifests import microservice
from tests.story import Story


def _without_image(manifest: dict[str, Any]) -> dict[str, Any]:
    return {**manifest, "spec": {k: v for k, v in manifest["spec"].items() if k != "image"}}


# Each (but the image) passes the CRD's schema; the Deployment or Service it renders does
# not pass the API server's validation.
INVALID_CHILDREN: dict[str, tuple[dict[str, Any], str, str]] = {
    "service-name": (microservice("orders.v2"), "metadata.name", "DNS-1035"),
    "duplicate-port": (
        microservice("orders", ports=[{"name": "http", "port": 8080},
                                      {"name": "web", "port": 8080}]),
        "spec.ports", "duplicate entries",
    ),
    "env-name": (microservice("orders", env=[{"name": "A=B", "value": "x"}]),
                 "spec.env[0].name", "Invalid value"),
    "resource-quantity": (
        microservice("orders", resources={"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}),
        "spec.resources.requests", "must be less than or equal to cpu limit",
    ),
    # Kubernetes takes any image string; the CRD holds it to the reference grammar.
    "image-reference": (microservice("orders", image=" localhost/pilotboat/echo:v1"),
                        "spec.image", "should match"),
    "probe-port": (microservice("orders", readinessProbe={"port": 70000}),
                   "spec.readinessProbe.port", "between 1 and 65535"),
    # A full pod template: the API server's word, at the template's own path.
    "template-port": (
        microservice("orders", image=None, template={"spec": {"containers": [{
            "name": "orders", "image": "localhost/pilotboat/echo:v1",
            "ports": [{"name": "admin", "containerPort": 70000}]}]}}),
        "spec.template.spec.containers[0].ports[0].containerPort", "between 1 and 65535",
    ),
    "template-sidecar-field": (
        microservice("orders", template={"spec": {"containers": [
            {"name": "orders"},
            {"name": "sidecar", "image": "localhost/pilotboat/echo:v1", "imagee": "typo"}]}}),
        "spec.template.spec.containers[1].imagee", "not declared in schema",
    ),
    "no-image": (
        _without_image(microservice("orders")),
        "spec.image", "required unless spec.template.spec.containers[0].image is set",
    ),
    "template-container-name": (
        microservice("orders", template={"spec": {"containers": [{"image": "x:1"}]}}),
        "spec.template.spec.containers[0].name", "required",
    ),
    "template-volume": (
        microservice("orders", template={"spec": {"volumes": [{"name": "Bad_Name",
                                                               "emptyDir": {}}]}}),
        "spec.template.spec.volumes[0].name", "Invalid value",
    ),
}


@pytest.mark.usefixtures("operator")
@pytest.mark.parametrize("case", sorted(INVALID_CHILDREN))
def test_admission_refuses_a_microservice_whose_children_the_api_server_would_refuse(
    story: Story, case: str
) -> None:
    manifest, field, words = INVALID_CHILDREN[case]
    with pytest.raises(ApiException) as refused:
        story.given(manifest)
    body = str(refused.value.body)
    assert refused.value.status == 422, body
    assert f"{field}: " in body and words in body, body
    assert story.get("Microservice", manifest["metadata"]["name"]) is None


@pytest.mark.usefixtures("operator")
def test_a_valid_microservice_is_admitted_and_nothing_is_left_by_the_dry_run(
    story: Story,
) -> None:
    story.given(microservice("orders", replicas=1))
    story.wait_condition("Microservice", "orders", "Ready", timeout=90)
    assert len(story.kube.list("Deployment", story.namespace)) == 1


def _rejection_delays(own: OperatorProcess, namespace: str) -> list[float]:
    return [
        float(r["retry_in"])
        for r in own.log_records()
        if r.get("reason") == "ChildRejected" and "retry_in" in r
        and (r.get("object") or {}).get("namespace") == namespace
    ]


def test_a_child_refused_after_admission_is_reported_and_retried_with_back_off(
    kube: Kube, private_namespace: str, kubeconfig: Path, tmp_path: Path
) -> None:
    # No webhook covers this namespace (the operator below serves none), as when the
    # Microservice was created while no operator ran.
    story = Story(kube, private_namespace)
    story.given(microservice("orders", replicas=1, env=[{"name": "A=B", "value": "x"}]))
    own = OperatorProcess(kubeconfig, tmp_path, ["--namespace", private_namespace,
                                                 "--no-webhooks"])
    own.start()
    try:
        ms = story.wait_for(
            "Microservice", "orders",
            lambda o: any(c["type"] == "Ready" and c["reason"] == "ChildRejected"
                          for c in ((o or {}).get("status") or {}).get("conditions") or []),
            timeout=30, what="Ready=False ChildRejected",
        )
        assert ms is not None
        ready = next(c for c in ms["status"]["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "False"
        assert "spec.env[0].name: Invalid value: \"A=B\"" in ready["message"], ready
        assert any(e["reason"] == "ChildRejected" and e["type"] == "Warning"
                   for e in story.events("orders"))
        assert story.get("Deployment", "orders") is None

        deadline = time.monotonic() + 40
        while len(_rejection_delays(own, private_namespace)) < 3 and time.monotonic() < deadline:
            time.sleep(1)
        delays = _rejection_delays(own, private_namespace)
        assert delays[:3] == [5.0, 10.0, 20.0], delays

        # The user fixes the field: the new generation is tried at once and converges.
        story.patch("Microservice", "orders", {"spec": {"env": [{"name": "A", "value": "x"}]}})
        story.wait_condition("Microservice", "orders", "Ready", timeout=90)
    finally:
        own.stop()


def _foreign_deployment(name: str) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels},
            "spec": {"containers": [{"name": "other", "image": "someone/else:1"}],
                     "nodeSelector": {"type": "kwok"},
                     "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Equal",
                                      "value": "fake", "effect": "NoSchedule"}]}}},
    }


@pytest.mark.usefixtures("operator")
@pytest.mark.parametrize("foreign", ["web", "web-canary"])
def test_a_foreign_object_with_a_childs_name_is_never_adopted_changed_or_deleted(
    story: Story, foreign: str
) -> None:
    story.given(_foreign_deployment(foreign))
    before = story.get("Deployment", foreign)
    assert before is not None

    story.given(microservice("web", replicas=1))
    ms = story.wait_for(
        "Microservice", "web",
        lambda o: any(c["type"] == "Ready" and c["reason"] == "ChildNotOwned"
                      for c in ((o or {}).get("status") or {}).get("conditions") or []),
        timeout=60, what="Ready=False ChildNotOwned",
    )
    assert ms is not None
    ready = next(c for c in ms["status"]["conditions"] if c["type"] == "Ready")
    assert f"Deployment {foreign} exists and is not controlled by Microservice web" in \
        ready["message"]
    time.sleep(3)  # room for a wrong write to show
    after = story.get("Deployment", foreign)
    assert after is not None
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    assert after["spec"]["template"] == before["spec"]["template"]
    assert not after["metadata"].get("ownerReferences")
    assert all(m["manager"] != "pilotboat" for m in after["metadata"]["managedFields"])
    assert any(e["reason"] == "ChildNotOwned" for e in story.events("web"))


@pytest.mark.parametrize("kind", ["Deployment", "Service"])
def test_a_create_only_apply_creates_and_never_writes_over_an_existing_object(
    kube: Kube, private_namespace: str, kind: str
) -> None:
    """What the operator's writes of a child it observed absent rely on: the real API server
    creates the object from a server-side apply carrying `CREATE_ONLY`, and refuses the same
    apply (409) once an object of that name exists, leaving it as it was."""
    spec = MicroserviceSpec.model_validate(microservice("web", replicas=1)["spec"])
    owner = Owner("web", private_namespace, "")
    child = (render_deployment(owner, spec, track="stable", replicas=1) if kind == "Deployment"
             else render_service(owner, spec))  # fmt: skip
    child["metadata"].pop("ownerReferences", None)
    made = kube.apply(create_only(child))
    assert made["metadata"]["resourceVersion"] != CREATE_ONLY
    with pytest.raises(ApiException) as refused:
        kube.apply(create_only({**child, "metadata": {**child["metadata"],
                                                     "labels": {"changed": "yes"}}}))
    assert refused.value.status == 409
    after = kube.get(kind, private_namespace, "web")
    assert after is not None
    assert after["metadata"]["uid"] == made["metadata"]["uid"]
    assert after["metadata"].get("generation") == made["metadata"].get("generation")
    assert "changed" not in (after["metadata"].get("labels") or {})
    assert [m["manager"] for m in after["metadata"]["managedFields"]
            if m["operation"] == "Apply"] == ["pilotboat-tests"]  # fmt: skip
