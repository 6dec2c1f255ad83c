"""How a refused child is reported, and how attempts to write it back off."""

from __future__ import annotations

import json

from kubernetes.client.exceptions import ApiException

from pilotboat.api import MicroserviceSpec
from pilotboat.handlers.children import ChildBackoff, child_refusal

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
