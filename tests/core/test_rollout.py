"""The release state machine, driven without a cluster: tables of single decisions, and a
small simulator for whole releases that hypothesis feeds with random steps and verdicts."""

from __future__ import annotations

import doctest
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pilotboat.core.traffic
from pilotboat.api import CanaryStep
from pilotboat.core.rollout import (
    AnalysisOutcome,
    Decision,
    Observations,
    ReleaseState,
    decide,
)
from pilotboat.core.routing import REPLICA_RATIO, GatewayAPIRouter
from pilotboat.core.traffic import replica_split

NEW, OLD = "rev-new", "rev-old"
GATEWAY = GatewayAPIRouter("cart-route", 80)


def steps(*raw: dict[str, Any]) -> list[CanaryStep]:
    return [CanaryStep.model_validate(s) for s in raw]


def obs(**kw: Any) -> Observations:
    base: dict[str, Any] = {
        "desired_revision": NEW,
        "stable_revision": OLD,
        "stable_ready": True,
        "canary_revision": NEW,
        "canary_ready_replicas": 10,
    }
    return Observations(**{**base, **kw})


def run(s: list[CanaryStep], state: ReleaseState, o: Observations, now: float = 100.0) -> Decision:
    return decide(s, state, o, version="v2", stable_version="v1", replicas=4, now=now)


def test_docstring_examples_hold() -> None:
    assert doctest.testmod(pilotboat.core.traffic).failed == 0


@pytest.mark.parametrize(
    ("o", "phase", "stable_template"),
    [
        (obs(stable_revision=None), "Progressing", "spec"),
        (obs(stable_revision=NEW, stable_ready=False), "Progressing", "keep"),
        (obs(stable_revision=NEW, stable_ready=True), "Healthy", "keep"),
    ],
)
def test_without_a_release_the_stable_track_takes_the_spec(
    o: Observations, phase: str, stable_template: str
) -> None:
    d = run(steps({"setWeight": 50}), ReleaseState(), o)
    assert (d.phase, d.stable_template, d.canary) == (phase, stable_template, False)


def test_no_steps_means_a_plain_rolling_update() -> None:
    d = run([], ReleaseState(), obs())
    assert (d.phase, d.stable_template, d.canary) == ("Progressing", "spec", False)


def test_a_new_revision_starts_at_step_zero() -> None:
    d = run(steps({"setWeight": 50}), ReleaseState(revision="older"), obs(), now=7.0)
    assert d.state.revision == NEW and d.state.step_index == 0 and d.state.step_started_at == 7.0
    assert d.canary and d.reset_analysis
    assert [e.reason for e in d.events] == ["RolloutStarted"]


def test_set_weight_waits_for_the_canary_replicas() -> None:
    state = ReleaseState(revision=NEW, step_index=0, step_started_at=0)
    waiting = run(steps({"setWeight": 50}), state, obs(canary_ready_replicas=1))
    assert waiting.state.step_index == 0 and waiting.state.canary_weight == 50
    done = run(steps({"setWeight": 50}), state, obs(canary_ready_replicas=2))
    assert done.state.step_index == 1 and [e.reason for e in done.events] == ["WeightSet"]


@pytest.mark.parametrize(("now", "phase", "index"), [(10.0, "Paused", 0), (31.0, "Progressing", 1)])
def test_a_timed_pause(now: float, phase: str, index: int) -> None:
    state = ReleaseState(revision=NEW, step_index=0, step_started_at=0.0)
    d = run(steps({"pause": {"duration": "30s"}}), state, obs(), now=now)
    assert (d.phase, d.state.step_index) == (phase, index)
    if phase == "Paused":
        assert d.requeue_after == pytest.approx(20.0)
        assert "until 1970-01-01T00:00:30Z" in (d.pause_reason or "")


def test_a_pause_until_promoted_waits_for_a_fresh_promote_token() -> None:
    s = steps({"pause": {"untilPromoted": True}})
    state = ReleaseState(
        revision=NEW, step_index=0, step_started_at=0.0, handled_commands={"promote": "t1"}
    )
    assert run(s, state, obs(commands={"promote": "t1"})).phase == "Paused"
    d = run(s, state, obs(commands={"promote": "t2"}))
    assert d.state.step_index == 1 and d.state.handled_commands["promote"] == "t2"


@pytest.mark.parametrize(
    ("result", "phase", "index"),
    [
        ("Running", "Progressing", 0),
        ("Successful", "Progressing", 1),
        ("Failed", "Degraded", None),
        ("Inconclusive", "Paused", 0),
        ("ErrorPaused", "Paused", 0),
    ],
)
def test_analysis_outcomes(result: str, phase: str, index: int | None) -> None:
    state = ReleaseState(revision=NEW, step_index=0, step_started_at=0.0, canary_weight=20)
    d = run(
        steps({"analysis": {"intervals": 2}}),
        state,
        obs(analysis=AnalysisOutcome(result, "error ratio 4.1% > 1.0%")),
    )  # type: ignore[arg-type]
    assert (d.phase, d.state.step_index) == (phase, index)
    if phase == "Degraded":
        assert d.state.aborted_revision == NEW and not d.canary
        assert "error ratio 4.1% > 1.0%" in d.message
        assert [e.reason for e in d.events] == ["RolledBack"]


def test_a_rolled_back_revision_stays_rolled_back_until_retry() -> None:
    state = ReleaseState(revision=NEW, aborted_revision=NEW, rollback_reason="too many errors")
    d = run(steps({"setWeight": 50}), state, obs())
    assert d.phase == "Degraded" and not d.canary and "too many errors" in d.message
    d = run(steps({"setWeight": 50}), state, obs(commands={"retry": "r1"}))
    assert d.phase == "Progressing" and d.state.step_index == 0 and d.state.aborted_revision is None


def test_abort_and_full_promotion() -> None:
    state = ReleaseState(revision=NEW, step_index=0, step_started_at=0.0)
    s = steps({"pause": {"untilPromoted": True}}, {"setWeight": 100})
    aborted = run(s, state, obs(commands={"abort": "a"}))
    assert aborted.phase == "Degraded" and aborted.state.aborted_revision == NEW
    full = run(s, state, obs(commands={"promoteFull": "p"}))
    assert full.stable_template == "spec" and full.state.promoting


def test_promotion_ends_when_the_stable_track_is_ready() -> None:
    state = ReleaseState(revision=NEW, step_index=1, promoting=True, canary_weight=100)
    rolling = run(steps({"setWeight": 50}), state, obs(stable_revision=NEW, stable_ready=False))
    assert rolling.phase == "Progressing" and rolling.canary
    done = run(steps({"setWeight": 50}), state, obs(stable_revision=NEW, stable_ready=True))
    assert (
        done.phase == "Healthy"
        and not done.canary
        and [e.reason for e in done.events] == ["Promoted"]
    )
    again = run(steps({"setWeight": 50}), done.state, obs(stable_revision=NEW, stable_ready=True))
    assert again.events == ()


@pytest.mark.parametrize(
    ("replicas", "weight"), [(n, w) for n in (1, 2, 3, 5, 10) for w in (0, 1, 33, 99, 100)]
)
def test_replica_split_never_starves_stable_before_promotion(replicas: int, weight: int) -> None:
    s = replica_split(replicas, weight)
    assert s.stable >= 1
    assert s.canary >= (1 if weight > 0 else 0)
    assert s.stable + s.canary <= replicas + 1


# --- whole releases -----------------------------------------------------------------------


@dataclass
class World:
    """A pretend cluster for the simulator: the canary is ready as soon as it is asked for."""

    steps: list[CanaryStep]
    verdicts: list[str]
    state: ReleaseState = field(default_factory=ReleaseState)
    stable_revision: str = OLD
    now: float = 0.0
    weights: list[int] = field(default_factory=list)
    analyses_passed: int = 0

    def tick(self) -> Decision:
        index = self.state.step_index
        outcome = None
        if (
            index is not None
            and index < len(self.steps)
            and self.state.revision == NEW
            and self.steps[index].analysis is not None
        ):
            result = self.verdicts[index % len(self.verdicts)]
            outcome = AnalysisOutcome(result, result)  # type: ignore[arg-type]
        o = Observations(
            desired_revision=NEW,
            stable_revision=self.stable_revision,
            stable_ready=True,
            canary_revision=NEW,
            canary_ready_replicas=REPLICA_RATIO.split(4, self.state.canary_weight).canary
            if self.state.revision == NEW
            else 0,
            analysis=outcome,
        )
        d = decide(
            self.steps, self.state, o, version="v2", stable_version="v1", replicas=4, now=self.now
        )
        if any(e.reason == "AnalysisPassed" for e in d.events):
            self.analyses_passed += 1
        if d.canary:
            self.weights.append(d.state.canary_weight)
        if d.stable_template == "spec":
            self.stable_revision = NEW
        self.state = d.state
        self.now += 1000.0
        return d


step_strategy = st.one_of(
    st.builds(lambda: {"pause": {"duration": "10s"}}),
    st.builds(lambda: {"pause": {"untilPromoted": True}}),
    st.builds(lambda n: {"analysis": {"intervals": n}}, st.integers(1, 3)),
    st.builds(lambda: {"mirror": {"percent": 10}}),
)


@st.composite
def releases(draw: st.DrawFn) -> tuple[list[CanaryStep], list[str]]:
    weights = sorted(draw(st.lists(st.integers(0, 100), min_size=1, max_size=4)))
    raw: list[dict[str, Any]] = []
    for w in weights:
        raw.append({"setWeight": w})
        raw.extend(draw(st.lists(step_strategy, max_size=2)))
    raw = [s for s in raw if "untilPromoted" not in s.get("pause", {})]
    verdicts = draw(
        st.lists(
            st.sampled_from(["Running", "Successful", "Failed", "Inconclusive"]),
            min_size=1,
            max_size=4,
        )
    )
    return steps(*raw), verdicts


@settings(max_examples=200, deadline=None)
@given(releases())
def test_weights_never_decrease_and_no_promotion_without_passing_analyses(
    release: tuple[list[CanaryStep], list[str]],
) -> None:
    s, verdicts = release
    world = World(s, verdicts)
    phases = []
    for _ in range(4 * len(s) + 10):
        phases.append(world.tick().phase)
        if phases[-1] in ("Healthy", "Degraded") and len(phases) > 1:
            break
    assert world.weights == sorted(world.weights), "weights went down within a release"
    analysis_steps = sum(1 for step in s if step.analysis is not None)
    if world.stable_revision == NEW:
        assert world.analyses_passed == analysis_steps, "promoted without every analysis passing"
    if phases[-1] == "Degraded":
        assert world.stable_revision == OLD
        sticky = world.tick()
        assert sticky.phase == "Degraded" and not sticky.canary


@given(st.integers(0, 10), st.sampled_from(["Running", "Inconclusive", "ErrorPaused"]))
def test_deciding_again_on_the_same_observations_changes_nothing(index: int, result: str) -> None:
    """What a restarted operator does: same status, same world, same decision."""
    s = steps(*([{"analysis": {"intervals": 3}}] * 11))
    state = ReleaseState(revision=NEW, step_index=index, step_started_at=0.0, canary_weight=10)
    o = obs(analysis=AnalysisOutcome(result, "x"))  # type: ignore[arg-type]
    first = run(s, state, o)
    second = run(s, first.state, o)
    assert replace(first, events=()) == replace(second, events=())


def test_a_mirror_step_sets_the_share_with_a_gateway_and_is_skipped_without() -> None:
    s = steps({"mirror": {"percent": 20}}, {"pause": {"untilPromoted": True}})
    state = ReleaseState(revision=NEW, step_index=0, step_started_at=0.0)
    gateway = decide(
        s,
        state,
        obs(),
        version="v2",
        stable_version="v1",
        replicas=4,
        router=GATEWAY,
        now=1.0,
    )
    assert gateway.state.mirror_percent == 20 and gateway.state.step_index == 1
    assert [e.reason for e in gateway.events] == ["MirrorSet"]
    ratio = run(s, state, obs())
    assert ratio.state.mirror_percent == 0 and ratio.state.step_index == 1
    assert [e.reason for e in ratio.events] == ["StepSkipped"]
    paused = decide(
        s,
        gateway.state,
        obs(),
        version="v2",
        stable_version="v1",
        replicas=4,
        router=GATEWAY,
        now=2.0,
    )
    assert paused.phase == "Paused" and paused.state.mirror_percent == 20
    aborted = decide(
        s,
        gateway.state,
        obs(commands={"abort": "a"}),
        version="v2",
        stable_version="v1",
        replicas=4,
        router=GATEWAY,
        now=3.0,
    )
    assert aborted.state.mirror_percent == 0
