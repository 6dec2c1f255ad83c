"""Adopting an existing Deployment: the scale-down plan and the hand-back, as table rows."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from pilotboat.api import MicroserviceSpec
from pilotboat.core.adoption import (
    ANNOTATION_ADOPTED_BY,
    ANNOTATION_ADOPTED_REPLICAS,
    adoption_problem,
    hand_back,
    plan_adoption,
)


def original(
    replicas: int | None = 3,
    *,
    recorded: int | None = None,
    by: str | None = None,
    ready: int = 0,
    labels: dict[str, str] | None = None,
    selector: dict[str, str] | None = None,
    owners: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    annotations = {}
    if by is not None:
        annotations[ANNOTATION_ADOPTED_BY] = by
    if recorded is not None:
        annotations[ANNOTATION_ADOPTED_REPLICAS] = str(recorded)
    spec: dict[str, Any] = {"selector": {"matchLabels": selector or {"app": "web"}}}
    if replicas is not None:
        spec["replicas"] = replicas
    return {
        "metadata": {"name": "web", "resourceVersion": "7", "annotations": annotations,
                     "labels": labels or {}, "ownerReferences": owners or []},
        "spec": spec,
        "status": {"readyReplicas": ready},
    }


# (original replicas, recorded, Microservice ready, wanted) -> replicas the original is left with
@pytest.mark.parametrize(
    ("current", "recorded", "ready", "wanted", "left"),
    [
        (3, None, 0, 3, 3),  # adopting: nothing ready yet, nothing taken away
        (3, 3, 1, 3, 2),  # one ready, one fewer
        (2, 3, 1, 3, 2),  # already there: no write
        (2, 3, 2, 3, 1),
        (1, 3, 3, 3, 0),  # all wanted ready: to 0
        (0, 3, 3, 3, 0),
        (2, 3, 1, 3, 2),
        (2, 3, 0, 3, 2),  # a Microservice pod fell out: never scaled back up while adopted
        (5, 3, 1, 3, 2),  # someone scaled the original up: down to recorded - ready
        (3, 3, 1, 1, 0),  # the Microservice wants fewer: once they are ready, the rest go
        (3, 3, 2, 5, 1),  # the Microservice wants more: one for one until recorded
        (4, 4, 4, 6, 0),
        (None, None, 1, 1, 0),  # replicas unset means 1
        (0, None, 0, 2, 0),  # adopting a Deployment at 0
        (3, 3, 0, 0, 3),  # a Microservice scaled to 0 takes nothing away
    ],
)
def test_the_original_is_scaled_down_one_for_each_ready_pod(
    current: int | None, recorded: int | None, ready: int, wanted: int, left: int
) -> None:
    dep = original(current, recorded=recorded, by="web" if recorded is not None else None)
    step = plan_adoption(dep, service="web", ready=ready, wanted=wanted)
    assert step.replicas == left
    before = 1 if current is None else current
    assert step.replicas <= before
    # never fewer ready pods than before: what is left plus what is ready covers the record
    # (unless the Microservice's pods fell out by themselves: the original is not scaled up)
    record = recorded if recorded is not None else before
    if before + ready >= record:
        assert left + ready >= min(record, wanted)
    patched = (step.patch or {}).get("spec", {}).get("replicas")
    assert patched == (left if left != before else None)


def test_the_first_write_records_who_adopted_it_and_its_replicas() -> None:
    step = plan_adoption(original(3), service="web", ready=0, wanted=3)
    assert step.patch == {"metadata": {
        "annotations": {ANNOTATION_ADOPTED_BY: "web", ANNOTATION_ADOPTED_REPLICAS: "3"},
        "resourceVersion": "7"}}
    again = plan_adoption(original(3, recorded=3, by="web"), service="web", ready=0, wanted=3)
    assert again.patch is None


def test_scale_down_never_leaves_the_original_alone() -> None:
    step = plan_adoption(original(3, recorded=3, by="web"), service="web", ready=3, wanted=3,
                         scale_down="never")
    assert step.patch is None and step.replicas == 3


@pytest.mark.parametrize(
    ("dep", "field_text"),
    [
        (None, "spec.workloadRef.name: Deployment web does not exist in namespace shop"),
        (original(labels={"app.kubernetes.io/managed-by": "pilotboat"}), "is run by the operator"),
        (original(owners=[{"kind": "Microservice", "name": "x", "controller": True}]),
         "is run by the operator"),
        (original(owners=[{"kind": "Rollout", "name": "x", "controller": True}]),
         "is controlled by Rollout x"),
        (original(by="other", recorded=3), "is adopted by Microservice other"),
        (original(selector={"app.kubernetes.io/name": "shop-web"}),
         "selects app.kubernetes.io/name=shop-web"),
        (original(selector={"pilotboat.dev/track": "stable"}), "selects pilotboat.dev/track"),
    ],
)
def test_a_deployment_that_cannot_be_adopted_is_refused_naming_the_field(
    dep: dict[str, Any] | None, field_text: str
) -> None:
    problem = adoption_problem(dep, name="web", namespace="shop", service="web")
    assert problem is not None and problem.startswith("spec.workloadRef.name: ")
    assert field_text in problem


@pytest.mark.parametrize("dep", [
    original(), original(by="web", recorded=2),
    original(selector={"app": "web", "app.kubernetes.io/name": "web"}),
])
def test_an_own_deployment_can_be_adopted(dep: dict[str, Any]) -> None:
    assert adoption_problem(dep, name="web", namespace="shop", service="web") is None


@pytest.mark.parametrize(
    ("dep", "patch", "done"),
    [
        (None, None, True),
        (original(0), None, True),  # never adopted by this one
        (original(0, recorded=3, by="web"), {"spec": {"replicas": 3}}, False),
        (original(3, recorded=3, by="web", ready=2), None, False),  # waits for its pods
        (original(3, recorded=3, by="web", ready=3),
         {"metadata": {"annotations": {ANNOTATION_ADOPTED_BY: None,
                                       ANNOTATION_ADOPTED_REPLICAS: None}}}, True),
        (original(0, recorded=0, by="web"),
         {"metadata": {"annotations": {ANNOTATION_ADOPTED_BY: None,
                                       ANNOTATION_ADOPTED_REPLICAS: None}}}, True),
    ],
)
def test_deleting_the_microservice_hands_the_original_back_ready_first(
    dep: dict[str, Any] | None, patch: dict[str, Any] | None, done: bool
) -> None:
    back = hand_back(dep, service="web")
    assert (back.patch, back.done) == (patch, done)


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ({"version": "v1", "workloadRef": {"name": "web"}, "image": "app:1"}, "image: must be"),
        ({"version": "v1", "workloadRef": {"name": "web"},
          "template": {"spec": {"containers": [{"name": "a", "image": "a:1"}]}}},
         "template: must be"),
        ({"version": "v1", "workloadRef": {"name": "web", "kind": "StatefulSet"}}, "kind"),
        ({"version": "v1", "workloadRef": {"name": "web", "scaleDown": "onsuccess"}},
         "scaleDown"),
    ],
)
def test_a_workload_ref_takes_the_place_of_the_template(spec: dict[str, Any], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        MicroserviceSpec.model_validate(spec)


def test_a_workload_ref_alone_is_a_spec() -> None:
    spec = MicroserviceSpec.model_validate({"version": "v1", "workloadRef": {"name": "web"}})
    assert spec.workload_ref is not None
    assert (spec.workload_ref.kind, spec.workload_ref.scale_down) == ("Deployment",
                                                                      "progressively")
