"""Canary releases on the local control plane: steps move replicas (and HTTPRoute weights),
pauses wait, people promote, abort and retry through the status subresource."""

from __future__ import annotations

import time
from typing import Any

import pytest
from click.testing import CliRunner

from pilotboat.cli.main import main as cli
from pilotboat.testing import OperatorProcess
from tests.manifests import microservice
from tests.story import Story, phase_is

pytestmark = pytest.mark.usefixtures("operator")

STEPS = [
    {"setWeight": 25},
    {"pause": {"duration": "2s"}},
    {"setWeight": 50},
    {"pause": {"untilPromoted": True}},
]


def canary_service(
    name: str,
    version: str,
    steps: list[dict[str, Any]] | None = None,
    replicas: int = 4,
    **extra: Any,
) -> dict[str, Any]:
    return microservice(
        name,
        version=version,
        replicas=replicas,
        rollout={"canary": {"steps": steps or STEPS}},
        **extra,
    )


def replicas(story: Story, name: str) -> tuple[int | None, int | None]:
    stable = story.get("Deployment", name)
    canary = story.get("Deployment", f"{name}-canary")
    return (
        stable["spec"]["replicas"] if stable else None,
        canary["spec"]["replicas"] if canary else None,
    )


def run_cli(story: Story, kubeconfig: Any, *args: str) -> str:
    result = CliRunner().invoke(
        cli, [*args, "-n", story.namespace, "--kubeconfig", str(kubeconfig)]
    )
    assert result.exit_code == 0, result.output
    return result.output


def release_v1_then_v2(story: Story, name: str, **extra: Any) -> None:
    story.given(canary_service(name, "v1", **extra))
    story.wait_for("Microservice", name, phase_is("Healthy"), timeout=90, what="Healthy at v1")
    story.apply(canary_service(name, "v2", **extra))


def test_replica_ratio_follows_the_steps_and_promotion_finishes_the_release(
    story: Story, kubeconfig: Any
) -> None:
    release_v1_then_v2(story, "payments")

    story.wait_for(
        "Microservice",
        "payments",
        lambda _: replicas(story, "payments") == (3, 1),
        timeout=60,
        what="at 25% (3 stable, 1 canary)",
    )
    ms = story.wait_for(
        "Microservice",
        "payments",
        phase_is("Paused", 3),
        timeout=90,
        what="paused at step 4 for promotion",
    )
    assert ms is not None
    assert ms["status"]["canaryWeight"] == 50
    assert ms["status"]["canaryVersion"] == "v2" and ms["status"]["stableVersion"] == "v1"
    # What the canary really receives: its share of the ready pods, 2 of 4
    story.wait_for("Microservice", "payments",
                   lambda o: (o or {})["status"].get("actualWeight") == 50, timeout=30,
                   what="actually at 50%")
    assert "kubectl pilotboat promote" in ms["status"]["pauseReason"]
    assert replicas(story, "payments") == (2, 2)
    paused = story.wait_condition("Microservice", "payments", "Paused")
    assert paused is not None

    out = run_cli(story, kubeconfig, "status", "payments")
    assert "Paused" in out and "weight 50%" in out

    run_cli(story, kubeconfig, "promote", "payments")
    ms = story.wait_for(
        "Microservice", "payments", phase_is("Healthy"), timeout=120, what="promoted"
    )
    assert ms is not None and ms["status"]["stableVersion"] == "v2"
    story.wait_for("Deployment", "payments-canary", lambda d: d is None, timeout=60, what="deleted")
    stable = story.get("Deployment", "payments")
    assert stable is not None and stable["spec"]["replicas"] == 4
    assert stable["metadata"]["labels"]["app.kubernetes.io/version"] == "v2"
    reasons = [e["reason"] for e in story.events("payments")]
    assert reasons.count("RolloutStarted") == 1
    assert reasons.count("WeightSet") == 2
    assert reasons.count("Promoted") == 1


def test_abort_rolls_back_and_stays_rolled_back_until_retry(story: Story, kubeconfig: Any) -> None:
    release_v1_then_v2(story, "orders")
    story.wait_for("Microservice", "orders", phase_is("Paused", 3), timeout=90, what="paused")

    run_cli(story, kubeconfig, "abort", "orders")

    ms = story.wait_for(
        "Microservice", "orders", phase_is("Degraded"), timeout=60, what="rolled back"
    )
    assert ms is not None
    story.wait_for(
        "Deployment",
        "orders",
        lambda _: replicas(story, "orders") == (4, 0),
        timeout=60,
        what="all replicas on stable, canary at zero",
    )
    rolled_back = story.wait_condition("Microservice", "orders", "RolledBack")
    assert "aborted" in rolled_back["status"]["message"]
    time.sleep(4)  # no flapping: it stays rolled back
    ms = story.get("Microservice", "orders")
    assert ms is not None and ms["status"]["phase"] == "Degraded"
    assert replicas(story, "orders") == (4, 0)
    assert [e["reason"] for e in story.events("orders")].count("RolloutStarted") == 1

    run_cli(story, kubeconfig, "retry", "orders")
    story.wait_for(
        "Microservice",
        "orders",
        phase_is("Paused", 3),
        timeout=90,
        what="released again up to the manual pause",
    )
    assert replicas(story, "orders") == (2, 2)

    run_cli(story, kubeconfig, "promote", "orders", "--full")
    ms = story.wait_for("Microservice", "orders", phase_is("Healthy"), timeout=120, what="promoted")
    assert ms is not None and ms["status"]["stableVersion"] == "v2"


def test_a_release_follows_a_shared_rollout_policy(story: Story) -> None:
    story.given(
        {
            "apiVersion": "pilotboat.dev/v1alpha1",
            "kind": "RolloutPolicy",
            "metadata": {"name": "careful"},
            "spec": {"steps": [{"setWeight": 50}, {"pause": {"duration": "1s"}}]},
        }
    )
    story.given(
        microservice("catalog", version="v1", replicas=2, rollout={"rolloutPolicyRef": "careful"})
    )
    story.wait_for("Microservice", "catalog", phase_is("Healthy"), timeout=90, what="Healthy")
    story.apply(
        microservice("catalog", version="v2", replicas=2, rollout={"rolloutPolicyRef": "careful"})
    )
    ms = story.wait_for(
        "Microservice",
        "catalog",
        lambda o: phase_is("Healthy")(o) and o["status"].get("stableVersion") == "v2",  # type: ignore[index]
        timeout=120,
        what="promoted to v2",
    )
    assert ms is not None
    reasons = [e["reason"] for e in story.events("catalog")]
    assert "RolloutStarted" in reasons and "Promoted" in reasons


def test_a_missing_rollout_policy_is_reported(story: Story) -> None:
    story.given(microservice("cart", rollout={"rolloutPolicyRef": "nowhere"}))
    ms = story.wait_condition("Microservice", "cart", "SpecValid", "False")
    cond = next(c for c in ms["status"]["conditions"] if c["type"] == "SpecValid")
    assert "RolloutPolicy nowhere does not exist" in cond["message"]


def test_the_operator_killed_at_each_step_resumes_at_the_same_step(
    story: Story, operator: OperatorProcess
) -> None:
    steps = [
        {"setWeight": 25},
        {"pause": {"untilPromoted": True}},
        {"setWeight": 50},
        {"pause": {"untilPromoted": True}},
        {"setWeight": 75},
        {"pause": {"untilPromoted": True}},
    ]
    release_v1_then_v2(story, "shipping", steps=steps)
    for pause_index, expected in ((1, (3, 1)), (3, (2, 2)), (5, (1, 3))):
        story.wait_for(
            "Microservice",
            "shipping",
            phase_is("Paused", pause_index),
            timeout=90,
            what=f"paused at step {pause_index + 1}",
        )
        operator.restart()  # SIGKILL, then a fresh process
        time.sleep(2)
        ms = story.get("Microservice", "shipping")
        assert ms is not None
        assert ms["status"]["currentStepIndex"] == pause_index, "the restart moved the release"
        assert replicas(story, "shipping") == expected
        story.patch_status_command("shipping", "promote")
    story.wait_for("Microservice", "shipping", phase_is("Healthy"), timeout=120, what="promoted")
    reasons = [e["reason"] for e in story.events("shipping")]
    assert reasons.count("RolloutStarted") == 1
    assert reasons.count("WeightSet") == 3
    assert reasons.count("PauseSkipped") == 3
    assert reasons.count("Promoted") == 1
