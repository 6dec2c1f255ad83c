"""The shop's own manifests run under the Pod Security Standard ``restricted``.

Each shop Microservice's pod, rendered by the operator's own code from examples/shop/*.yaml
(its database credentials and flag file included), is created as a server-side dry run in a
namespace whose Pod Security admission enforces ``restricted``: the API server, not a check
of ours, says whether it passes. The demo's namespace enforces the same level, so the demo
(tests/e2e/test_demo.py) runs these pods for real under it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from pilotboat.api.microservice import MicroserviceSpec
from pilotboat.core.database_env import database_env
from pilotboat.core.workload import Owner, render_deployment
from tests.story import Story

SHOP = Path(__file__).resolve().parents[2] / "examples" / "shop"
SERVICES = ("catalog", "inventory", "orders", "payments", "shipping", "notifications")
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted",
              "pod-security.kubernetes.io/enforce-version": "latest"}


def shop_spec(service: str) -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all((SHOP / f"{service}.yaml").read_text()) if d]
    return next(d["spec"] for d in docs if d["kind"] == "Microservice")


def rendered_pod(story: Story, service: str, spec: dict[str, Any]) -> dict[str, Any]:
    owner = Owner(name=service, namespace=story.namespace, uid="0" * 8)
    deployment = render_deployment(
        owner, MicroserviceSpec.model_validate(spec), track="stable", replicas=1,
        extra_env=database_env(f"pilotboat-db-{service}-db"))
    template = deployment["spec"]["template"]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{service}-restricted", "namespace": story.namespace,
                         "labels": template["metadata"]["labels"]},
            "spec": template["spec"]}


@pytest.fixture
def restricted(story: Story) -> Story:
    story.kube.merge_patch("Namespace", None, story.namespace, {"metadata": {"labels": RESTRICTED}})
    return story


@pytest.mark.parametrize("service", SERVICES)
def test_each_shop_pod_passes_restricted_pod_security(restricted: Story, service: str) -> None:
    pod = rendered_pod(restricted, service, shop_spec(service))
    admitted = restricted.kube.apply(pod, dry_run=True)
    assert admitted["spec"]["securityContext"]["runAsNonRoot"] is True


def test_without_its_pod_template_a_shop_pod_is_refused(restricted: Story) -> None:
    """The control: the same service with the manifest's template taken away is refused by
    the same admission, naming what the restricted level wants."""
    spec = shop_spec("orders")
    spec.pop("template")
    with pytest.raises(ApiException) as refused:
        restricted.kube.apply(rendered_pod(restricted, "orders", spec), dry_run=True)
    assert refused.value.status == 403
    message = json.loads(refused.value.body)["message"]
    assert 'violates PodSecurity "restricted:latest"' in message
    assert "runAsNonRoot" in message
