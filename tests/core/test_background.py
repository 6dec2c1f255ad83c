"""Background analysis (strategy.backgroundAnalysis): which steps it measures, when a
measurement is due, and what its verdict does to a release, as tables of observations."""

from __future__ import annotations

import datetime as _dt
import doctest
from dataclasses import replace
from typing import Any

import pytest
from pydantic import ValidationError

import pilotboat.core.background
from pilotboat.api import MicroserviceSpec, RolloutPolicySpec
from pilotboat.api.microservice import MicroserviceStatus
from pilotboat.core.release import (
    MeasuredAnalysis,
    ReleaseObservation,
    analysis_step,
    background_step,
    desired_revision,
    plan_release,
)
from pilotboat.core.rollout import AnalysisOutcome
from pilotboat.handlers.analysis import DEFAULT_TEMPLATE, analyse_background
from tests.core.test_release import NOW, condition, deployment, observe, reasons, spec

STEPS = [
    {"setWeight": 25},
    {"pause": {"untilPromoted": True}},
    {"analysis": {}},
    {"pause": {"duration": "10m"}},
]
BACKGROUND = spec(rollout={"canary": {"steps": STEPS, "backgroundAnalysis": {}}})
OLD = spec("v1", rollout={"canary": {"steps": STEPS, "backgroundAnalysis": {}}})
FROM_THE_PAUSE = spec(
    rollout={"canary": {"steps": STEPS, "backgroundAnalysis": {"startingStep": 1}}}
)
WITHOUT = spec(rollout={"canary": {"steps": STEPS}})


def at_step(of: MicroserviceSpec, step: int, **status: Any) -> ReleaseObservation:
    """`of`'s release at `step` (started a minute ago), the canary at 25% and ready."""
    revision = desired_revision(observe(of))
    body = {
        "phase": "Progressing",
        "stableVersion": "v1",
        "currentStepIndex": step,
        "canaryWeight": 25,
        "release": {"revision": revision, "stepStartedAt": NOW - 60},
        **status,
    }
    return observe(
        of,
        stable=deployment(OLD, "stable", replicas=4),
        canary=deployment(of, "canary", replicas=1),
        status=body,
    )


def measured(result: str, summary: str, step: int = 1, due_in: float = 8.0) -> MeasuredAnalysis:
    verdict = {"Running": "Successful", "Failed": "Failed"}.get(result, result)
    record = {"at": "2026-01-01T00:00:00Z", "step": step, "verdict": verdict, "summary": summary}
    return MeasuredAnalysis(AnalysisOutcome(result, summary), {"measurements": [record]}, due_in)  # type: ignore[arg-type]


def test_the_module_examples_hold() -> None:
    result = doctest.testmod(pilotboat.core.background)
    assert result.attempted > 10 and result.failed == 0


@pytest.mark.parametrize(
    ("of", "step", "index"),
    [
        pytest.param(WITHOUT, 1, None, id="off unless the strategy asks for it"),
        pytest.param(BACKGROUND, 0, 0, id="at a setWeight waiting for its pods"),
        pytest.param(BACKGROUND, 1, 1, id="in a pause until promoted"),
        pytest.param(BACKGROUND, 2, None, id="not in an analysis step, which measures itself"),
        pytest.param(BACKGROUND, 3, 3, id="in a timed pause after the analysis step"),
        pytest.param(BACKGROUND, 4, None, id="not once the last step passed (promoting)"),
        pytest.param(FROM_THE_PAUSE, 0, None, id="not before startingStep"),
        pytest.param(FROM_THE_PAUSE, 1, 1, id="from startingStep on"),
    ],
)
def test_background_analysis_measures_from_its_starting_step_to_promotion(
    of: MicroserviceSpec, step: int, index: int | None
) -> None:
    assert background_step(at_step(of, step)) == index


def test_it_does_not_measure_a_rolled_back_release() -> None:
    obs = at_step(BACKGROUND, 1)
    revision = desired_revision(obs)
    rolled = at_step(BACKGROUND, 1, release={"revision": revision, "abortedRevision": revision})
    assert background_step(rolled) is None
    assert analysis_step(at_step(BACKGROUND, 2)) == 2


@pytest.mark.parametrize("step", [0, 1, 3], ids=["setWeight", "pause untilPromoted", "timed pause"])
def test_a_failed_background_measurement_rolls_the_release_back_at_any_step(step: int) -> None:
    obs = replace(
        at_step(BACKGROUND, step),
        background=measured("Failed", "background analysis at step 2/4: error ratio 40%", step),
    )
    plan = plan_release(obs)
    assert plan.status.phase == "Degraded"
    assert condition(plan, "RolledBack") == ("True", "BackgroundAnalysisFailed")
    assert ("patch", "Deployment", "orders-canary") in [
        (w.verb, w.kind, w.name) for w in plan.workloads
    ]
    assert plan.workloads[-1].body == {"spec": {"replicas": 0}}
    release = plan.status.release
    assert release is not None and release.aborted_revision == desired_revision(obs)
    assert release.rollback_cause == "BackgroundAnalysisFailed"
    assert "background analysis at step 2/4: error ratio 40%" in (release.rollback_reason or "")
    event = next(e for e in plan.events if e.reason == "BackgroundAnalysisFailed")
    assert event.warning and "all traffic back to stable v1" in event.message
    assert "BackgroundAnalysis" not in reasons(plan)  # the rollback's Event says it
    background = plan.status.background_analysis
    assert background is not None and background.measurements[-1].verdict == "Failed"
    assert plan.status.failed_checks == 1


def test_the_rollback_stays_once_the_next_pass_no_longer_measures() -> None:
    obs = replace(at_step(BACKGROUND, 1), background=measured("Failed", "errors"))
    plan = plan_release(obs)
    after = plan_release(replace(obs, status=plan.status, background=None))
    assert after.status.phase == "Degraded"
    assert condition(after, "RolledBack") == ("True", "BackgroundAnalysisFailed")


def test_an_abort_beats_a_failed_background_measurement() -> None:
    obs = at_step(BACKGROUND, 1, commands={"abort": "t1"})
    plan = plan_release(replace(obs, background=measured("Failed", "errors")))
    assert "Aborted" in reasons(plan) and "BackgroundAnalysisFailed" not in reasons(plan)


@pytest.mark.parametrize("result", ["Running"])
def test_an_inconclusive_or_unmeasurable_background_goes_on_and_says_so(result: str) -> None:
    obs = at_step(BACKGROUND, 1)
    inconclusive = MeasuredAnalysis(
        AnalysisOutcome(result, "background analysis: 1 inconclusive of 1 checks"),  # type: ignore[arg-type]
        {"measurements": [{"at": "2026-01-01T00:00:00Z", "step": 1, "verdict": "Inconclusive",
                           "summary": "12 canary requests < 20"}]},
        6.5,
    )  # fmt: skip
    plan = plan_release(replace(obs, background=inconclusive))
    assert plan.status.phase == "Paused"  # still waiting for promote, not rolled back
    event = next(e for e in plan.events if e.reason == "BackgroundAnalysis")
    assert event.warning and "step 2/4: Inconclusive: 12 canary requests < 20" in event.message
    assert plan.next_look == 6.5  # a pause until promoted looks again for the measurement
    background = plan.status.background_analysis
    assert background is not None and background.measurements[0].step == 1
    # The same record again is no new Event.
    again = plan_release(replace(obs, status=plan.status, background=inconclusive))
    assert "BackgroundAnalysis" not in reasons(again)


def test_a_pause_until_promoted_without_background_analysis_waits_for_a_change() -> None:
    assert plan_release(at_step(WITHOUT, 1)).next_look is None


def test_a_new_release_starts_the_background_analysis_over() -> None:
    old = {"measurements": [{"at": "2026-01-01T00:00:00Z", "step": 1, "verdict": "Failed",
                             "summary": "errors"}]}  # fmt: skip
    obs = observe(
        BACKGROUND,
        stable=deployment(OLD, "stable", replicas=4),
        status={"phase": "Degraded", "backgroundAnalysis": old},
    )
    plan = plan_release(obs)
    assert "RolloutStarted" in reasons(plan)
    assert plan.status.background_analysis is None


def test_starting_step_must_name_a_step() -> None:
    with pytest.raises(ValidationError, match=r"backgroundAnalysis.startingStep \(4\) must name"):
        MicroserviceSpec.model_validate(
            {"image": "i", "version": "v", "rollout": {"canary": {
                "steps": STEPS, "backgroundAnalysis": {"startingStep": 4}}}}  # fmt: skip
        )
    policy = RolloutPolicySpec.model_validate(
        {"steps": STEPS, "backgroundAnalysis": {"startingStep": 3}}
    )
    strategy = policy.as_strategy()
    assert strategy.background_analysis is not None
    assert strategy.background_analysis.starting_step == 3


# --- the handler's measurement window (no Prometheus: a due measurement is an Error) --------

T0 = _dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=_dt.UTC)


def _analyse(now: _dt.datetime, step_started: _dt.datetime, previous: dict[str, Any] | None,
             step: int = 1) -> Any:  # fmt: skip
    return analyse_background(
        template=DEFAULT_TEMPLATE,  # interval 30s
        step_index=step,
        steps=4,
        step_started_at=step_started.timestamp(),
        previous=previous,
        service="orders",
        namespace="shop",
        canary_version="v2",
        stable_version="v1",
        canary_revision="r2",
        stable_revision="r1",
        prometheus_url=None,
        providers={},
        now=now,
    )


def test_the_first_window_starts_with_the_step() -> None:
    early = _analyse(T0 + _dt.timedelta(seconds=20), T0, None)
    assert early.measured is None and early.next_due_in == pytest.approx(10)
    assert early.outcome.result == "Running"
    due = _analyse(T0 + _dt.timedelta(seconds=30), T0, None)
    assert due.measured is not None
    record = {"at": "2026-01-01T12:00:30Z", "step": 1, "verdict": "Error",
              "summary": due.measured.message}  # fmt: skip
    assert due.status["measurements"] == [record]
    assert due.next_due_in == 30
    assert "1 could not be taken of 1 checks" in due.outcome.summary


def test_a_window_never_reaches_back_past_a_step_change() -> None:
    """Measured 25s ago at the setWeight step; the pause began 5s ago: the next window is
    the 30s after the pause began, not the 30s after the last measurement."""
    last = T0
    now = T0 + _dt.timedelta(seconds=25)
    previous = {"measurements": [{"at": "2026-01-01T12:00:00Z", "step": 0,
                                  "verdict": "Successful", "summary": "ok"}]}  # fmt: skip
    result = _analyse(now + _dt.timedelta(seconds=10), last + _dt.timedelta(seconds=20), previous)
    assert result.measured is None and result.next_due_in == pytest.approx(15)
    result = _analyse(T0 + _dt.timedelta(seconds=50), T0 + _dt.timedelta(seconds=20), previous)
    assert result.measured is not None
    assert [r["step"] for r in result.status["measurements"]] == [0, 1]


def test_measurements_of_the_whole_release_are_kept_and_counted() -> None:
    records = [{"at": f"2026-01-01T11:{i:02d}:00Z", "step": 1, "verdict": "Successful",
                "summary": "ok"} for i in range(30)]  # fmt: skip
    records[2]["verdict"] = "Failed"
    previous = {"measurements": records}
    # failureLimit 0: the one failed measurement, kept although older than the last 20.
    result = _analyse(T0, T0 - _dt.timedelta(hours=1), previous)
    assert result.outcome.result == "Failed"
    kept = result.status["measurements"]
    assert len(kept) == 21 and kept[0]["verdict"] == "Failed"


def test_status_reads_back_as_its_model() -> None:
    result = _analyse(T0 + _dt.timedelta(seconds=30), T0, None)
    status = MicroserviceStatus.model_validate({"backgroundAnalysis": result.status})
    assert status.background_analysis is not None
    assert status.background_analysis.measurements[0].verdict == "Error"
