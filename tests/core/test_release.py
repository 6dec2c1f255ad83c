"""One pass over a Microservice as a value: tables of observations and the plans they give."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from pilotboat.api import MicroserviceSpec
from pilotboat.api.microservice import MicroserviceStatus
from pilotboat.core.release import (
    ChildRejection,
    DatabaseAccess,
    MeasuredAnalysis,
    ObservedChildren,
    ReleaseGates,
    ReleaseObservation,
    ReleasePlan,
    analysis_step,
    desired_revision,
    gates_due,
    plan_release,
    status_as_written,
    wanted_services,
)
from pilotboat.core.rollout import AnalysisOutcome
from pilotboat.core.routing import REPLICA_RATIO, GatewayAPIRouter, TrafficRouter
from pilotboat.core.traffic import ReplicaSplit
from pilotboat.core.workload import LABEL_VERSION, Owner, render_deployment

OWNER = Owner("orders", "shop", "uid-orders")
NOW = 1_000_000.0
STEPS = [{"setWeight": 25}, {"pause": {"untilPromoted": True}}, {"analysis": {}}]


def spec(version: str = "v2", **extra: Any) -> MicroserviceSpec:
    body = {"image": f"localhost/pilotboat/echo:{version}", "version": version, "replicas": 4}
    return MicroserviceSpec.model_validate({**body, **extra})


RELEASE = spec(rollout={"canary": {"steps": STEPS}})
OLD = spec("v1", rollout={"canary": {"steps": STEPS}})


def deployment(
    of: MicroserviceSpec, track: str, *, replicas: int, ready: int | None = None, owned: bool = True
) -> dict[str, Any]:
    """A Deployment as the API server returns it: rendered, then reported on."""
    obj = render_deployment(OWNER, of, track=track, replicas=replicas)  # type: ignore[arg-type]
    obj["metadata"]["generation"] = 1
    if not owned:
        obj["metadata"].pop("ownerReferences")
    ready = replicas if ready is None else ready
    obj["status"] = {
        "observedGeneration": 1,
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": ready,
        "availableReplicas": ready,
    }
    return obj


def services(of: MicroserviceSpec) -> dict[str, Any]:
    return {s["metadata"]["name"]: s for s in wanted_services(OWNER, of, REPLICA_RATIO)}


def observe(
    of: MicroserviceSpec = RELEASE,
    *,
    stable: dict[str, Any] | None = None,
    canary: dict[str, Any] | None = None,
    status: dict[str, Any] | None = None,
    **kw: Any,
) -> ReleaseObservation:
    children = ObservedChildren(stable=stable, canary=canary, services=services(of))
    return ReleaseObservation(
        OWNER,
        3,
        MicroserviceStatus.model_validate(status or {}),
        NOW,
        spec=of,
        strategy=of.rollout.canary if of.rollout else None,
        children=children,
        **kw,
    )


def in_release(step: int, weight: int = 0, **release: Any) -> dict[str, Any]:
    """The status of RELEASE's release at `step`."""
    revision = desired_revision(observe())
    return {
        "phase": "Progressing",
        "stableVersion": "v1",
        "currentStepIndex": step,
        "canaryWeight": weight,
        "release": {"revision": revision, "stepStartedAt": NOW - 60, **release},
    }


def condition(plan: ReleasePlan, type_: str) -> tuple[str, str]:
    found = next(c for c in plan.status.conditions if c.type == type_)
    return found.status, found.reason


def writes(plan: ReleasePlan) -> list[tuple[str, str, str]]:
    return [(w.verb, w.kind, w.name) for w in plan.writes]


def reasons(plan: ReleasePlan) -> list[str]:
    """The Events of a pass, in order: those of the children's writes, then the plan's."""
    told = [w.event.reason for w in plan.writes if w.event]
    return told + [e.reason for e in plan.events]


def again(obs: ReleaseObservation, plan: ReleasePlan) -> ReleasePlan:
    """The next pass, once the plan's status is what the API server has."""
    return plan_release(replace(obs, status=plan.status))


STEADY = observe(spec("v1"), stable=deployment(spec("v1"), "stable", replicas=4))
START = observe(stable=deployment(OLD, "stable", replicas=4))
WEIGHT = observe(
    stable=deployment(OLD, "stable", replicas=4),
    canary=deployment(RELEASE, "canary", replicas=1),
    status=in_release(0),
)
PAUSE = replace(WEIGHT, status=MicroserviceStatus.model_validate(in_release(1, 25)))
FAILED = replace(
    WEIGHT,
    status=MicroserviceStatus.model_validate(in_release(2, 25)),
    analysis=MeasuredAnalysis(
        AnalysisOutcome("Failed", "errors 12% > 1%"),
        {"measurements": [{"at": "t", "step": 2, "verdict": "Failed", "summary": "12%"}]},
        30.0,
    ),
)
PROMOTING = replace(WEIGHT, status=MicroserviceStatus.model_validate(in_release(3, 25)))
PROMOTED = observe(
    stable=deployment(RELEASE, "stable", replicas=4),
    canary=deployment(RELEASE, "canary", replicas=4),
    status=in_release(3, 100, promoting=True),
)


@pytest.mark.parametrize(
    ("obs", "phase", "written", "events", "next_look"),
    [
        pytest.param(STEADY, "Healthy", [], ["Stable"], None, id="steady state"),
        pytest.param(
            START,
            "Progressing",
            [("apply", "Deployment", "orders-canary")],
            ["DeploymentCreated", "RolloutStarted", "Releasing"],
            0,
            id="start of a release",
        ),
        pytest.param(
            WEIGHT,
            "Progressing",
            [("patch", "Deployment", "orders")],
            ["WeightSet"],
            0,
            id="setWeight step",
        ),
        pytest.param(
            PAUSE,
            "Paused",
            [("patch", "Deployment", "orders")],
            ["Paused"],
            None,
            id="pause until promoted",
        ),
        pytest.param(
            FAILED,
            "Degraded",
            [("patch", "Deployment", "orders-canary")],
            ["RolledBack"],
            None,
            id="rollback on failed analysis",
        ),
        pytest.param(
            PROMOTING,
            "Progressing",
            [("apply", "Deployment", "orders"), ("apply", "Deployment", "orders-canary")],
            ["DeploymentUpdated", "Promoting"],
            5.0,
            id="promotion after the last step",
        ),
        pytest.param(
            PROMOTED,
            "Healthy",
            [("delete", "Deployment", "orders-canary")],
            ["Promoted", "Stable"],
            None,
            id="promotion done",
        ),
    ],
)
def test_a_release_walks_its_steps(
    obs: ReleaseObservation,
    phase: str,
    written: list[tuple[str, str, str]],
    events: list[str],
    next_look: float | None,
) -> None:
    plan = plan_release(obs)
    assert plan.hold is None
    assert plan.status.phase == phase
    assert writes(plan) == written
    assert [r for r in reasons(plan) if r in events] == events
    assert plan.next_look == next_look


def test_a_first_deploy_writes_the_deployment_before_the_service_and_a_release_traffic_first(
) -> None:
    nothing = observe(spec("v1"))
    first = plan_release(replace(nothing, children=replace(nothing.children, services={})))
    assert [(w.verb, w.kind) for w in first.writes] == [
        ("apply", "Deployment"), ("apply", "Service")]
    # Once pods exist, traffic moves before the pods it leaves do.
    aborted = plan_release(replace(FAILED, children=replace(FAILED.children, services={})))
    assert [w.kind for w in aborted.writes] == ["Service", "Deployment"]


def test_a_setweight_step_moves_the_target_and_scales_the_tracks() -> None:
    plan = plan_release(WEIGHT)
    assert (plan.status.canary_weight, plan.status.current_step_index) == (25, 1)
    assert plan.workloads[0].body == {"spec": {"replicas": 3}}  # replica_split(4, 25)
    assert plan.status.actual_weight == 20  # 1 ready canary pod of 5


def test_a_pause_says_why_and_how_to_go_on() -> None:
    plan = plan_release(PAUSE)
    assert condition(plan, "Paused") == ("True", "Paused")
    assert "kubectl pilotboat promote" in (plan.status.pause_reason or "")


def test_a_failed_analysis_rolls_back_and_remembers_the_revision() -> None:
    plan = plan_release(FAILED)
    assert condition(plan, "RolledBack") == ("True", "RolledBack")
    assert plan.workloads[0].body == {"spec": {"replicas": 0}}
    release = plan.status.release
    assert release is not None and release.aborted_revision == desired_revision(FAILED)
    assert "errors 12% > 1%" in (release.rollback_reason or "")
    assert plan.status.failed_checks == 1
    assert next(e for e in plan.events if e.reason == "RolledBack").warning


def test_promotion_renders_the_stable_track_from_the_spec() -> None:
    plan = plan_release(PROMOTING)
    stable = plan.workloads[0].body
    assert stable["metadata"]["labels"][LABEL_VERSION] == "v2"
    assert plan.status.release is not None and plan.status.release.promoting


@pytest.mark.parametrize(
    ("obs", "hold", "next_look", "condition_type", "warning"),
    [
        pytest.param(
            replace(START, database=DatabaseAccess(True, None, "DatabaseNotReady", "not yet")),
            "DatabaseNotReady",
            5.0,
            "DatabaseClaimed",
            False,
            id="hold for a database not ready",
        ),
        pytest.param(
            replace(START, database=DatabaseAccess(False, None, "DatabaseOwnedByAnother", "no")),
            "DatabaseOwnedByAnother",
            None,
            "DatabaseClaimed",
            True,
            id="hold for a database another owns",
        ),
        pytest.param(
            replace(START, gates=ReleaseGates(migrations=("add-column: expand pending",))),
            "WaitingForExpand",
            5.0,
            "MigrationsReady",
            False,
            id="hold for migrations",
        ),
        pytest.param(
            observe(stable=deployment(OLD, "stable", replicas=4, owned=False)),
            "ChildNotOwned",
            30.0,
            "Ready",
            True,
            id="child not owned",
        ),
        pytest.param(
            replace(START, rejection=ChildRejection("the API server refuses it", 10.0)),
            "ChildRejected",
            10.0,
            "Ready",
            True,
            id="child rejected: back off",
        ),
        pytest.param(
            ReleaseObservation(OWNER, 3, MicroserviceStatus(), NOW, spec_problem="spec.x: bad"),
            "InvalidSpec",
            None,
            "SpecValid",
            True,
            id="invalid spec",
        ),
    ],
)
def test_a_hold_writes_status_only(
    obs: ReleaseObservation,
    hold: str,
    next_look: float | None,
    condition_type: str,
    warning: bool,
) -> None:
    plan = plan_release(obs)
    assert (plan.hold, plan.next_look, writes(plan)) == (hold, next_look, [])
    assert condition(plan, condition_type) == ("False", hold)
    if warning:
        assert [(e.reason, e.warning) for e in plan.events] == [(hold, True)]
    assert again(obs, plan).events == ()


def test_a_gate_holds_the_release_as_progressing() -> None:
    plan = plan_release(replace(START, gates=ReleaseGates(migrations=("m1: expand pending",))))
    assert plan.status.phase == "Progressing"
    assert condition(plan, "Progressing") == ("True", "WaitingForExpand")
    assert "v2 waits for its schema migrations: m1: expand pending" == plan.status.message


def test_a_scaled_service_is_ready_only_once_its_deployment_runs_the_new_count() -> None:
    scaled = replace(STEADY, spec=spec("v1", replicas=6))
    plan = plan_release(scaled)
    assert writes(plan) == [("patch", "Deployment", "orders")]
    assert plan.workloads[0].body == {"spec": {"replicas": 6}}
    assert plan.status.phase == "Progressing"
    assert condition(plan, "Ready") == ("False", "Releasing")


def test_a_promoted_stable_keeps_all_its_replicas_until_it_is_ready() -> None:
    rolling = deployment(RELEASE, "stable", replicas=4, ready=2)
    plan = plan_release(replace(PROMOTED, children=replace(PROMOTED.children, stable=rolling)))
    assert plan.status.phase == "Progressing"
    assert writes(plan) == []  # the stable keeps 4 replicas, the canary all of its own


def test_a_second_pass_over_its_own_status_plans_the_same() -> None:
    first = plan_release(STEADY)
    second = again(STEADY, first)
    assert second.status == first.status
    assert second.events == ()
    assert writes(second) == []


@pytest.mark.parametrize(
    ("obs", "due"),
    [
        pytest.param(STEADY, False, id="steady"),
        pytest.param(START, True, id="a release starts"),
        pytest.param(WEIGHT, False, id="a release runs"),
        pytest.param(
            replace(
                START,
                status=MicroserviceStatus.model_validate(
                    {
                        **in_release(1, abortedRevision=desired_revision(START)),
                        "commands": {"retry": "t1"},
                    }
                ),
            ),
            True,
            id="a rolled-back release is retried",
        ),
    ],
)
def test_the_gates_are_asked_when_a_release_starts(obs: ReleaseObservation, due: bool) -> None:
    assert gates_due(obs) is due


def test_the_analysis_is_measured_only_at_an_analysis_step() -> None:
    assert analysis_step(WEIGHT) is None
    assert analysis_step(FAILED) == 2


# --- scale and progress deadline --------------------------------------------------------


GATEWAY = GatewayAPIRouter("cart-route", 80)


@pytest.mark.parametrize(
    ("router", "replicas", "weight", "canary_ready", "stable", "canary"),
    [
        pytest.param(REPLICA_RATIO, 4, 25, None, 3, 1, id="the share alone"),
        pytest.param(REPLICA_RATIO, 4, 25, 0, 4, 1, id="canary unready: stable keeps all"),
        pytest.param(REPLICA_RATIO, 4, 50, 1, 3, 2, id="one canary pod ready: stable gives one"),
        pytest.param(REPLICA_RATIO, 4, 50, 2, 2, 2, id="canary ready: stable at its share"),
        pytest.param(REPLICA_RATIO, 6, 50, 2, 4, 3, id="scaled up mid-canary"),
        pytest.param(REPLICA_RATIO, 2, 50, 2, 1, 1, id="scaled down mid-canary"),
        pytest.param(GATEWAY, 4, 25, 0, 4, 1, id="a gateway keeps stable whole anyway"),
    ],
)
def test_split_surges_the_canary_before_stable_gives_way(
    router: TrafficRouter,
    replicas: int,
    weight: int,
    canary_ready: int | None,
    stable: int,
    canary: int,
) -> None:
    assert router.split(replicas, weight, canary_ready=canary_ready) == ReplicaSplit(
        stable, canary
    )


UNREADY = replace(
    WEIGHT,
    children=replace(WEIGHT.children, canary=deployment(RELEASE, "canary", replicas=1, ready=0)),
)


def test_stable_keeps_its_full_capacity_while_the_canary_is_not_ready() -> None:
    plan = plan_release(UNREADY)
    assert plan.status.phase == "Progressing"
    assert writes(plan) == []  # stable stays at 4, the canary at its 1
    assert plan.status.current_step_index == 0
    assert "0/1 pods ready" in (plan.status.message or "")
    assert (plan.status.replicas, plan.status.ready_replicas) == (5, 4)
    assert plan.next_look == 5.0


def test_stable_gives_way_as_the_canary_becomes_ready() -> None:
    plan = plan_release(WEIGHT)
    assert plan.workloads[0].body == {"spec": {"replicas": 3}}


def _waited(seconds: float, deadline: int = 120) -> ReleaseObservation:
    """UNREADY, `seconds` after its setWeight step started, with a `deadline`."""
    of = spec(rollout={"canary": {"steps": STEPS}}, progressDeadlineSeconds=deadline)
    status = in_release(0, stepStartedAt=NOW - seconds)
    return replace(UNREADY, spec=of, status=MicroserviceStatus.model_validate(status))


@pytest.mark.parametrize(
    ("waited", "phase", "next_look"),
    [
        pytest.param(0, "Progressing", 5.0, id="just started"),
        pytest.param(117, "Progressing", 3.0, id="before the deadline: look again at it"),
        pytest.param(120, "Degraded", None, id="at the deadline"),
        pytest.param(900, "Degraded", None, id="long past it"),
    ],
)
def test_a_canary_never_ready_is_rolled_back_at_the_progress_deadline(
    waited: float, phase: str, next_look: float | None
) -> None:
    obs = _waited(waited)
    plan = plan_release(obs)
    assert (plan.status.phase, plan.next_look) == (phase, next_look)
    if phase == "Progressing":
        assert writes(plan) == []
        assert condition(plan, "RolledBack") == ("False", "NotRolledBack")
        return
    assert condition(plan, "RolledBack") == ("True", "ProgressDeadlineExceeded")
    assert condition(plan, "Ready") == ("False", "ProgressDeadlineExceeded")
    assert writes(plan) == [("patch", "Deployment", "orders-canary")]
    assert plan.workloads[0].body == {"spec": {"replicas": 0}}
    message = plan.status.message or ""
    assert "0/1 canary pods ready" in message and "progress deadline of 120s" in message
    assert [(e.reason, e.warning) for e in plan.events if e.reason != "RolledBack"] == [
        ("ProgressDeadlineExceeded", True)
    ]
    release = plan.status.release
    assert release is not None and release.aborted_revision == desired_revision(obs)
    later = again(obs, plan)
    assert condition(later, "RolledBack") == ("True", "ProgressDeadlineExceeded")
    assert later.events == ()
    assert "kubectl pilotboat retry" in (later.status.message or "")


def test_the_progress_deadline_counts_from_the_step_not_the_release() -> None:
    ready_then = replace(_waited(900), children=WEIGHT.children)
    assert plan_release(ready_then).status.current_step_index == 1


def test_scaling_mid_canary_splits_the_new_count() -> None:
    scaled = replace(PAUSE, spec=spec(rollout={"canary": {"steps": STEPS}}, replicas=8))
    plan = plan_release(scaled)
    assert plan.status.phase == "Paused"
    bodies = {w.name: w.body for w in plan.workloads}
    assert bodies["orders-canary"]["spec"]["replicas"] == 2  # ceil(8 × 25%)
    assert bodies["orders"] == {"spec": {"replicas": 7}}  # 8 less the 1 ready canary pod


def test_status_tells_the_scale_subresource_its_pods() -> None:
    plan = plan_release(WEIGHT)
    assert plan.status.selector == "app.kubernetes.io/name=orders"
    assert plan.status.replicas == 5  # both tracks' pods, as their Deployments report them
    assert plan_release(STEADY).status.replicas == 4


def test_status_says_the_step_from_one_and_the_ready_pods_of_the_wanted_ones() -> None:
    plan = plan_release(WEIGHT)
    steps = len(WEIGHT.strategy.steps) if WEIGHT.strategy else 0
    assert plan.status.step == f"2/{steps}"  # currentStepIndex 1, as people count it
    assert plan.status.ready == f"{plan.status.ready_replicas}/4"
    assert plan_release(STEADY).status.step is None


def test_readiness_docstring_examples_hold() -> None:
    """`updated_ready` (the canary's ready pods of its current template) as its doctests say:
    a status older than the Deployment's generation counts no pod."""
    import doctest

    import pilotboat.core.readiness

    assert doctest.testmod(pilotboat.core.readiness).failed == 0


def test_conditions_docstring_examples_hold() -> None:
    """`flipped`, which both the release and the migration plans announce conditions with."""
    import doctest

    import pilotboat.core.conditions

    assert doctest.testmod(pilotboat.core.conditions).failed == 0


def _created(of: MicroserviceSpec) -> dict[str, Any]:
    """The stable Deployment as its create returned it: no controller has seen it yet."""
    obj = render_deployment(OWNER, of, track="stable", replicas=of.replicas)
    obj["metadata"]["generation"] = 1
    return obj


@pytest.mark.parametrize(
    ("case", "after_stable", "takes_it"),
    [
        ("the first deploy's writes, as returned", "created", True),
        ("a Deployment of another revision: a further write", "other", False),
        ("the Deployment still missing: a further write", None, False),
    ],
)
def test_a_first_deploys_status_is_the_one_its_writes_leave_when_they_leave_nothing_to_do(
    case: str, after_stable: str | None, takes_it: bool
) -> None:
    first = spec("v1")
    plan = plan_release(observe(first))
    assert plan.pods_first, case
    stable = {"created": _created(first), "other": _created(spec("v9")), None: None}
    after = status_as_written(plan, observe(first, stable=stable[after_stable]))
    assert (after.status.message == "stable is rolling out v1") is takes_it, case
    assert after.writes == plan.writes and after.events == plan.events, case
    assert after.status == plan.status or takes_it, case


def test_only_a_first_deploys_plan_takes_the_status_its_writes_leave() -> None:
    plan = plan_release(observe(OLD, stable=deployment(OLD, "stable", replicas=4)))
    assert not plan.pods_first
    after = status_as_written(plan, observe(OLD, stable=_created(OLD)))
    assert after is plan
