"""Metric providers: the one contract every source of golden signals fulfils, and the
measurement that runs an interval's queries through one.

A provider answers one query at a time: an instant query with a plain number, a range query
(the statistical judge's samples) with one series of numbers per source. It raises
:class:`MetricQueryError` (and only that) when it cannot answer, with a message a person can
act on; :func:`measure` turns that into an *error measurement*, so a failed query never
escapes into the reconcile loop. Providers are constructed with their client injected
(``PrometheusProvider(PrometheusConnect(...))``), so tests can hand them another.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Protocol, TypeVar

from pilotboat.api.common import parse_duration
from pilotboat.api.rollout import AnalysisTemplate
from pilotboat.core.analysis import (
    Measurement,
    Query,
    QueryPlan,
    Reading,
    SampleSeries,
    SeriesReading,
    Verdict,
    judge,
    plan_queries,
)

__all__ = ["MetricProvider", "MetricQueryError", "measure", "read_plan", "read_samples"]


class MetricQueryError(Exception):
    """A query got no answer. ``str(error)`` says why, in words for a person.

    ``unreachable`` is true when the provider itself could not be reached (connection
    refused, timeout): the next query would fail the same way, so :func:`read_plan` does not
    send it.
    """

    def __init__(self, message: str, *, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable


class MetricProvider(Protocol):
    """A source of golden signals, e.g. Prometheus.

    ``query(expression, at)`` evaluates one instant query at time ``at`` (so that canary and
    stable are measured over the same window) and returns its single value: a float, which
    may be NaN or infinite (the caller judges those as no data), or ``None`` for an empty
    result. A result with more than one series, a rejected query, an HTTP error or an
    unreachable server raise :class:`MetricQueryError`; nothing else is raised.
    """

    def query(self, expression: str, at: datetime) -> float | None: ...

    def query_range(
        self, expression: str, start: datetime, end: datetime, step: float
    ) -> Sequence[SampleSeries]:
        """Evaluate `expression` every `step` seconds from `start` to `end`, both included:
        one :class:`SampleSeries` per series of the result (named by its ``pod`` label, else
        its ``instance``), values oldest first. Raises as :meth:`query` does."""
        ...


_Answer = TypeVar("_Answer", Reading, SeriesReading)


def _send_all(
    queries: Sequence[Query],
    ask: Callable[[str], _Answer],
    failed: Callable[[str], _Answer],
    down: str | None = None,
) -> tuple[dict[str, _Answer], int, str | None]:
    """Each query's answer, how many were sent, and why the provider is unreachable (if it
    is): once it is found so, the remaining queries get that error without being sent."""
    answers: dict[str, _Answer] = {}
    sent = 0
    for query in queries:
        assert query.expression is not None
        if down is not None:
            answers[query.key] = failed(down)
            continue
        sent += 1
        try:
            answers[query.key] = ask(query.expression)
        except MetricQueryError as exc:
            answers[query.key] = failed(str(exc))
            down = str(exc) if exc.unreachable else None
        except Exception as exc:  # a provider's bug must not end the reconcile either
            answers[query.key] = failed(f"{type(exc).__name__}: {exc}")
    return answers, sent, down


def read_plan(
    provider: MetricProvider, plan: QueryPlan, at: datetime
) -> tuple[dict[str, Reading], int]:
    """A reading for each query of `plan` that could be rendered, and how many were sent.

    Never raises: a failed query is a reading with an error. Once the provider is found
    unreachable, the remaining queries get the same error without being sent.
    """
    readings, sent, _ = _send_all(
        plan.to_send,
        lambda expression: Reading(provider.query(expression, at)),
        lambda error: Reading(error=error),
    )
    return readings, sent


def read_samples(
    provider: MetricProvider, plan: QueryPlan, at: datetime, down: str | None = None
) -> tuple[dict[str, SeriesReading], int]:
    """A series reading for each sample query of `plan`, over the ``plan.window`` that ends
    at `at`, and how many were sent. Never raises, like :func:`read_plan`; `down` is the
    error of a provider already found unreachable, which then is not asked at all."""
    if not plan.samples_to_send or plan.step is None or plan.window is None:
        return {}, 0
    step = parse_duration(plan.step)
    window = parse_duration(plan.window)
    series: dict[str, SeriesReading] = {}
    sent = 0
    for counter in (True, False):
        # A counter's values are read from the window's start, so that their increases
        # cover it all; a per-step value (a rate over the step) from the end of the first
        # step, so that the first sample's slice starts where the window does.
        start = at - timedelta(seconds=window if counter else window - step)

        def ask(expression: str, start: datetime = start) -> SeriesReading:
            return SeriesReading(tuple(provider.query_range(expression, start, at, step)))

        found, asked, down = _send_all(
            [q for q in plan.samples_to_send if q.counter is counter],
            ask,
            lambda error: SeriesReading(error=error),
            down,
        )
        series.update(found)
        sent += asked
    return series, sent


def measure(
    provider: MetricProvider,
    template: AnalysisTemplate,
    service: str,
    namespace: str,
    canary_version: str,
    stable_version: str,
    interval: str,
    now: datetime,
    *,
    canary_revision: str,
    stable_revision: str,
    canary_share: float | None = None,
    step_age: float | None = None,
) -> Measurement:
    """Measure the canary's golden signals over the `interval` that ends at `now`.

    Each track is named by its version and its revision (the pods' ``pilotboat.dev/revision``
    label), which the default queries select on. ``canary_share`` is the share of all
    requests a route gives the canary (see :func:`pilotboat.core.analysis.judge`), ``step_age``
    how long ago the release's current step began (the judge's window never reaches back
    past it: :func:`pilotboat.core.analysis.plan_queries`).

    Runs :func:`pilotboat.core.analysis.plan_queries`' queries (and, for the statistical
    judge, its range queries) through `provider` and judges them. Never raises: any failure
    is an Error verdict whose message carries the cause. ``Measurement.queries`` is the
    number of queries sent (see :func:`pilotboat.core.analysis.queries_per_interval` for the
    planned number).
    """
    try:
        plan = plan_queries(
            template, service, namespace, canary_version, stable_version, interval,
            canary_revision=canary_revision, stable_revision=stable_revision, step_age=step_age,
        )  # fmt: skip
    except ValueError as exc:  # an interval no duration parser accepts
        return Measurement(now, interval, None, (), Verdict.ERROR, f"analysis interval: {exc}")
    readings, sent, down = _send_all(
        plan.to_send,
        lambda expression: Reading(provider.query(expression, now)),
        lambda error: Reading(error=error),
    )
    series, sampled = read_samples(provider, plan, now, down)
    return judge(template, plan, readings, now, sent + sampled, series, canary_share)
