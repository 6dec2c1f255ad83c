"""Analysis of a canary step: take a measurement when one is due, and say where the step
stands. Measurements live in `status.analysis`, so a restart continues the same step.

With ``judge.method: mannWhitney`` a measurement also reads per-pod samples (range queries,
through the same provider) and is judged by :mod:`pilotboat.core.judge`: each signal's
history record then holds the canary's and the stable's medians (for errors, the window's
pooled error ratios), and its message (like the
measurement's summary, which the Events repeat) the test, the sample sizes, the medians, the
effect, the p-value and the score; ``status.analysis.judgement`` keeps the last score with
its verdict, thresholds and each signal's numbers as fields (:func:`judgement_record`).

A query template over a limit on untrusted input (:mod:`pilotboat.core.limits`) pauses the
step at once, naming the field and the limit: no interval is waited for and nothing is
sent to Prometheus, since no data could change the verdict."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pilotboat.adapters.metric_provider import MetricProvider, measure
from pilotboat.adapters.prometheus import prometheus_provider
from pilotboat.api import AnalysisStep, AnalysisTemplate
from pilotboat.api.common import parse_duration
from pilotboat.core.analysis import (
    Measurement,
    RunPhase,
    Verdict,
    analysis_interval,
    assess_run,
    plan_queries,
    template_limit_problems,
)
from pilotboat.core.background import assess_background, background_due_in, kept_records
from pilotboat.core.rollout import AnalysisOutcome

__all__ = [
    "DEFAULT_TEMPLATE",
    "JUDGED_DEFAULT_TEMPLATE",
    "StepAnalysis",
    "analyse_background",
    "analyse_step",
    "effective_template",
    "judgement_record",
]

HISTORY_PER_SIGNAL = 10

# With no signals declared, a canary is still judged: errors at most 1%, and p99 latency
# at most 1.5 times the stable's over the same window.
DEFAULT_SIGNALS = {
    "errors": {"maxRatio": 0.01},
    "latency": {"quantile": 0.99, "maxRatioToStable": 1.5},
}
DEFAULT_TEMPLATE = AnalysisTemplate.model_validate({"signals": DEFAULT_SIGNALS})
# With the statistical judge and no signals declared, all four golden signals are judged:
# errors and latency with the thresholds above as hard limits, traffic (the canary must not
# lose the requests its weight gives it) and saturation (CPU per request) by the judge alone.
JUDGED_DEFAULT_SIGNALS = {**DEFAULT_SIGNALS, "traffic": {}, "saturation": {}}
JUDGED_DEFAULT_TEMPLATE = AnalysisTemplate.model_validate({"signals": JUDGED_DEFAULT_SIGNALS})


def effective_template(template: AnalysisTemplate | None) -> AnalysisTemplate:
    """The template a step judges by: the strategy's, with default signals when it has none
    (all four when ``judge.method`` is mannWhitney)."""
    if template is None:
        return DEFAULT_TEMPLATE
    if template.signals is None:
        default = JUDGED_DEFAULT_TEMPLATE if template.statistical else DEFAULT_TEMPLATE
        return template.model_copy(update={"signals": default.signals})
    return template


@dataclass(frozen=True)
class StepAnalysis:
    """The outcome for the rollout core, and the status.analysis to write."""

    outcome: AnalysisOutcome
    status: dict[str, Any]
    next_due_in: float
    measured: Measurement | None


def _iso(ts: _dt.datetime) -> str:
    return ts.astimezone(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_iso(text: str | None) -> _dt.datetime | None:
    if not text:
        return None
    return _dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=_dt.UTC)


def _recorded(records: Sequence[Mapping[str, Any]], interval: str) -> list[Measurement]:
    return [
        Measurement(
            taken_at=_parse_iso(r["at"]) or _dt.datetime.now(_dt.UTC),
            interval=interval,
            sample_size=None,
            samples=(),
            verdict=Verdict(r["verdict"]),
            message=r.get("summary", ""),
        )
        for r in records
    ]


def _age(now: _dt.datetime, started_at: float | None) -> float | None:
    """Seconds since ``started_at`` (a timestamp), if known."""
    return now.timestamp() - started_at if started_at is not None else None


def _provider(url: str, cache: dict[str, MetricProvider]) -> MetricProvider:
    if url not in cache:
        cache[url] = prometheus_provider(url)
    return cache[url]


def _measure_now(
    template: AnalysisTemplate,
    service: str,
    namespace: str,
    versions: tuple[str, str],
    revisions: tuple[str, str],
    interval: str,
    now: _dt.datetime,
    prometheus_url: str | None,
    providers: dict[str, MetricProvider],
    canary_share: float | None = None,
    step_age: float | None = None,
) -> Measurement:
    """One measurement of the canary against the stable (`versions` and `revisions`: canary,
    stable) over the `interval` before `now`; an error measurement without a Prometheus."""
    if not prometheus_url:
        return Measurement(
            now, interval, None, (), Verdict.ERROR,
            "no Prometheus address: set analysis.prometheus.address "
            "or run the operator with --prometheus-url",
        )  # fmt: skip
    return measure(
        _provider(prometheus_url, providers), template, service, namespace, *versions,
        interval, now, canary_revision=revisions[0], stable_revision=revisions[1],
        canary_share=canary_share, step_age=step_age,
    )  # fmt: skip


def analyse_step(
    *,
    template: AnalysisTemplate,
    step: AnalysisStep,
    step_index: int,
    step_started_at: float | None,
    previous: Mapping[str, Any] | None,
    service: str,
    namespace: str,
    canary_version: str,
    stable_version: str,
    canary_revision: str,
    stable_revision: str,
    prometheus_url: str | None,
    providers: dict[str, MetricProvider],
    now: _dt.datetime,
    canary_share: float | None = None,
) -> StepAnalysis:
    """Measure if an interval has passed since the last measurement of this step; assess.

    Error measurements only stop a step while they last: once a measurement succeeds again,
    the errors before it are dropped (they say nothing about the canary), so a rollout
    paused because Prometheus was unreachable resumes by itself when it answers again.
    """
    previous = dict(previous or {})
    interval = analysis_interval(template, step)
    seconds = parse_duration(interval)
    plan = plan_queries(
        template, service, namespace, canary_version, stable_version, interval,
        canary_revision=canary_revision, stable_revision=stable_revision,
    )  # fmt: skip
    refused = template_limit_problems(plan)
    if refused:
        summary = "; ".join(refused)
        status = {**previous, "summary": summary}
        return StepAnalysis(AnalysisOutcome("ErrorPaused", summary), status, seconds, None)
    records = [
        dict(r) for r in previous.get("measurements", []) or [] if r.get("step") == step_index
    ]
    history = list(previous.get("history", []) or [])
    last = _parse_iso(records[-1]["at"]) if records else None
    measured: Measurement | None = None
    due = last is None or (now - last).total_seconds() >= seconds
    # The first interval starts with the step: measuring at once would judge the window
    # before the canary had its traffic.
    since_start = now.timestamp() - step_started_at if step_started_at is not None else seconds
    if last is None and since_start < seconds:
        due = False
    queries = int(previous.get("queries", 0) or 0)
    if due:
        measured = _measure_now(
            template, service, namespace, (canary_version, stable_version),
            (canary_revision, stable_revision), interval, now, prometheus_url, providers,
            canary_share, _age(now, step_started_at),
        )  # fmt: skip
        queries = measured.queries
        records.append(
            {
                "at": _iso(now),
                "step": step_index,
                "verdict": measured.verdict.value,
                "summary": measured.message,
            }
        )
        history = _trim(history + _samples(measured, now))
        judgement = judgement_record(template, measured, step_index)
        if judgement is not None:
            previous["judgement"] = judgement
    measurements = _recorded(records, interval)
    if measurements and measurements[-1].verdict is not Verdict.ERROR:
        measurements = [m for m in measurements if m.verdict is not Verdict.ERROR]
    run = assess_run(template, measurements, step)
    result = "ErrorPaused" if run.phase is RunPhase.ERROR_PAUSED else run.phase.value
    outcome = AnalysisOutcome(result, run.summary)  # type: ignore[arg-type]
    last_at = _iso(now) if due else (records[-1]["at"] if records else None)
    elapsed = 0.0 if due else ((now - last).total_seconds() if last else 0.0)
    status = {
        "history": history,
        "measurements": records[-20:],
        "lastMeasuredAt": last_at,
        "summary": run.summary,
        "queries": queries,
        **({"judgement": previous["judgement"]} if previous.get("judgement") else {}),
    }
    wait = seconds - elapsed if last is not None or due else seconds - since_start
    return StepAnalysis(outcome, status, max(wait, 0.5), measured)


def judgement_record(
    template: AnalysisTemplate, measured: Measurement, step_index: int
) -> dict[str, Any] | None:
    """``status.analysis.judgement`` (:class:`pilotboat.api.microservice.JudgementRecord`)
    from a measurement the statistical judge scored; ``None`` for any other."""
    spec, card = template.judge, measured.scorecard
    if spec is None or not template.statistical or card is None:
        return None
    chosen = spec.weights.model_dump() if spec.weights is not None else {}
    weights = {name: float(w) for name, w in chosen.items() if w is not None}
    return {
        "at": _iso(measured.taken_at),
        "step": step_index,
        "score": _finite(card.score),
        "verdict": card.verdict.value,
        "passScore": spec.pass_score,
        "marginalScore": spec.marginal_score,
        "explanation": card.explanation,
        "signals": [
            {
                "signal": j.signal,
                "test": j.test,
                "weight": weights.get(j.signal, 1.0) if j.scored else 0.0,
                "canarySamples": j.n_canary,
                "stableSamples": j.n_stable,
                "canaryMedian": _finite(j.canary_median),
                "stableMedian": _finite(j.stable_median),
                "pValue": _finite(j.p_value),
                "effect": _finite(j.effect),
                "relativeEffect": _finite(j.relative),
                "verdict": j.verdict.value,
                "explanation": j.explanation,
            }
            for j in measured.judgements
        ],
    }


def analyse_background(
    *,
    template: AnalysisTemplate,
    step_index: int,
    steps: int,
    step_started_at: float | None,
    previous: Mapping[str, Any] | None,
    service: str,
    namespace: str,
    canary_version: str,
    stable_version: str,
    canary_revision: str,
    stable_revision: str,
    prometheus_url: str | None,
    providers: dict[str, MetricProvider],
    now: _dt.datetime,
    canary_share: float | None = None,
) -> StepAnalysis:
    """Background analysis (:mod:`pilotboat.core.background`): measure when due (one
    interval after the later of the step's start and the last background measurement, so a
    window never reaches into the step before), record the measurement with the step it was
    taken at, and assess every measurement of the release so far."""
    previous = dict(previous or {})
    interval = analysis_interval(template)
    seconds = parse_duration(interval)
    plan = plan_queries(
        template, service, namespace, canary_version, stable_version, interval,
        canary_revision=canary_revision, stable_revision=stable_revision,
    )  # fmt: skip
    refused = template_limit_problems(plan)
    if refused:
        summary = "background analysis: " + "; ".join(refused)
        status = {**previous, "summary": summary}
        return StepAnalysis(AnalysisOutcome("Running", summary), status, seconds, None)
    records = [dict(r) for r in previous.get("measurements", []) or []]
    history = list(previous.get("history", []) or [])
    queries = int(previous.get("queries", 0) or 0)
    last = _parse_iso(records[-1]["at"]) if records else None
    wait = background_due_in(
        now.timestamp(), seconds, step_started_at, last.timestamp() if last else None
    )
    measured: Measurement | None = None
    if wait <= 0:
        measured = _measure_now(
            template, service, namespace, (canary_version, stable_version),
            (canary_revision, stable_revision), interval, now, prometheus_url, providers,
            canary_share, _age(now, step_started_at),
        )  # fmt: skip
        queries = measured.queries
        verdict = measured.verdict.value
        records.append({"at": _iso(now), "step": step_index, "verdict": verdict,
                        "summary": measured.message})  # fmt: skip
        history = _trim(history + _samples(measured, now))
        judgement = judgement_record(template, measured, step_index)
        if judgement is not None:
            previous["judgement"] = judgement
        wait = seconds
    outcome = assess_background(template, records, steps)
    status = {
        "history": history,
        "measurements": kept_records(records),
        "lastMeasuredAt": records[-1]["at"] if records else None,
        "summary": outcome.summary,
        "queries": queries,
        **({"judgement": previous["judgement"]} if previous.get("judgement") else {}),
    }
    return StepAnalysis(outcome, status, max(wait, 0.5), measured)


def _samples(measured: Measurement, now: _dt.datetime) -> list[dict[str, Any]]:
    """``status.analysis.history`` records of one measurement, one per signal."""
    return [
        {"signal": sample.signal, "value": _finite(sample.canary),
         "stableValue": _finite(sample.stable), "verdict": sample.verdict.value,
         "at": _iso(now), "message": sample.message}
        for sample in measured.samples
    ]  # fmt: skip


def _finite(value: float | None) -> float | None:
    if value is None or value != value or value in (float("inf"), float("-inf")):
        return None
    return float(value)


def _trim(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep the last HISTORY_PER_SIGNAL records of each signal, in order."""
    kept: list[dict[str, Any]] = []
    counts: dict[str, int] = {}
    for record in reversed(history):
        n = counts.get(record["signal"], 0)
        if n < HISTORY_PER_SIGNAL:
            kept.append(record)
            counts[record["signal"]] = n + 1
    return list(reversed(kept))
