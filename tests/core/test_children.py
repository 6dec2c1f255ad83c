"""How a refused child is reported, and how attempts to write it back off."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kubernetes.client.exceptions import ApiException

from pilotboat.api import MicroserviceSpec
from pilotboat.core.workload import Owner
from pilotboat.handlers.children import ChildBackoff, child_refusal, dry_run_children
from pilotboat.handlers.webhooks import ADMISSION_WORKERS
from pilotboat.testing import FakeKube

SPEC = MicroserviceSpec.model_validate(
    {"image": "shop/orders:1", "version": "v1", "env": [{"name": "1BAD", "value": "x"}]}
)
DEPLOYMENT = {"kind": "Deployment", "metadata": {"name": "orders"}}


def refused(status: int, body: dict[str, object]) -> ApiException:
    exc = ApiException(status=status, reason="Unprocessable Entity")
    exc.body = json.dumps(body)
    return exc


def test_each_cause_is_named_by_the_microservice_field() -> None:
    exc = refused(422, {"message": "Deployment.apps \"orders\" is invalid", "details": {
        "causes": [{"reason": "FieldValueInvalid", "field":
                    "spec.template.spec.containers[0].env[0].name",
                    "message": "Invalid value: \"1BAD\": a valid environment variable name"},
                   {"reason": "FieldValueInvalid", "field": "spec.selector",
                    "message": "Invalid value: selector does not match"}]}})

    refusal = child_refusal(exc, DEPLOYMENT, SPEC)

    assert refusal is not None
    assert (refusal.kind, refusal.name) == ("Deployment", "orders")
    assert "spec.env[0].name: Invalid value: \"1BAD\"" in refusal.message
    assert "Deployment field spec.selector: Invalid value" in refusal.message


def test_a_refusal_without_causes_keeps_the_api_servers_message() -> None:
    exc = refused(400, {"message": "quantities must match the regular expression"})
    refusal = child_refusal(exc, DEPLOYMENT, SPEC)
    assert refusal is not None and "quantities must match" in refusal.message


def test_a_patch_server_side_apply_cannot_build_is_a_refusal_too() -> None:
    exc = refused(500, {"message": 'failed to create typed patch object (shop/orders; apps/v1, '
                        'Kind=Deployment): .spec.template.spec.containers[name="app"].ports: '
                        'duplicate entries for key [containerPort=8080,protocol="TCP"]'})
    refusal = child_refusal(exc, DEPLOYMENT, SPEC)
    assert refusal is not None
    assert "spec.ports: duplicate entries for key [containerPort=8080" in refusal.message


def test_outages_and_conflicts_are_not_refusals() -> None:
    for status in (401, 403, 409, 500, 503):
        assert child_refusal(refused(status, {}), DEPLOYMENT, SPEC) is None


def test_attempts_back_off_doubling_and_start_over_on_a_new_generation() -> None:
    backoff = ChildBackoff(first=5, longest=60)
    assert backoff.wait("u", 1, now=0) is None
    delays = [backoff.failed("u", 1, now=t) for t in (0, 5, 15, 35, 75, 135)]
    assert delays == [5, 10, 20, 40, 60, 60]
    assert backoff.wait("u", 1, now=140) == 55
    assert backoff.wait("u", 2, now=140) is None  # the user changed the spec: try at once
    assert backoff.failed("u", 2, now=140) == 5
    backoff.succeeded("u")
    assert backoff.wait("u", 2, now=141) is None


VALID = MicroserviceSpec.model_validate({"image": "shop/orders:1", "version": "v1"})
OWNER = Owner("orders", "shop", "uid-orders")


class Meeting:
    """A Kube whose dry runs wait at `together` (a barrier that breaks unless as many are
    asked at once as it has parties), then answer as `kube` does."""

    def __init__(self, kube: FakeKube, together: threading.Barrier) -> None:
        self.kube = kube
        self.together = together
        self.asked: list[str] = []

    def apply(self, obj: dict[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
        assert dry_run
        self.asked.append(obj["kind"])
        self.together.wait()
        return self.kube.apply(obj, dry_run=True)

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.kube.get(kind, namespace, name)


def test_admission_asks_for_the_deployment_and_service_side_by_side_and_stores_nothing() -> None:
    kube = FakeKube()
    side_by_side = Meeting(kube, threading.Barrier(2, timeout=5))

    assert dry_run_children(side_by_side, OWNER, VALID) is None  # type: ignore[arg-type]
    assert sorted(side_by_side.asked) == ["Deployment", "Service"]
    assert kube.writes == [] and kube.list("Deployment") == kube.list("Service") == []


def test_every_review_the_admission_pool_runs_at_once_asks_for_both_children_at_once() -> None:
    reviews = ADMISSION_WORKERS
    all_at_once = Meeting(FakeKube(), threading.Barrier(2 * reviews, timeout=5))

    with ThreadPoolExecutor(max_workers=reviews) as admission:
        answers = list(admission.map(
            lambda i: dry_run_children(all_at_once, Owner(f"s{i}", "shop", ""), VALID),  # type: ignore[arg-type]
            range(reviews)))  # fmt: skip

    assert answers == [None] * reviews
    assert not all_at_once.together.broken
    assert sorted(all_at_once.asked) == ["Deployment"] * reviews + ["Service"] * reviews


def test_when_both_children_are_refused_the_deployments_refusal_is_the_answer() -> None:
    kube = FakeKube()
    kube.refuse("Deployment", "orders", 422, "the Deployment is invalid")
    kube.refuse("Service", "orders", 422, "the Service is invalid")

    refusal = dry_run_children(kube, OWNER, VALID)

    assert refusal is not None and refusal.kind == "Deployment"
    kube = FakeKube()
    kube.refuse("Service", "orders", 422, "the Service is invalid")
    refusal = dry_run_children(kube, OWNER, VALID)
    assert refusal is not None and refusal.kind == "Service"
