"""Metric providers: the one contract every source of golden signals fulfils, and the
measurement that runs an interval's queries through one.

A provider answers one query at a time with a plain number. It raises
:class:`MetricQueryError` (and only that) when it cannot answer, with a message a person can
act on; :func:`measure` turns that into an *error measurement*, so a failed query never
escapes into the reconcile loop. Providers are constructed with their client injected
(``PrometheusProvider(PrometheusConnect(...))``), so tests can hand them another.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Protocol

from pilotboat.api.rollout import AnalysisTemplate
from pilotboat.core.analysis import (
    Measurement,
    QueryPlan,
    Reading,
    Verdict,
    judge,
    plan_queries,
)

__all__ = ["MetricProvider", "MetricQueryError", "measure", "read_plan"]


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


def read_plan(
    provider: MetricProvider, plan: QueryPlan, at: datetime
) -> tuple[dict[str, Reading], int]:
    """A reading for each query of `plan` that could be rendered, and how many were sent.

    Never raises: a failed query is a reading with an error. Once the provider is found
    unreachable, the remaining queries get the same error without being sent.
    """
    readings: dict[str, Reading] = {}
    sent = 0
    down: str | None = None
    for query in plan.to_send:
        assert query.expression is not None
        if down is not None:
            readings[query.key] = Reading(error=down)
            continue
        sent += 1
        try:
            readings[query.key] = Reading(provider.query(query.expression, at))
        except MetricQueryError as exc:
            readings[query.key] = Reading(error=str(exc))
            down = str(exc) if exc.unreachable else None
        except Exception as exc:  # a provider's bug must not end the reconcile either
            readings[query.key] = Reading(error=f"{type(exc).__name__}: {exc}")
    return readings, sent


def measure(
    provider: MetricProvider,
    template: AnalysisTemplate,
    service: str,
    namespace: str,
    canary_version: str,
    stable_version: str,
    interval: str,
    now: datetime,
) -> Measurement:
    """Measure the canary's golden signals over the `interval` that ends at `now`.

    Runs :func:`pilotboat.core.analysis.plan_queries`' queries through `provider` and judges
    them. Never raises: any failure is an Error verdict whose message carries the cause.
    ``Measurement.queries`` is the number of queries sent (see
    :func:`pilotboat.core.analysis.queries_per_interval` for the planned number).
    """
    try:
        plan = plan_queries(template, service, namespace, canary_version, stable_version, interval)
    except ValueError as exc:  # an interval no duration parser accepts
        return Measurement(now, interval, None, (), Verdict.ERROR, f"analysis interval: {exc}")
    readings, sent = read_plan(provider, plan, now)
    return dataclasses.replace(judge(template, plan, readings, now), queries=sent)
