"""Analysis queries that would not run are refused at admission, naming the field: a template
variable the operator does not provide, and rendered PromQL that does not parse
(the ``microservice-queries`` and ``rolloutpolicy-queries`` webhooks)."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from pilotboat import API_VERSION
from tests.manifests import microservice
from tests.story import Story

pytestmark = pytest.mark.usefixtures("operator")

TYPO = 'sum(rate(http_requests_total{service="{{ servise }}"}[{{ interval }}]))'
UNCLOSED = 'sum(rate(http_requests_total{service="{{ service }}"}[{{ interval }}])'
GOOD = 'sum(rate(http_requests_total{service="{{ service }}"}[{{ interval }}]))'


def canary(query: str) -> dict[str, Any]:
    return {"canary": {"steps": [{"setWeight": 20}, {"analysis": {"intervals": 1}}],
                       "analysis": {"signals": {"errors": {"maxRatio": 0.05, "query": query}}}}}


def policy(name: str, query: str) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "RolloutPolicy", "metadata": {"name": name},
            "spec": {"steps": [{"analysis": {"intervals": 1}}],
                     "analysis": {"signals": {"traffic": {"minRate": 1, "query": query}}}}}


def create(story: Story, manifest: dict[str, Any]) -> None:
    metadata = {**manifest["metadata"], "namespace": story.namespace}
    story.kube.create({**manifest, "metadata": metadata})


def test_a_misspelt_template_variable_is_refused_naming_the_field(story: Story) -> None:
    with pytest.raises(ApiException) as refused:
        create(story, microservice("cart", rollout=canary(TYPO)))
    assert refused.value.status == 422, refused.value.body
    assert (
        "Microservice refused: spec.rollout.canary.analysis.signals.errors.query: unknown "
        "template variable 'servise' (known: interval, namespace, revision, service, version; "
        "did you mean 'service'?)"
    ) in str(refused.value.body)
    assert story.get("Microservice", "cart") is None


def test_promql_that_does_not_parse_is_refused_naming_the_field(story: Story) -> None:
    with pytest.raises(ApiException) as refused:
        create(story, policy("standard", UNCLOSED))
    assert refused.value.status == 422, refused.value.body
    assert (
        "RolloutPolicy refused: spec.analysis.signals.traffic.query: PromQL parse error at "
        "1:4: unclosed left parenthesis"
    ) in str(refused.value.body)
    assert story.get("RolloutPolicy", "standard") is None


def test_good_queries_are_admitted_and_a_fix_goes_through(story: Story) -> None:
    story.given(policy("standard", GOOD), microservice("cart", rollout=canary(GOOD)))
    with pytest.raises(ApiException) as refused:
        story.patch("Microservice", "cart", {"spec": {"rollout": canary(TYPO)}})
    assert refused.value.status == 422, refused.value.body
    ms = story.get("Microservice", "cart")
    assert ms is not None
    assert ms["spec"]["rollout"]["canary"]["analysis"]["signals"]["errors"]["query"] == GOOD
