"""The benchmark beside Argo Rollouts creates the same objects for both tools."""

from __future__ import annotations

import pytest
from bench.argo_rollouts import TOOLS

from pilotboat.api import MicroserviceSpec
from pilotboat.core.workload import Owner, render_service

pytestmark = pytest.mark.core


def test_an_argo_rollouts_app_is_the_service_a_microservice_renders_then_its_rollout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PILOTBOAT_BENCH_ARGO_SERVICES", raising=False)
    service, rollout = TOOLS["argo-rollouts"].app("svc-0001", "echo:v1", 1)
    (microservice,) = TOOLS["pilotboat"].app("svc-0001", "echo:v1", 1)

    spec = MicroserviceSpec.model_validate(microservice["spec"])
    rendered = render_service(Owner("svc-0001", "bench", "uid"), spec)
    assert service["kind"] == "Service" and rollout["kind"] == "Rollout"
    assert service["metadata"]["name"] == rendered["metadata"]["name"]
    assert service["spec"] == rendered["spec"]
    assert service["spec"]["selector"] == rollout["spec"]["selector"]["matchLabels"]


def test_without_services_an_argo_rollouts_app_is_its_rollout_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PILOTBOAT_BENCH_ARGO_SERVICES", "0")
    assert [o["kind"] for o in TOOLS["argo-rollouts"].app("svc-0001", "echo:v1", 1)] == [
        "Rollout"
    ]
