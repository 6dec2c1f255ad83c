"""The contract gate on the local control plane: a breaking provider release waits with the
violations and the consumers they break, goes once the contract is fixed, and a deliberate
break goes with an override stamped with the identity the API server saw."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from tests.manifests import microservice
from tests.story import Story

pytestmark = pytest.mark.usefixtures("operator")

CONTRACTS = Path(__file__).resolve().parents[2] / "examples" / "contracts"
ALLOW = "pilotboat.dev/allow-breaking-change"
ALLOWED_BY = "pilotboat.dev/allow-breaking-change-by"


def orders(version: str, document: str, annotations: dict[str, str] | None = None) -> Any:
    inline = (CONTRACTS / document).read_text()
    body = microservice("orders", version=version, api={"openapi": {"inline": inline}})
    if annotations:
        body["metadata"]["annotations"] = annotations
    return body


PAYMENTS = microservice("payments", api={"consumes": [{
    "service": "orders", "operations": ["getOrder"],
    "responseFields": ["id", "status", "totalCents"]}]})  # fmt: skip


def condition(ms: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for c in ((ms or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            return dict(c)
    return {}


def healthy_at(version: str):  # type: ignore[no-untyped-def]
    def check(ms: dict[str, Any] | None) -> bool:
        status = (ms or {}).get("status") or {}
        return status.get("phase") == "Healthy" and status.get("stableVersion") == version

    return check


def test_a_breaking_release_waits_until_its_contract_is_fixed(story: Story) -> None:
    story.given(PAYMENTS, orders("v1", "orders-v1.yaml"))
    ms = story.wait_for("Microservice", "orders", healthy_at("v1"), timeout=90, what="v1")
    assert condition(ms, "ContractCompatible")["status"] == "True"
    records = [c["metadata"]["name"] for c in story.kube.list("ConfigMap", story.namespace)
               if c["metadata"]["name"].startswith("orders-contract-")]  # fmt: skip
    assert len(records) == 1

    story.apply(orders("v2", "orders-v2-breaking.yaml"))
    ms = story.wait_for(
        "Microservice", "orders",
        lambda m: condition(m, "ContractCompatible").get("reason") == "BreakingChange",
        timeout=60, what="blocked by its contract",
    )  # fmt: skip
    message = condition(ms, "ContractCompatible")["message"]
    assert "operation-removed at DELETE /orders/{id}" in message
    assert "response-field-removed at GET /orders/{id} response.totalCents" in message
    assert "breaks payments" in message
    stable = story.get("Deployment", "orders")
    assert stable is not None
    assert stable["metadata"]["labels"]["app.kubernetes.io/version"] == "v1"
    assert "ContractBroken" in [e["reason"] for e in story.events("orders")]

    story.apply(orders("v2", "orders-v2.yaml"))
    ms = story.wait_for("Microservice", "orders", healthy_at("v2"), timeout=90, what="v2")
    assert condition(ms, "ContractCompatible")["reason"] == "Compatible"


def test_an_override_lets_a_break_through_and_records_who_allowed_it(story: Story) -> None:
    story.given(PAYMENTS, orders("v1", "orders-v1.yaml"))
    story.wait_for("Microservice", "orders", healthy_at("v1"), timeout=90, what="v1")
    forged = json.dumps({"username": "mallory", "reason": "trust me", "version": "v2"})
    story.apply(orders("v2", "orders-v2-breaking.yaml", {
        ALLOW: "DELETE /orders/{id} retired with the admin UI", ALLOWED_BY: forged}))  # fmt: skip
    ms = story.wait_for("Microservice", "orders", healthy_at("v2"), timeout=90, what="v2")
    assert ms is not None
    stamp = json.loads(ms["metadata"]["annotations"][ALLOWED_BY])
    assert stamp["username"] and stamp["username"] != "mallory"
    assert stamp["version"] == "v2" and stamp["reason"].startswith("DELETE /orders/{id}")
    cond = condition(ms, "ContractCompatible")
    assert cond["reason"] == "BreakingChangeAllowed" and stamp["username"] in cond["message"]
    allowed = [e for e in story.events("orders") if e["reason"] == "BreakingChangeAllowed"]
    assert allowed and "breaks payments" in allowed[0]["message"]
    record = next(c for c in story.kube.list("ConfigMap", story.namespace)
                  if c["metadata"]["name"].startswith("orders-contract-")
                  and ALLOWED_BY in (c["metadata"].get("annotations") or {}))  # fmt: skip
    assert json.loads(record["metadata"]["annotations"][ALLOWED_BY]) == stamp

    # the stamp is the API server's word: a client cannot rewrite it
    with pytest.raises(ApiException) as refused:
        story.patch("Microservice", "orders",
                    {"metadata": {"annotations": {ALLOWED_BY: forged}}})  # fmt: skip
    assert refused.value.status == 403
