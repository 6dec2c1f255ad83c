"""The release state machine of a Microservice, as one pure function: `decide`.

A release is identified by its *revision*: the digest of the pod template the spec asks
for. While the stable Deployment runs another revision and the spec has canary steps, a
release is in progress: the canary runs the new revision and the steps move its weight,
pause, and run analyses. All that the machine remembers lives in `status` (`ReleaseState`),
so an operator killed at any line resumes at the same step: it neither repeats a step
that completed nor skips one that did not.

Phases follow what Argo CD understands for rollouts: Healthy, Progressing, Paused,
Degraded.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from pilotboat.api import CanaryStep
from pilotboat.api.common import parse_duration
from pilotboat.core import reasons
from pilotboat.core.events import ReleaseEvent
from pilotboat.core.routing import REPLICA_RATIO, TrafficRouter
from pilotboat.core.traffic import ReplicaSplit

__all__ = [
    "AnalysisOutcome",
    "Command",
    "Decision",
    "Observations",
    "Phase",
    "ReleaseEvent",
    "ReleaseState",
    "decide",
    "step_kind",
]

Phase = Literal["Healthy", "Progressing", "Paused", "Degraded"]
Command = Literal["promote", "promoteFull", "abort", "retry"]
AnalysisResult = Literal["Running", "Successful", "Failed", "Inconclusive", "ErrorPaused"]


@dataclass(frozen=True)
class ReleaseState:
    """What `status` remembers about the release in progress."""

    revision: str | None = None
    step_index: int | None = None
    step_started_at: float | None = None
    canary_weight: int = 0
    aborted_revision: str | None = None
    handled_commands: Mapping[str, str] = field(default_factory=dict)
    promoting: bool = False
    rollback_reason: str | None = None
    rollback_cause: str | None = None
    """The condition reason of the rollback, when not the phase's own (ProgressDeadlineExceeded)."""
    flag_overrides: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    """FeatureFlag name -> variant percentages set by this release's setFlag steps."""
    mirror_percent: int = 0
    """Share of the stable's requests copied to the canary (a gateway's RequestMirror)."""


@dataclass(frozen=True)
class AnalysisOutcome:
    """Where the analysis of the current step stands, with its explanation."""

    result: AnalysisResult
    summary: str


@dataclass(frozen=True)
class Observations:
    """What the handler read from the world before asking."""

    desired_revision: str
    stable_revision: str | None
    stable_ready: bool
    canary_revision: str | None = None
    canary_ready_replicas: int = 0
    analysis: AnalysisOutcome | None = None
    commands: Mapping[str, str] = field(default_factory=dict)
    background: AnalysisOutcome | None = None
    """The background analysis of the release (`strategy.backgroundAnalysis`), when it runs."""


@dataclass(frozen=True)
class Decision:
    """What to do now, and what `status` says afterwards."""

    phase: Phase
    state: ReleaseState
    message: str
    stable_template: Literal["keep", "spec"] = "keep"
    canary: bool = False
    analyse: bool = False
    reset_analysis: bool = False
    pause_reason: str | None = None
    requeue_after: float | None = None
    events: tuple[ReleaseEvent, ...] = ()
    promoted: bool = False  # the release just finished: its flag splits stay in force
    reason: str | None = None
    """The conditions' reason when the phase's own says too little (ProgressDeadlineExceeded)."""
    command: Command | None = None
    """The release command this decision carries out (its Events tell it), if any."""


def step_kind(step: CanaryStep) -> str:
    """The one field a step sets: setWeight, pause, analysis, setFlag or mirror."""
    for name, value in (
        ("setWeight", step.set_weight),
        ("pause", step.pause),
        ("analysis", step.analysis),
        ("setFlag", step.set_flag),
        ("mirror", step.mirror),
    ):
        if value is not None:
            return name
    raise ValueError("a canary step sets none of its kinds")


def _pending(obs: Observations, state: ReleaseState, command: Command) -> str | None:
    token = obs.commands.get(command)
    if token and state.handled_commands.get(command) != token:
        return token
    return None


def _handled(state: ReleaseState, obs: Observations, *commands: Command) -> ReleaseState:
    handled = dict(state.handled_commands)
    for command in commands:
        if obs.commands.get(command):
            handled[command] = obs.commands[command]
    return replace(state, handled_commands=handled)


def _steady(state: ReleaseState, obs: Observations, version: str) -> Decision:
    """No release in progress: the stable track runs what the spec asks for."""
    events: tuple[ReleaseEvent, ...] = ()
    finishing = state.revision == obs.desired_revision and state.promoting
    if not obs.stable_ready:
        message = f"stable is rolling out {version}"
        keep = (
            replace(state, promoting=finishing)
            if finishing
            else ReleaseState(handled_commands=state.handled_commands)
        )
        return Decision("Progressing", keep, message, canary=finishing, requeue_after=None)
    if finishing:
        events = (ReleaseEvent(reasons.PROMOTED, f"{version} promoted: the canary became stable"),)
    cleared = ReleaseState(handled_commands=state.handled_commands)
    return Decision("Healthy", cleared, f"{version} is stable", events=events, promoted=finishing)


def _rolled_back(
    state: ReleaseState,
    message: str,
    events: tuple[ReleaseEvent, ...] = (),
    *,
    cause: str | None = None,
) -> Decision:
    aborted = ReleaseState(
        aborted_revision=state.revision,
        handled_commands=state.handled_commands,
        revision=state.revision,
        rollback_reason=message,
        rollback_cause=cause,
    )
    return Decision("Degraded", aborted, message, events=events, reason=cause)


def _promote(state: ReleaseState, version: str, why: str) -> Decision:
    promoting = replace(state, promoting=True, canary_weight=100)
    return Decision(
        "Progressing",
        promoting,
        f"promoting {version}: {why}",
        stable_template="spec",
        canary=True,
        events=(ReleaseEvent(reasons.PROMOTING, f"promoting {version}: {why}"),),
    )


def decide(
    steps: Sequence[CanaryStep],
    state: ReleaseState,
    obs: Observations,
    *,
    version: str,
    stable_version: str | None,
    replicas: int,
    router: TrafficRouter = REPLICA_RATIO,
    now: float,
    progress_deadline: float | None = None,
) -> Decision:
    """The next action of a Microservice's release and the status that follows.

    - No stable Deployment yet, or no canary steps: the stable track takes the spec as is.
    - Spec revision equals the stable one: steady state; a release that just promoted ends.
    - Revision rolled back before: stays Degraded until the spec changes or `retry`.
    - Otherwise the release walks its steps; `promote` skips the current wait, `promoteFull`
      skips the rest, `abort` rolls back; so does a failed background analysis
      (`BackgroundAnalysisFailed`), whatever step the release is at.
    - A setWeight step whose canary pods are not all ready `progress_deadline` seconds after
      the step started rolls back (`ProgressDeadlineExceeded`); None: it waits for ever.
    - `router` (replica ratio unless the spec names another) tells how many pods each track
      runs for a weight and whether a mirror step can be carried out; no branch here knows
      a router by name.
    """
    if obs.stable_revision is None or obs.stable_revision == obs.desired_revision:
        if obs.stable_revision is None:
            return Decision(
                "Progressing",
                ReleaseState(handled_commands=state.handled_commands),
                f"deploying {version}",
                stable_template="spec",
            )
        return _steady(state, obs, version)
    if not steps:
        return Decision(
            "Progressing",
            ReleaseState(handled_commands=state.handled_commands),
            f"rolling out {version} (no canary steps)",
            stable_template="spec",
        )
    if state.promoting and state.revision == obs.desired_revision:
        return _promote(state, version, "waiting for the stable track to take it")

    if state.aborted_revision == obs.desired_revision:
        if _pending(obs, state, "retry"):
            fresh = _handled(
                ReleaseState(handled_commands=state.handled_commands), obs, "retry", "abort"
            )
            retried = _start(fresh, obs, version, stable_version, now, retried=True)
            return replace(_at_first_weight(steps, retried), command="retry")
        state = _handled(state, obs, "abort", "promote", "promoteFull")
        why = state.rollback_reason or f"{version} was rolled back"
        return Decision(
            "Degraded",
            state,
            f"{why}. Change the spec or run `kubectl pilotboat retry` to try again",
            reason=state.rollback_cause,
        )

    if state.revision != obs.desired_revision:
        begun = _start(
            _handled(state, obs, "promote", "promoteFull", "abort", "retry"),
            obs,
            version,
            stable_version,
            now,
            retried=False,
        )
        return _at_first_weight(steps, begun)

    if _pending(obs, state, "abort"):
        state = _handled(state, obs, "abort")
        msg = f"{version} aborted by request; all traffic back to stable {stable_version}"
        aborted = _rolled_back(state, msg, (ReleaseEvent(reasons.ABORTED, msg, warning=True),))
        return replace(aborted, command="abort")
    if obs.background is not None and obs.background.result == "Failed":
        msg = (
            f"{version} rolled back: {obs.background.summary}; "
            f"all traffic back to stable {stable_version}"
        )
        event = ReleaseEvent(reasons.BACKGROUND_ANALYSIS_FAILED, msg, warning=True)
        return _rolled_back(state, msg, (event,), cause=reasons.BACKGROUND_ANALYSIS_FAILED)
    if _pending(obs, state, "promoteFull"):
        full = _promote(
            _handled(state, obs, "promoteFull", "promote"), version, "full promotion requested"
        )
        return replace(full, command="promoteFull")

    return _walk(
        steps,
        state,
        obs,
        version=version,
        stable_version=stable_version,
        split=lambda w: router.split(replicas, w),
        can_mirror=router.can_mirror,
        now=now,
        progress_deadline=progress_deadline,
    )


def _start(
    state: ReleaseState,
    obs: Observations,
    version: str,
    stable_version: str | None,
    now: float,
    *,
    retried: bool,
) -> Decision:
    started = replace(
        state,
        revision=obs.desired_revision,
        step_index=0,
        step_started_at=now,
        canary_weight=0,
        aborted_revision=None,
        rollback_reason=None,
        rollback_cause=None,
        promoting=False,
        flag_overrides={},
    )
    verb = "retrying" if retried else "starting"
    message = f"{verb} the canary of {version} against stable {stable_version}"
    return Decision(
        "Progressing",
        started,
        message,
        canary=True,
        reset_analysis=True,
        requeue_after=0,
        events=(ReleaseEvent(reasons.ROLLOUT_STARTED, message),),
    )


def _at_first_weight(steps: Sequence[CanaryStep], begun: Decision) -> Decision:
    """A start whose first step is a setWeight creates the canary at that weight (as Argo
    Rollouts scales its new ReplicaSet at once), so its pods start a pass sooner than at 0
    replicas; the step itself is walked by the next pass, as always."""
    if step_kind(steps[0]) != "setWeight":
        return begun
    first = int(steps[0].set_weight or 0)
    return replace(begun, state=replace(begun.state, canary_weight=first))


def _advance(state: ReleaseState, now: float) -> ReleaseState:
    index = (state.step_index or 0) + 1
    return replace(state, step_index=index, step_started_at=now)


def _walk(
    steps: Sequence[CanaryStep],
    state: ReleaseState,
    obs: Observations,
    *,
    version: str,
    stable_version: str | None,
    split: Callable[[int], ReplicaSplit],
    can_mirror: bool,
    now: float,
    progress_deadline: float | None,
) -> Decision:
    index = state.step_index or 0
    if index >= len(steps):
        return _promote(state, version, f"all {len(steps)} steps passed")
    step = steps[index]
    kind = step_kind(step)
    label = f"step {index + 1}/{len(steps)} ({kind})"
    promote_token = _pending(obs, state, "promote")
    started = state.step_started_at if state.step_started_at is not None else now

    if kind == "setWeight":
        weight = int(step.set_weight or 0)
        moved = replace(state, canary_weight=weight)
        wanted = split(weight).canary
        ready = obs.canary_revision == obs.desired_revision or wanted == 0
        if not (ready and obs.canary_ready_replicas >= wanted):
            return _wait_for_canary(
                label, moved, obs, wanted, version=version, stable_version=stable_version,
                started=started, now=now, deadline=progress_deadline,
            )  # fmt: skip
        nxt = _advance(moved, now)
        return Decision(
            "Progressing",
            nxt,
            f"{label}: canary weight {weight}%",
            canary=True,
            requeue_after=0,
            events=(ReleaseEvent(reasons.WEIGHT_SET, f"canary {version} at {weight}% of traffic"),),
        )

    if kind == "pause":
        return _pause_step(step, label, state, obs, now, started, promote_token)

    if kind == "analysis":
        outcome = obs.analysis
        if promote_token:
            nxt = _advance(_handled(state, obs, "promote"), now)
            return Decision(
                "Progressing",
                nxt,
                f"{label}: skipped by request",
                canary=True,
                requeue_after=0,
                reset_analysis=True,
                events=(
                    ReleaseEvent(
                        reasons.ANALYSIS_SKIPPED, f"{label} skipped by request", warning=True
                    ),
                ),
                command="promote",
            )
        if outcome is None or outcome.result == "Running":
            detail = outcome.summary if outcome else "first measurement pending"
            return Decision(
                "Progressing", state, f"{label}: analysing, {detail}", canary=True, analyse=True
            )
        if outcome.result == "Successful":
            return Decision(
                "Progressing",
                _advance(state, now),
                f"{label}: {outcome.summary}",
                canary=True,
                reset_analysis=True,
                requeue_after=0,
                events=(ReleaseEvent(reasons.ANALYSIS_PASSED, f"{label}: {outcome.summary}"),),
            )
        if outcome.result == "Failed":
            msg = (
                f"{version} rolled back: {outcome.summary}; "
                f"all traffic back to stable {stable_version}"
            )
            return _rolled_back(state, msg, (ReleaseEvent(reasons.ROLLED_BACK, msg, warning=True),))
        reason = f"{label}: {outcome.summary}"
        return Decision(
            "Paused",
            state,
            reason,
            canary=True,
            pause_reason=reason,
            analyse=outcome.result == "ErrorPaused",
            events=(ReleaseEvent(reasons.ANALYSIS_PAUSED, reason, warning=True),),
        )

    if kind == "setFlag":
        return _set_flag_step(step, label, state, version, now)

    return _mirror_step(step, label, state, version, can_mirror, now)


def _wait_for_canary(
    label: str,
    state: ReleaseState,
    obs: Observations,
    wanted: int,
    *,
    version: str,
    stable_version: str | None,
    started: float,
    now: float,
    deadline: float | None,
) -> Decision:
    """A setWeight step waits for its canary pods, until `deadline` seconds after the step
    started; then the release is rolled back."""
    ready = obs.canary_ready_replicas if obs.canary_revision == obs.desired_revision else 0
    waited = now - started
    if deadline is not None and waited >= deadline:
        msg = (
            f"{version} rolled back: {label}: {min(ready, wanted)}/{wanted} canary pods ready "
            f"after {waited:.0f}s, past the progress deadline of {deadline:.0f}s; "
            f"all traffic back to stable {stable_version}"
        )
        event = ReleaseEvent(reasons.PROGRESS_DEADLINE_EXCEEDED, msg, warning=True)
        return _rolled_back(state, msg, (event,), cause=reasons.PROGRESS_DEADLINE_EXCEEDED)
    message = (
        f"{label}: waiting for the canary at {state.canary_weight}%, {ready}/{wanted} pods ready"
    )
    if deadline is not None:
        until = _dt.datetime.fromtimestamp(started + deadline, _dt.UTC)
        message += f", else rolled back at {until:%Y-%m-%dT%H:%M:%SZ} (progress deadline)"
    return Decision(
        "Progressing",
        state,
        message,
        canary=True,
        requeue_after=None if deadline is None else deadline - waited,
    )


def _mirror_step(
    step: CanaryStep, label: str, state: ReleaseState, version: str, can_mirror: bool, now: float
) -> Decision:
    """Mirroring needs a router that can copy requests (`can_mirror`); without one (replica
    ratio) it is skipped, saying so. The share holds for the following steps, until another
    mirror step or the end of the release."""
    assert step.mirror is not None
    percent = step.mirror.percent
    if not can_mirror:
        message = f"{label}: mirroring needs Gateway API routing; skipped"
        return Decision(
            "Progressing",
            _advance(state, now),
            message,
            canary=True,
            requeue_after=0,
            events=(ReleaseEvent(reasons.STEP_SKIPPED, message, warning=True),),
        )
    nxt = _advance(replace(state, mirror_percent=percent), now)
    message = f"{label}: {percent}% of stable's requests mirrored to canary {version}"
    return Decision(
        "Progressing",
        nxt,
        message,
        canary=True,
        requeue_after=0,
        events=(ReleaseEvent(reasons.MIRROR_SET, message),),
    )


def _set_flag_step(
    step: CanaryStep, label: str, state: ReleaseState, version: str, now: float
) -> Decision:
    """The release's split of one flag moves; the handler renders it before writing status,
    and a rollback drops it (a rolled-back state carries no flag overrides)."""
    set_flag = step.set_flag
    assert set_flag is not None
    overrides = {**state.flag_overrides, set_flag.flag: dict(set_flag.variants)}
    split_text = ", ".join(f"{v} {p}%" for v, p in set_flag.variants.items())
    return Decision(
        "Progressing",
        _advance(replace(state, flag_overrides=overrides), now),
        f"{label}: FeatureFlag {set_flag.flag} at {split_text}",
        canary=True,
        requeue_after=0,
        events=(
            ReleaseEvent(
                reasons.FLAG_SET, f"FeatureFlag {set_flag.flag} at {split_text} for {version}"
            ),
        ),
    )


def _pause_step(
    step: CanaryStep,
    label: str,
    state: ReleaseState,
    obs: Observations,
    now: float,
    started: float,
    promote_token: str | None,
) -> Decision:
    pause = step.pause
    assert pause is not None
    if promote_token:
        nxt = _advance(_handled(state, obs, "promote"), now)
        return Decision(
            "Progressing",
            nxt,
            f"{label}: promoted by request",
            canary=True,
            requeue_after=0,
            events=(ReleaseEvent(reasons.PAUSE_SKIPPED, f"{label} skipped by request"),),
            command="promote",
        )
    if pause.duration is None:
        reason = f"{label}: waiting for `kubectl pilotboat promote`"
        return Decision("Paused", state, reason, canary=True, pause_reason=reason)
    remaining = parse_duration(pause.duration) - (now - started)
    if remaining > 0:
        until = _dt.datetime.fromtimestamp(started + parse_duration(pause.duration), _dt.UTC)
        reason = f"{label}: paused for {pause.duration}, until {until:%Y-%m-%dT%H:%M:%SZ}"
        return Decision(
            "Paused", state, reason, canary=True, pause_reason=reason, requeue_after=remaining
        )
    return Decision(
        "Progressing",
        _advance(state, now),
        f"{label}: pause over",
        canary=True,
        requeue_after=0,
    )
