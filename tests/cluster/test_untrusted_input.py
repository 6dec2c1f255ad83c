"""Limits on untrusted input on the local control plane (issue 13): a contract that is a YAML
alias bomb, a FeatureFlag whose targeting nests 2 000 deep and a query template that builds a
gigabyte are each refused, or reported with a condition naming the limit, within seconds,
while a Microservice in another namespace becomes Ready as if nothing happened."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from pilotboat import API_VERSION
from pilotboat.adapters.kube import Kube, resource_for
from tests.conftest import _make_namespace
from tests.core.test_limits import alias_bomb
from tests.manifests import microservice
from tests.story import Story

pytestmark = pytest.mark.usefixtures("operator")

FEW_SECONDS = 15.0  # from the write to the refusal, with a loaded machine's margin


@pytest.fixture
def bystander(kube: Kube, request: pytest.FixtureRequest) -> Iterator[Story]:
    """A second namespace the shared operator watches, with an ordinary service in it."""
    name = _make_namespace(kube, request, "t")
    yield Story(kube, name)
    kube.delete("Namespace", None, name)


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            return dict(c)
    return {}


def ready(story: Story, name: str) -> None:
    story.wait_condition("Microservice", name, "Ready", timeout=120)


def test_a_contract_alias_bomb_is_refused_naming_the_limit(story: Story, bystander: Story) -> None:
    bystander.given(microservice("catalog"))
    started = time.monotonic()
    story.given(microservice("payments", api={"openapi": {"inline": alias_bomb()}}))
    ms = story.wait_for(
        "Microservice", "payments",
        lambda m: condition(m, "ContractCompatible").get("reason") == "ContractUnreadable",
        timeout=FEW_SECONDS, what="refused for its contract",
    )  # fmt: skip
    took = time.monotonic() - started
    message = condition(ms, "ContractCompatible")["message"]
    assert message == (
        "v1's contract cannot be read: spec.api.openapi.inline: more than 100000 values once "
        "YAML aliases are expanded (limit MAX_DOCUMENT_NODES = 100000)"
    )
    print(f"alias bomb: ContractUnreadable {took:.2f}s after it was applied")
    ready(bystander, "catalog")


def apply_raw(kube: Kube, kind: str, namespace: str, name: str, text: str) -> tuple[int, str]:
    """Server-side apply of a manifest given as JSON text: the Python client cannot write
    (nor read) JSON nested this deep, so the text goes as it is, and only a refusal is read."""
    api = kube.api_client
    path = resource_for(kind).path(namespace, name)
    method, url, headers, body, post = api.param_serialize(
        method="PATCH",
        resource_path=path,
        query_params=[("fieldManager", "pilotboat-tests"), ("force", "true")],
        header_params={"Accept": "application/json",
                       "Content-Type": "application/apply-patch+yaml"},
        body=text,
        auth_settings=["BearerToken"],
    )  # fmt: skip
    response = api.call_api(method, url, header_params=headers, body=body, post_params=post,
                            _request_timeout=30)  # fmt: skip
    response.read()
    data = (response.data or b"").decode(errors="replace")
    if response.status >= 300:
        return response.status, str(json.loads(data).get("message"))
    return response.status, ""


def deep_flag(levels: int) -> str:
    rule = '{"if":[{"var":"beta"},' * levels + '"on"' + ',"off"]}' * levels
    return (
        '{"apiVersion":"' + API_VERSION + '","kind":"FeatureFlag","metadata":{"name":"deep"},'
        '"spec":{"variants":{"on":true,"off":false},"defaultVariant":"off","targeting":'
        + rule + "}}"
    )


def test_a_flag_targeting_2000_deep_is_refused_at_admission(
    story: Story, bystander: Story
) -> None:
    bystander.given(microservice("catalog"))
    started = time.monotonic()
    status, message = apply_raw(story.kube, "FeatureFlag", story.namespace, "deep", deep_flag(2000))
    took = time.monotonic() - started
    assert status >= 400, "the API server stored a FeatureFlag nested 2000 deep"
    assert (
        "FeatureFlag refused: spec.targeting: nested more than 64 levels deep "
        "(limit MAX_TARGETING_DEPTH = 64)"
    ) in message
    assert story.get("FeatureFlag", "deep") is None
    print(f"deep targeting: refused at admission in {took:.2f}s")
    assert took < FEW_SECONDS

    # admission goes on answering at once
    started = time.monotonic()
    fine = {"variants": {"on": True, "off": False}, "defaultVariant": "off"}
    story.given({"apiVersion": API_VERSION, "kind": "FeatureFlag", "metadata": {"name": "fine"},
                 "spec": fine})  # fmt: skip
    print(f"an ordinary FeatureFlag admitted in {time.monotonic() - started:.2f}s")
    story.wait_condition("FeatureFlag", "fine", "Valid", timeout=30)
    ready(bystander, "catalog")


BOMB = "{{ 'x' * 10**9 }}"


def test_a_query_template_bomb_pauses_the_analysis_naming_the_limit(
    story: Story, bystander: Story
) -> None:
    story.given({
        "apiVersion": API_VERSION, "kind": "RolloutPolicy", "metadata": {"name": "bombed"},
        "spec": {
            "steps": [{"analysis": {"intervals": 1}}],
            "analysis": {"interval": "10s",
                         "signals": {"errors": {"maxRatio": 0.05, "query": BOMB}}},
        },
    })  # fmt: skip
    story.given(microservice("cart", rollout={"rolloutPolicyRef": "bombed"}))
    ready(story, "cart")  # the first version needs no analysis
    bystander.given(microservice("catalog"))

    started = time.monotonic()
    story.apply(microservice("cart", version="v2", rollout={"rolloutPolicyRef": "bombed"}))
    ms = story.wait_for(
        "Microservice", "cart",
        lambda m: "MAX_TEMPLATE_OUTPUT" in ((m or {}).get("status") or {}).get("pauseReason", ""),
        timeout=FEW_SECONDS, what="paused by its query template",
    )  # fmt: skip
    took = time.monotonic() - started
    assert ms is not None
    assert ms["status"]["phase"] == "Paused"
    assert ms["status"]["pauseReason"] == (
        "step 1/1 (analysis): analysis.signals.errors.query: query template: 'x' * 1000000000 "
        "would be 1000000000 characters long, more than 65536 (limit MAX_TEMPLATE_OUTPUT = 65536)"
    )
    assert condition(ms, "Paused")["status"] == "True"
    assert ms["status"]["stableVersion"] == "v1"
    print(f"Jinja bomb: Paused {took:.2f}s after v2 was applied")
    ready(bystander, "catalog")
