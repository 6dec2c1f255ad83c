"""Golden-signal analysis: the queries a canary is measured with, and the verdicts on them.

Pure. Three steps, of which only the middle one talks to the world (in the adapters):

1. :func:`plan_queries` renders the PromQL for one interval: per judged signal one query for
   the canary and one for the stable version over the same window, plus the number of canary
   requests in the window (the sample size).
2. A metric provider answers each query with a :class:`Reading`: a number, or why there is
   none. Nothing here raises for a failed query: it becomes an *error measurement*.
3. :func:`judge` turns the readings into a :class:`Measurement`, and :func:`assess_run` turns
   the measurements of one analysis step into an :class:`AnalysisRunVerdict`.

Verdicts, from best to worst: Successful, Inconclusive, Error, Failed. A measurement is as bad
as its worst signal; only Successful counts as a pass. No data (an empty result, ``NaN``,
``+Inf``) is an Error, fewer canary requests than ``minSampleSize`` is Inconclusive, and only
a number beyond a threshold is Failed.

Default queries (``DEFAULT_QUERIES``), over the ``http_requests_total`` counter and the
``http_request_duration_seconds`` histogram, whose series carry the labels ``namespace``,
``service`` (the pod's ``app.kubernetes.io/name``) and ``revision`` (``pilotboat.dev/revision``,
the digest of the pod template the operator puts on each track's pods) by relabelling, plus
``code`` from the service itself. They select each track by ``revision``, not ``version``: a
release that changes only the image or the env under the same ``version`` is judged on its
own pods against the stable's.

- errors: the share of 5xx answers among all answers in the window;
- latency: the ``quantile`` of request durations in the window;
- traffic: requests per second;
- saturation: the in-flight requests of the busiest instance (the gauge
  ``http_requests_in_flight``), or, where a service has no such gauge, the CPU seconds per
  second of its busiest instance (``process_cpu_seconds_total``, which Prometheus client
  libraries export). In-flight requests come first because they measure how full the
  service is whatever its CPU limit, and need no cAdvisor series joined by pod name;
  thresholds on saturation are in the units of whichever series answered.

With ``judge.method: mannWhitney`` (:mod:`pilotboat.core.judge`) a measurement also reads
*samples*: for every declared signal, per pod of each track, one value per ``judge.step`` over
``judge.window`` (the interval when unset), from a range query. All four signals
without a ``query`` of their own read *counters* (``DEFAULT_SAMPLE_QUERIES`` and, for the
denominator, ``DEFAULT_SAMPLE_TOTALS``: the counters themselves ``by (pod, instance)``, no
``rate()``) from the window's start to its end, so that their increases cover every request
of the window exactly once: errors are judged on pooled counts (errors and requests of each
track over the window, Fisher's exact test), latency on per-step mean latency (``_sum`` over
``_count`` of the histogram), traffic on per-step request rates, saturation on per-step CPU
per request (the increase of the pod's own ``process_cpu_seconds_total``, which Prometheus
client libraries export, over its requests': a version that burns twice the CPU for the same
work shows whatever the load, where CPU per pod moves with the traffic a pod happens to get;
its floor is :data:`CPU_PER_REQUEST_FLOOR`). A signal's
``query`` override is a range query of per-step values with ``{{ interval }}`` the step;
each series one returns is one source. The thresholds stay hard limits: a canary beyond one
fails whatever the score says.

Every query, the defaults and a signal's ``query`` override alike, is a Jinja2 template
rendered with ``service``, ``namespace``, ``version`` (the track's ``spec.version``),
``revision`` (the track's pod-template revision: the desired one for the canary, the label on
the stable Deployment's pods for the stable, ``""`` when those pods have none, which
``revision=""`` selects), ``interval`` (a PromQL duration) and, for latency, ``quantile``;
an unknown placeholder is an Error naming it. Templates are
tenants' input: they render in :class:`pilotboat.core.limits.QueryTemplateSandbox`, which
refuses loops, calls and anything that would build more than ``MAX_TEMPLATE_OUTPUT``
characters before building it (:func:`template_limit_problems` lists those refusals).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from functools import lru_cache
from typing import Literal

import jinja2

from pilotboat.api.common import format_duration, parse_duration
from pilotboat.api.rollout import (
    MAX_JUDGE_SAMPLES,
    AnalysisJudge,
    AnalysisStep,
    AnalysisTemplate,
    ErrorsSignal,
    LatencySignal,
    SaturationSignal,
    TrafficSignal,
)
from pilotboat.core.judge import (
    ABSOLUTE_FLOORS,
    TEST_NAME,
    Criteria,
    Direction,
    Scorecard,
    ScoreVerdict,
    SignalJudgement,
    SignalVerdict,
    compare_proportions,
    compare_signal,
    counter_increases,
    counts_from_counters,
    score,
    step_means,
)
from pilotboat.core.limits import (
    TemplateLimitExceeded,
    compile_query_template,
    render_query_template,
)

__all__ = [
    "SIGNALS",
    "SAMPLE_SIZE",
    "DEFAULT_QUERIES",
    "DEFAULT_SAMPLE_QUERIES",
    "DEFAULT_SAMPLE_TOTALS",
    "DEFAULT_DIRECTIONS",
    "Signal",
    "Verdict",
    "RunPhase",
    "Query",
    "QueryPlan",
    "Reading",
    "SampleSeries",
    "SeriesReading",
    "GoldenSignalSample",
    "Measurement",
    "AnalysisRunVerdict",
    "analysis_interval",
    "judged_signals",
    "sampled_signals",
    "queries_per_interval",
    "plan_queries",
    "template_limit_problems",
    "judge",
    "per_routed_share",
    "assess_run",
]

Signal = Literal["errors", "latency", "traffic", "saturation"]
SIGNALS: tuple[Signal, ...] = ("errors", "latency", "traffic", "saturation")
SAMPLE_SIZE = "requests"
"""The key of the sample-size query in a :class:`QueryPlan`."""

_SELECTOR = 'namespace="{{ namespace }}",service="{{ service }}",revision="{{ revision }}"'
_WINDOW = "[{{ interval }}]"

DEFAULT_QUERIES: Mapping[str, str] = {
    "errors": (
        f'(sum(rate(http_requests_total{{{_SELECTOR},code=~"5.."}}{_WINDOW})) or vector(0))'
        f" / sum(rate(http_requests_total{{{_SELECTOR}}}{_WINDOW}))"
    ),
    "latency": (
        "histogram_quantile({{ quantile }}, sum by (le) "
        f"(rate(http_request_duration_seconds_bucket{{{_SELECTOR}}}{_WINDOW})))"
    ),
    "traffic": f"sum(rate(http_requests_total{{{_SELECTOR}}}{_WINDOW}))",
    "saturation": (
        f"max(http_requests_in_flight{{{_SELECTOR}}})"
        f" or max(rate(process_cpu_seconds_total{{{_SELECTOR}}}{_WINDOW}))"
    ),
    SAMPLE_SIZE: f"sum(increase(http_requests_total{{{_SELECTOR}}}{_WINDOW})) or vector(0)",
}
"""PromQL templates used when a signal has no ``query`` of its own (see the module doc)."""

_BY_POD = "by (pod, instance)"

_REQUESTS = f"sum {_BY_POD} (http_requests_total{{{_SELECTOR}}})"

DEFAULT_SAMPLE_QUERIES: Mapping[str, str] = {
    # 0 for a pod without a 5xx series yet, so that its first errors count once it has one
    "errors": (
        f'sum {_BY_POD} (http_requests_total{{{_SELECTOR},code=~"5.."}}) or 0 * {_REQUESTS}'
    ),
    "latency": f"sum {_BY_POD} (http_request_duration_seconds_sum{{{_SELECTOR}}})",
    "traffic": _REQUESTS,
    # CPU per request: the process's CPU seconds over its requests, step by step
    "saturation": f"sum {_BY_POD} (process_cpu_seconds_total{{{_SELECTOR}}})",
}
"""Range-query templates of the judge's samples: one series per pod (``pod`` on a cluster,
``instance`` for a target without one). All four are counters, read as they are (see
:data:`COUNTED_SIGNALS`); a signal's own ``query`` is a value per step, ``{{ interval }}``
being the judge's step."""

DEFAULT_SAMPLE_TOTALS: Mapping[str, str] = {
    "errors": _REQUESTS,
    "latency": f"sum {_BY_POD} (http_request_duration_seconds_count{{{_SELECTOR}}})",
    "saturation": _REQUESTS,
}
"""The denominators of the counted signals that are ratios: requests for errors, observations
for latency's mean, requests for saturation's CPU per request. Their keys in a plan are
``<signal>.<track>.total``."""

COUNTED_SIGNALS = frozenset({"errors", "latency", "traffic", "saturation"})
"""Signals whose default sample queries are counters, read from the window's start."""

DEFAULT_DIRECTIONS: Mapping[str, Direction] = {
    "errors": Direction.INCREASE,
    "latency": Direction.INCREASE,
    "traffic": Direction.DECREASE,
    "saturation": Direction.INCREASE,
}
"""Which way each signal may not move, unless ``judge.directions`` says otherwise."""


class Verdict(StrEnum):
    """What one signal, or one measurement, says about the canary."""

    SUCCESSFUL = "Successful"
    INCONCLUSIVE = "Inconclusive"
    ERROR = "Error"
    FAILED = "Failed"


_SEVERITY = {v: i for i, v in enumerate(Verdict)}


class RunPhase(StrEnum):
    """Where an analysis step stands; every phase but Running is final for the step.

    Successful: go on to the next step. Failed: roll back. Inconclusive and ErrorPaused:
    pause the rollout for a human.
    """

    RUNNING = "Running"
    SUCCESSFUL = "Successful"
    FAILED = "Failed"
    INCONCLUSIVE = "Inconclusive"
    ERROR_PAUSED = "ErrorPaused"


@dataclass(frozen=True)
class Query:
    """One rendered query, or why its template could not be rendered."""

    key: str
    expression: str | None
    error: str | None = None
    over_limit: bool = False
    """The template was refused by a limit on untrusted input (:mod:`pilotboat.core.limits`),
    not by a mistake in it: it would be refused whatever the data."""
    counter: bool = False
    """A range query of a counter's values: read from the window's start (one value more
    than a query of per-step values), so that its increases cover the whole window."""


@dataclass(frozen=True)
class QueryPlan:
    """The queries of one analysis interval, keyed ``requests``, ``<signal>.canary`` and
    ``<signal>.stable``; only the ones with an expression are sent.

    ``sample_queries`` (the same keys, in a namespace of their own) are the statistical
    judge's range queries over ``window`` at ``step``; empty unless ``judge.method`` is
    mannWhitney."""

    interval: str
    queries: tuple[Query, ...]
    sample_queries: tuple[Query, ...] = ()
    step: str | None = None
    window: str | None = None

    @property
    def to_send(self) -> tuple[Query, ...]:
        """The queries a provider is asked, in order."""
        return tuple(q for q in self.queries if q.expression is not None)

    @property
    def samples_to_send(self) -> tuple[Query, ...]:
        """The range queries a provider is asked, in order."""
        return tuple(q for q in self.sample_queries if q.expression is not None)


@dataclass(frozen=True)
class Reading:
    """A provider's answer to one query: a number (possibly NaN or infinite), nothing (an
    empty result), or the reason there is no answer."""

    value: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class SampleSeries:
    """One source's samples of one range query: a pod (or a target) and its values, one per
    step, oldest first; NaN where the step had nothing to say (no requests)."""

    source: str
    values: tuple[float, ...]


@dataclass(frozen=True)
class SeriesReading:
    """A provider's answer to one range query: its series, or the reason there are none."""

    series: tuple[SampleSeries, ...] = ()
    error: str | None = None


@dataclass(frozen=True)
class GoldenSignalSample:
    """One signal in one interval: the canary's value, the stable's over the same window."""

    signal: Signal
    canary: float | None
    stable: float | None
    verdict: Verdict
    message: str


@dataclass(frozen=True)
class Measurement:
    """One analysis interval's verdict: the worst of its signals'."""

    taken_at: datetime
    interval: str
    sample_size: float | None
    samples: tuple[GoldenSignalSample, ...]
    verdict: Verdict
    message: str
    queries: int = 0
    """How many queries the provider was sent for this measurement."""
    judgements: tuple[SignalJudgement, ...] = ()
    """The statistical judge's verdicts (``judge.method: mannWhitney``), one per signal."""
    score: float | None = None
    """The statistical judge's score, 0 to 100, when it had a conclusive signal."""
    scorecard: Scorecard | None = None
    """The statistical judge's score with its verdict (Pass, Marginal, Fail, Inconclusive)
    and explanation, when the judge ran."""


@dataclass(frozen=True)
class AnalysisRunVerdict:
    """The state of one analysis step after its measurements so far."""

    phase: RunPhase
    summary: str
    required: int
    taken: int
    passed: int
    failed: int
    inconclusive: int
    errors: int
    consecutive_errors: int


def analysis_interval(template: AnalysisTemplate, step: AnalysisStep | None = None) -> str:
    """The length of one interval as a PromQL duration: the step's, else the template's.

    >>> analysis_interval(AnalysisTemplate(interval="1m30s"))
    '1m30s'
    >>> analysis_interval(AnalysisTemplate(), AnalysisStep(interval="10s"))
    '10s'
    """
    text = step.interval if step is not None and step.interval else template.interval
    return format_duration(parse_duration(text))


_AnySignal = ErrorsSignal | LatencySignal | TrafficSignal | SaturationSignal


def _thresholds(spec: _AnySignal) -> tuple[float | None, ...]:
    if isinstance(spec, ErrorsSignal):
        return (spec.max_ratio, spec.max_increase_over_stable)
    if isinstance(spec, LatencySignal):
        return (spec.max_seconds, spec.max_ratio_to_stable)
    if isinstance(spec, TrafficSignal):
        return (spec.min_rate,)
    return (spec.max,)


def judged_signals(template: AnalysisTemplate) -> tuple[tuple[Signal, _AnySignal], ...]:
    """The signals that have at least one threshold, in :data:`SIGNALS` order; the others
    get no instant query and no threshold verdict (:func:`sampled_signals` may still judge
    them)."""
    if template.signals is None:
        return ()
    found = []
    for name in SIGNALS:
        spec: _AnySignal | None = getattr(template.signals, name)
        if spec is not None and any(t is not None for t in _thresholds(spec)):
            found.append((name, spec))
    return tuple(found)


def sampled_signals(template: AnalysisTemplate) -> tuple[tuple[Signal, _AnySignal], ...]:
    """The signals the statistical judge compares: every declared one, thresholds or not,
    when ``judge.method`` is mannWhitney; none otherwise."""
    if not template.statistical or template.signals is None:
        return ()
    found = []
    for name in SIGNALS:
        spec: _AnySignal | None = getattr(template.signals, name)
        if spec is not None:
            found.append((name, spec))
    return tuple(found)


def queries_per_interval(template: AnalysisTemplate) -> int:
    """How many queries one measurement sends: the sample size, then canary and stable for
    each judged signal, and canary and stable range queries for each sampled signal (two
    each, numerator and total, for errors and latency read from counters).

    >>> queries_per_interval(AnalysisTemplate.model_validate(
    ...     {"signals": {"errors": {"maxRatio": 0.01}, "latency": {"maxSeconds": 0.5}}}))
    5
    >>> queries_per_interval(AnalysisTemplate.model_validate(
    ...     {"signals": {"errors": {"maxRatio": 0.01}, "traffic": {}},
    ...      "judge": {"method": "mannWhitney"}}))
    9
    """
    sampled = sampled_signals(template)
    totals = [n for n, spec in sampled if _counted(n, spec) and n in DEFAULT_SAMPLE_TOTALS]
    return 1 + 2 * len(judged_signals(template)) + 2 * len(sampled) + 2 * len(totals)


def _counted(name: Signal, spec: _AnySignal) -> bool:
    """Whether the judge reads the signal from counters: a default query of a counted signal."""
    return name in COUNTED_SIGNALS and spec.query is None


@lru_cache(maxsize=256)
def _compile(source: str) -> jinja2.Template:
    return compile_query_template(source)


def _render(key: str, source: str, values: Mapping[str, object]) -> Query:
    try:
        return Query(key, render_query_template(_compile(source), values).strip())
    except jinja2.TemplateSyntaxError as exc:
        return Query(key, None, f"query template: {exc.message} (line {exc.lineno})")
    except TemplateLimitExceeded as exc:
        return Query(key, None, f"query template: {exc}", over_limit=True)
    except Exception as exc:  # its own mistake ({{ 1 / 0 }}): an Error, not a crashed pass
        return Query(key, None, f"query template: {exc}")


def plan_queries(
    template: AnalysisTemplate,
    service: str,
    namespace: str,
    canary_version: str,
    stable_version: str,
    interval: str,
    *,
    canary_revision: str = "",
    stable_revision: str = "",
    step_age: float | None = None,
) -> QueryPlan:
    """Render every query of one interval; a template error is kept on its :class:`Query`.

    Each track's query reads its ``version`` and ``revision`` (the default queries select on
    ``revision``; a revision left out is ``""``, the series without the label).
    ``step_age`` is how long ago the release's current step began, in seconds: the judge's
    samples never reach back past it (:func:`_sampling`).

    >>> plan = plan_queries(
    ...     AnalysisTemplate.model_validate({"signals": {"errors": {"maxRatio": 0.01,
    ...         "query": "my_errors{service='{{ service }}',v='{{ version }}'}[{{ interval }}]"}}}),
    ...     "cart", "shop", "v2", "v1", "30s")
    >>> [(q.key, q.expression) for q in plan.queries][1:]
    [('errors.canary', "my_errors{service='cart',v='v2'}[30s]"), \
('errors.stable', "my_errors{service='cart',v='v1'}[30s]")]
    """
    window = format_duration(parse_duration(interval))
    base: dict[str, object] = {"service": service, "namespace": namespace, "interval": window}
    tracks = (
        ("canary", {"version": canary_version, "revision": canary_revision}),
        ("stable", {"version": stable_version, "revision": stable_revision}),
    )
    queries = [_render(SAMPLE_SIZE, DEFAULT_QUERIES[SAMPLE_SIZE], base | tracks[0][1])]
    for name, spec in judged_signals(template):
        source = spec.query or DEFAULT_QUERIES[name]
        values = dict(base)
        if isinstance(spec, LatencySignal):
            values["quantile"] = spec.quantile
        for track, identity in tracks:
            queries.append(_render(f"{name}.{track}", source, values | identity))
    judge_spec = template.judge
    if judge_spec is None or not sampled_signals(template):
        return QueryPlan(window, tuple(queries))
    step, span, problem = _sampling(judge_spec, window, step_age)
    samples = []
    for name, spec in sampled_signals(template):
        counted = _counted(name, spec)
        sources = [("", spec.query or DEFAULT_SAMPLE_QUERIES[name])]
        if counted and name in DEFAULT_SAMPLE_TOTALS:
            sources.append((".total", DEFAULT_SAMPLE_TOTALS[name]))
        values = base | {"interval": step}
        if isinstance(spec, LatencySignal):
            values["quantile"] = spec.quantile
        for suffix, source in sources:
            for track, identity in tracks:
                key = f"{name}.{track}{suffix}"
                if problem is not None:
                    samples.append(Query(key, None, problem, counter=counted))
                else:
                    query = _render(key, source, values | identity)
                    samples.append(replace(query, counter=counted))
    return QueryPlan(window, tuple(queries), tuple(samples), step, span)


def _sampling(
    judge_spec: AnalysisJudge, interval: str, step_age: float | None = None
) -> tuple[str, str, str | None]:
    """The judge's step and window as PromQL durations, and why they cannot be used, if so.

    A window that would reach back past the start of the release's current step
    (``step_age`` seconds ago) is cut to the whole judge steps since then, so that samples
    of the weight before, or of the canary before its pods were ready, never mix in; never
    shorter than one judge step, nor than the interval.

    >>> j = AnalysisJudge.model_validate({"method": "mannWhitney", "step": "4s", "window": "60s"})
    >>> _sampling(j, "10s"), _sampling(j, "10s", step_age=26.5), _sampling(j, "10s", 7.0)
    (('4s', '1m', None), ('4s', '24s', None), ('4s', '10s', None))
    """
    step = parse_duration(judge_spec.step)
    window = parse_duration(judge_spec.window or interval)
    if step_age is not None and step > 0 and window > step_age:
        whole_steps = step * math.floor(step_age / step)
        window = max(whole_steps, step, min(window, parse_duration(interval)))
    shown = format_duration(step), format_duration(window)
    if window < step:
        return *shown, f"judge.step {shown[0]} is longer than the window {shown[1]}"
    if window / step > MAX_JUDGE_SAMPLES:
        problem = (
            f"judge.step {shown[0]} gives {window / step:.0f} samples per series"
            f" in {shown[1]}, more than {MAX_JUDGE_SAMPLES}"
        )
        return *shown, problem
    return *shown, None


def template_limit_problems(plan: QueryPlan) -> list[str]:
    """The signals whose query template a limit on untrusted input refused, one message
    each, naming the field: ``analysis.signals.errors.query: query template: ...``.

    >>> t = AnalysisTemplate.model_validate(
    ...     {"signals": {"errors": {"maxRatio": 0.01, "query": "{{ 'x' * 10**9 }}"}}})
    >>> template_limit_problems(plan_queries(t, "cart", "shop", "v2", "v1", "30s"))
    ["analysis.signals.errors.query: query template: 'x' * 1000000000 would be 1000000000 \
characters long, more than 65536 (limit MAX_TEMPLATE_OUTPUT = 65536)"]
    """
    problems: dict[str, str] = {}
    for query in plan.queries + plan.sample_queries:
        if query.over_limit:
            signal = query.key.split(".")[0]
            problems.setdefault(signal, f"analysis.signals.{signal}.query: {query.error}")
    return list(problems.values())


# --- judging one interval -------------------------------------------------------------------


def _decimals(a: float, b: float, scale: float, base: int) -> int:
    """Enough decimals (from `base`, at most 3 more) that `a` and `b` print differently."""
    for digits in range(base, base + 4):
        if f"{a * scale:.{digits}f}" != f"{b * scale:.{digits}f}":
            return digits
    return base


def _pct(value: float, digits: int = 1) -> str:
    return f"{value * 100:.{digits}f}%"


def _secs(value: float, digits: int = 2) -> str:
    return f"{value:.{digits}f}s"


def _rate(value: float, digits: int = 2) -> str:
    return f"{value:.{digits}f} req/s"


def _plain(value: float, digits: int = 2) -> str:
    return f"{value:.{digits}f}"


def _latency_label(quantile: float) -> str:
    return f"p{round(quantile * 100, 6):g} latency"


def _label(name: Signal, spec: _AnySignal) -> str:
    if isinstance(spec, LatencySignal):
        return _latency_label(spec.quantile)
    return {"errors": "error ratio", "traffic": "request rate", "saturation": "saturation"}[name]


@dataclass(frozen=True)
class _Check:
    verdict: Verdict
    message: str


def _no_data(value: float | None) -> str:
    if value is None:
        return "no data (empty result)"
    return f"no data ({'NaN' if math.isnan(value) else format(value, '+')})"


_Format = Callable[[float, int], str]


def _compare(
    label: str,
    canary: float,
    stable: float | None,
    limit: float,
    fmt: _Format,
    upper: bool,
    stable_note: str = "",
) -> _Check:
    """`canary` against `limit` (a ceiling when `upper`, else a floor), with the stable's
    value for context: ``error ratio 4.1% > 1.0% (stable 0.3%)``."""
    passed = canary <= limit if upper else canary >= limit
    op = ("<=" if passed else ">") if upper else (">=" if passed else "<")
    percent = fmt is _pct
    digits = _decimals(canary, limit, 100 if percent else 1, 1 if percent else 2)
    context = "no data" if stable is None or not math.isfinite(stable) else fmt(stable, digits)
    return _Check(
        Verdict.SUCCESSFUL if passed else Verdict.FAILED,
        f"{label} {fmt(canary, digits)} {op} {fmt(limit, digits)} (stable {context}{stable_note})",
    )


def _absolute(spec: _AnySignal) -> tuple[float | None, _Format, bool]:
    """The signal's absolute threshold, how its values print, and whether it is a ceiling."""
    if isinstance(spec, ErrorsSignal):
        return spec.max_ratio, _pct, True
    if isinstance(spec, LatencySignal):
        return spec.max_seconds, _secs, True
    if isinstance(spec, TrafficSignal):
        return spec.min_rate, _rate, False
    return spec.max, _plain, True


def _relative(spec: _AnySignal, stable: float) -> tuple[float, str] | None:
    """The ceiling that a threshold relative to the stable's value sets, and how to say it."""
    if isinstance(spec, ErrorsSignal) and spec.max_increase_over_stable is not None:
        x = spec.max_increase_over_stable
        return stable + x, f" + {_pct(x)}"
    if isinstance(spec, LatencySignal) and spec.max_ratio_to_stable is not None:
        x = spec.max_ratio_to_stable
        return stable * x, f" x {x:g}"
    return None


def _checks(label: str, spec: _AnySignal, canary: float, stable: float | None) -> list[_Check]:
    """Every threshold `spec` sets, applied; one relative to a stable version without data
    is inconclusive."""
    limit, fmt, upper = _absolute(spec)
    checks = [] if limit is None else [_compare(label, canary, stable, limit, fmt, upper)]
    if stable is None or not math.isfinite(stable):
        if _relative(spec, 0.0) is not None:
            message = f"{label} {fmt(canary, 2)} not compared: stable has {_no_data(stable)}"
            checks.append(_Check(Verdict.INCONCLUSIVE, message))
    else:
        relative = _relative(spec, stable)
        if relative is not None:
            checks.append(_compare(label, canary, stable, relative[0], fmt, True, relative[1]))
    return checks


def _judge_signal(
    name: Signal,
    spec: _AnySignal,
    canary: Reading,
    stable: Reading,
    gate: tuple[Verdict, str, str | None] | None,
) -> tuple[GoldenSignalSample, str | None]:
    """The signal's sample, and the cause when its verdict is Error."""
    label = _label(name, spec)

    def sample(
        verdict: Verdict, message: str, cause: str | None = None
    ) -> tuple[GoldenSignalSample, str | None]:
        return GoldenSignalSample(name, canary.value, stable.value, verdict, message), cause

    for reading, track in ((canary, ""), (stable, "stable ")):
        if reading.error is not None:
            return sample(Verdict.ERROR, f"{track}{label}: {reading.error}", reading.error)
    if gate is not None:
        return sample(*gate)
    if canary.value is None or not math.isfinite(canary.value):
        cause = _no_data(canary.value)
        return sample(Verdict.ERROR, f"{label}: {cause}", cause)
    checks = _checks(label, spec, canary.value, stable.value)
    verdict = max((c.verdict for c in checks), key=_SEVERITY.__getitem__)
    shown = checks if verdict is Verdict.SUCCESSFUL else [c for c in checks if c.verdict is verdict]
    return sample(verdict, "; ".join(c.message for c in shown))


_Gate = tuple[Verdict, str, str | None]


def _sample_gate(
    reading: Reading, minimum: int, interval: str
) -> tuple[float | None, _Gate | None]:
    """The sample size, and the verdict (with message and cause) every signal gets when the
    sample cannot be judged."""
    if reading.error is not None:
        return None, (Verdict.ERROR, f"canary requests: {reading.error}", reading.error)
    size = 0.0 if reading.value is None else reading.value
    if not math.isfinite(size):
        cause = _no_data(size)
        return None, (Verdict.ERROR, f"canary requests: {cause}", cause)
    if minimum > 0 and round(size) < minimum:
        message = f"only {round(size)} canary requests in {interval} < minimum {minimum}"
        return size, (Verdict.INCONCLUSIVE, f"{message}: inconclusive", None)
    return size, None


def _summarise(judged: Sequence[tuple[GoldenSignalSample, str | None]], verdict: Verdict) -> str:
    """The messages of the worst samples, each once; when several samples could not be taken
    for one and the same cause (Prometheus unreachable), that cause alone."""
    worst = [(s.message, cause) for s, cause in judged if s.verdict is verdict]
    causes = {cause for _, cause in worst}
    if verdict is Verdict.ERROR and len(worst) > 1 and len(causes) == 1 and None not in causes:
        return str(causes.pop())
    return "; ".join(dict.fromkeys(message for message, _ in worst))


def judge(
    template: AnalysisTemplate,
    plan: QueryPlan,
    readings: Mapping[str, Reading],
    now: datetime,
    queries: int = 0,
    series: Mapping[str, SeriesReading] | None = None,
    canary_share: float | None = None,
) -> Measurement:
    """The verdict on one interval, given a reading for each query of `plan` and, for the
    statistical judge, a series reading for each of its sample queries.

    ``canary_share`` is the share of all requests a route (Gateway API) gives the canary, 0
    to 1; the judge compares traffic over each pod's share (:func:`per_routed_share`). None
    under a replica ratio, where every ready pod gets the same share.

    A query missing from `readings` (or `series`) counts as one that failed; a query that
    could not be rendered is an Error naming the problem. `queries` is recorded as the number
    sent. With ``judge.method: mannWhitney`` see :func:`_judge_by_score`.

    >>> t = AnalysisTemplate.model_validate(
    ...     {"minSampleSize": 20, "signals": {"errors": {"maxRatio": 0.01}}})
    >>> plan = plan_queries(t, "cart", "shop", "v2", "v1", "30s")
    >>> def verdict(requests, canary, stable):
    ...     r = {"requests": Reading(requests), "errors.canary": Reading(canary),
    ...          "errors.stable": Reading(stable)}
    ...     m = judge(t, plan, r, datetime(2024, 1, 1))
    ...     return m.verdict.value, m.message
    >>> verdict(120, 0.041, 0.003)
    ('Failed', 'error ratio 4.1% > 1.0% (stable 0.3%)')
    >>> verdict(120, 0.002, 0.003)
    ('Successful', 'error ratio 0.2% <= 1.0% (stable 0.3%)')
    >>> verdict(7, 0.5, 0.003)
    ('Inconclusive', 'only 7 canary requests in 30s < minimum 20: inconclusive')
    >>> verdict(120, float("nan"), 0.003)
    ('Error', 'error ratio: no data (NaN)')
    >>> verdict(120, None, 0.003)
    ('Error', 'error ratio: no data (empty result)')
    """
    by_key = {q.key: q for q in plan.queries}

    def reading(key: str) -> Reading:
        query = by_key.get(key)
        if query is not None and query.error is not None:
            return Reading(error=query.error)
        return readings.get(key, Reading(error="no answer to the query"))

    size, gate = _sample_gate(reading(SAMPLE_SIZE), template.min_sample_size, plan.interval)
    judged = [
        _judge_signal(name, spec, reading(f"{name}.canary"), reading(f"{name}.stable"), gate)
        for name, spec in judged_signals(template)
    ]
    if template.judge is not None and sampled_signals(template):
        by_key = {q.key: q for q in plan.sample_queries}

        def series_reading(key: str) -> SeriesReading:
            query = by_key.get(key)
            if query is not None and query.error is not None:
                return SeriesReading(error=query.error)
            return (series or {}).get(key, SeriesReading(error="no answer to the query"))

        verdict, message, merged, judgements, card = _judge_by_score(
            template,
            template.judge,
            judged,
            series_reading,
            gate,
            parse_duration(plan.step) if plan.step else 1.0,
            canary_share,
        )
        return Measurement(
            now, plan.interval, size, merged, verdict, message, queries, judgements, card.score,
            card,
        )  # fmt: skip
    samples = tuple(sample for sample, _ in judged)
    if not samples:
        verdict = Verdict.INCONCLUSIVE
        message = "no golden signal has a threshold: nothing to judge"
        if gate is not None and gate[0] is Verdict.ERROR:
            verdict, message = gate[0], gate[1]
    else:
        verdict = max((s.verdict for s in samples), key=_SEVERITY.__getitem__)
        message = _summarise(judged, verdict)
    return Measurement(now, plan.interval, size, samples, verdict, message, queries)


# --- judging one interval by statistics -----------------------------------------------------

_BY_SCORE = {
    ScoreVerdict.PASS: Verdict.SUCCESSFUL,
    ScoreVerdict.MARGINAL: Verdict.INCONCLUSIVE,
    ScoreVerdict.INCONCLUSIVE: Verdict.INCONCLUSIVE,
    ScoreVerdict.FAIL: Verdict.FAILED,
}
_BY_SIGNAL = {
    SignalVerdict.PASS: Verdict.SUCCESSFUL,
    SignalVerdict.INCONCLUSIVE: Verdict.INCONCLUSIVE,
    SignalVerdict.FAIL: Verdict.FAILED,
}
_SHORT: Mapping[str, Callable[[float], str]] = {
    "errors": lambda v: f"{v * 100:.3g}%",
    "latency": lambda v: f"{v:.3g}s",
    "traffic": lambda v: f"{v:.3g} req/s",
    "saturation": lambda v: f"{v:.3g}",
}
_COUNTED_LABELS = {"latency": "mean latency", "saturation": "CPU per request"}


def _cpu_per_request(v: float) -> str:
    return f"{v * 1000:.3g}ms"


CPU_PER_REQUEST_FLOOR = 0.0001
"""The smallest worsening of CPU per request that may fail a canary: a tenth of a CPU
millisecond per request (the in-flight gauge's floor, 0.01, would be 10 ms)."""


def _criteria(spec: AnalysisJudge, name: Signal, tests: int) -> Criteria:
    """How one of ``tests`` signals is judged: the window's confidence is split evenly across
    them (Bonferroni), so that a healthy canary fails a window, whichever signal it is, with
    probability at most ``1 - confidence``."""
    chosen = getattr(spec.directions, name) if spec.directions is not None else None
    return Criteria(
        direction=Direction(chosen) if chosen else DEFAULT_DIRECTIONS[name],
        confidence=1.0 - (1.0 - spec.confidence) / max(tests, 1),
        tolerance=spec.tolerance,
        floor=ABSOLUTE_FLOORS[name],
        min_samples=spec.min_samples,
    )


def _weights(spec: AnalysisJudge) -> dict[str, float]:
    if spec.weights is None:
        return {}
    chosen = {name: getattr(spec.weights, name) for name in SIGNALS}
    return {name: float(w) for name, w in chosen.items() if w is not None}


def _worst(verdicts: Sequence[Verdict]) -> Verdict:
    return max(verdicts, key=_SEVERITY.__getitem__)


_Judged = tuple[GoldenSignalSample, str | None]


def per_routed_share(
    canary: Mapping[str, Sequence[float]],
    stable: Mapping[str, Sequence[float]],
    canary_share: float,
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Each pod's request rates over the share of all requests the route gives that pod.

    A route (Gateway API) gives the canary a weight ``w`` whatever the pods: each of its
    ``c`` pods should get ``w / c`` of the requests and each of the ``s`` stable pods
    ``(1 - w) / s``. Per-pod rates of a healthy canary at 10 % with one pod against four
    stable pods differ by half; over their shares both tracks estimate the service's whole
    request rate, so they are equal when the canary gets what its weight gives it and lower
    only when it loses traffic. Under a replica ratio every ready pod gets the same share
    and the rates need no scaling.

    >>> c, s = per_routed_share({"c1": [10.0]}, {"s1": [45.0], "s2": [45.0]}, 0.1)
    >>> c, s
    ({'c1': [100.0]}, {'s1': [100.0], 's2': [100.0]})
    """
    if not 0.0 < canary_share < 1.0 or not canary or not stable:
        return {p: list(v) for p, v in canary.items()}, {p: list(v) for p, v in stable.items()}
    per_canary_pod = canary_share / len(canary)
    per_stable_pod = (1.0 - canary_share) / len(stable)
    return (
        {pod: [v / per_canary_pod for v in values] for pod, values in canary.items()},
        {pod: [v / per_stable_pod for v in values] for pod, values in stable.items()},
    )


def _sampled_signal(
    name: Signal,
    spec: _AnySignal,
    criteria: Criteria,
    series_reading: Callable[[str], SeriesReading],
    step: float,
    canary_share: float | None = None,
) -> tuple[_Judged, SignalJudgement | None]:
    """One signal's samples compared; a failed range query is an Error naming it.

    A counted signal (:func:`_counted`) is judged from its counters: errors on pooled counts,
    latency on per-step means, saturation on per-step CPU seconds per request, traffic on
    per-step rates (over each pod's routed share, :func:`per_routed_share`, when a route's
    ``canary_share`` is given); any other on its values."""
    counted = _counted(name, spec)
    keys = [(f"{name}.canary", ""), (f"{name}.stable", "stable ")]
    if counted and name in DEFAULT_SAMPLE_TOTALS:
        keys += [(f"{name}.canary.total", ""), (f"{name}.stable.total", "stable ")]
    readings = {key: series_reading(key) for key, _ in keys}
    label = _COUNTED_LABELS.get(name, "") if counted else ""
    label = label or _label(name, spec)
    fmt = _cpu_per_request if counted and name == "saturation" else _SHORT[name]
    if counted and name == "saturation":  # the in-flight floor means nothing in CPU seconds
        criteria = replace(criteria, floor=CPU_PER_REQUEST_FLOOR)
    for key, track in keys:
        error = readings[key].error
        if error is not None:
            message = f"{track}{label} samples: {error}"
            sample = GoldenSignalSample(name, None, None, Verdict.ERROR, message)
            return (sample, error), None
    if counted and not any(readings[key].series for key, _ in keys):
        # The service exports no such series (no process_cpu_seconds_total, no histogram):
        # nothing says the canary is better or worse, so the signal is reported, not scored.
        missing = f"{label}: neither track exports the series it is read from: not scored"
        j = SignalJudgement(
            name, label, TEST_NAME, 0, 0, None, None, None, None, None, None,
            SignalVerdict.INCONCLUSIVE, missing, scored=False,
        )  # fmt: skip
        return (GoldenSignalSample(name, None, None, Verdict.INCONCLUSIVE, missing), None), j

    def by_pod(key: str) -> dict[str, list[float]]:
        found: dict[str, list[float]] = {}
        for one in readings[key].series:
            found.setdefault(one.source, []).extend(one.values)
        return found

    if counted and name == "errors":
        totals = {track: by_pod(f"errors.{track}.total") for track in ("canary", "stable")}
        errors = {track: by_pod(f"errors.{track}") for track in ("canary", "stable")}
        counts = {
            track: {
                pod: counts_from_counters(errors[track].get(pod, ()), values)
                for pod, values in totals[track].items()
            }
            for track in ("canary", "stable")
        }
        stable = sum(counts["stable"].values(), counts_from_counters((), ()))
        j = compare_proportions(name, counts["canary"], stable, criteria, label, _SHORT[name])
    else:
        if counted and name in ("latency", "saturation"):  # per-step means of a ratio
            sums = {track: by_pod(f"{name}.{track}") for track in ("canary", "stable")}
            counts_of = {track: by_pod(f"{name}.{track}.total") for track in ("canary", "stable")}
            per_step = {
                track: {
                    pod: step_means(sums[track].get(pod, ()), values)
                    for pod, values in counts_of[track].items()
                }
                for track in ("canary", "stable")
            }
        elif counted:  # traffic: requests per second in each step
            per_step = {
                track: {
                    pod: [v / step for v in counter_increases(values)]
                    for pod, values in by_pod(f"{name}.{track}").items()
                }
                for track in ("canary", "stable")
            }
            if canary_share is not None and 0.0 < canary_share < 1.0:
                scaled = per_routed_share(per_step["canary"], per_step["stable"], canary_share)
                per_step = {"canary": scaled[0], "stable": scaled[1]}
                label = f"request rate over each pod's routed share (canary {canary_share:.0%})"
        else:
            per_step = {track: by_pod(f"{name}.{track}") for track in ("canary", "stable")}
        pooled = [v for values in per_step["stable"].values() for v in values]
        j = compare_signal(name, per_step["canary"], pooled, criteria, label, fmt)
    sample = GoldenSignalSample(
        name, j.canary_median, j.stable_median, _BY_SIGNAL[j.verdict], j.explanation
    )
    return (sample, None), j


def _merge(threshold: _Judged | None, sampled: _Judged) -> _Judged:
    """A signal's threshold verdict and statistical verdict as one sample: the worse verdict,
    the window's values where there are any, both messages."""
    if threshold is None:
        return sampled
    (t, t_cause), (s, s_cause) = threshold, sampled
    message = t.message if s.message == t.message else f"{t.message}; {s.message}"
    return GoldenSignalSample(
        t.signal,
        t.canary if t.canary is not None else s.canary,
        t.stable if t.stable is not None else s.stable,
        _worst([t.verdict, s.verdict]),
        message,
    ), t_cause or s_cause


def _judge_by_score(
    template: AnalysisTemplate,
    spec: AnalysisJudge,
    judged: Sequence[_Judged],
    series_reading: Callable[[str], SeriesReading],
    gate: _Gate | None,
    step: float = 1.0,
    canary_share: float | None = None,
) -> tuple[Verdict, str, tuple[GoldenSignalSample, ...], tuple[SignalJudgement, ...], Scorecard]:
    """The statistical judge's verdict on one interval.

    Too few canary requests (the sample-size gate) decides alone, as for thresholds. Else the
    verdict is the worst of: the thresholds' (hard limits: beyond one is Failed whatever the
    score; a query that failed is Error) and the score's (Pass is Successful, Marginal and no
    score are Inconclusive, Fail is Failed). The message leads with the broken hard limits,
    then the score, then each signal's test, failed ones first: medians, effect, p-value and
    sample sizes.
    """
    thresholds = {sample.signal: (sample, cause) for sample, cause in judged}
    merged: list[_Judged] = []
    judgements: list[SignalJudgement] = []
    signals = sampled_signals(template)
    weights = _weights(spec)
    # Only a scored signal (weight above 0) can fail the window: the confidence is split
    # among those, and a signal reported only is tested at the same level.
    scored = sum(1 for name, _ in signals if weights.get(name, 1.0) > 0)
    # (a signal that turns out not to be exported still counts here: the split is fixed
    # before any sample is read, so that what a window holds cannot change its level)
    for name, signal_spec in signals:
        if gate is not None:
            verdict, message, cause = gate
            sampled: _Judged = (GoldenSignalSample(name, None, None, verdict, message), cause)
        else:
            sampled, found = _sampled_signal(
                name, signal_spec, _criteria(spec, name, scored), series_reading, step,
                canary_share,
            )
            if found is not None:
                judgements.append(found)
        merged.append(_merge(thresholds.get(name), sampled))
    card = score(judgements, weights, spec.pass_score, spec.marginal_score, spec.critical)
    samples = tuple(sample for sample, _ in merged)
    if gate is not None:
        return gate[0], gate[1], samples, (), card
    query_errors = [s.verdict for s, _ in merged if s.verdict is Verdict.ERROR]
    hard = [s.verdict for s, _ in judged]
    verdict = _worst([*hard, *query_errors, _BY_SCORE[card.verdict]])
    if verdict is Verdict.ERROR:
        return verdict, _summarise(merged, verdict), samples, tuple(judgements), card
    broken = [s.message for s, _ in judged if s.verdict is not Verdict.SUCCESSFUL]
    first = {SignalVerdict.FAIL: 0, SignalVerdict.INCONCLUSIVE: 1, SignalVerdict.PASS: 2}
    explained = [j.explanation for j in sorted(judgements, key=lambda j: first[j.verdict])]
    message = "; ".join([*broken, card.explanation, *explained])
    return verdict, message, samples, tuple(judgements), card


# --- judging a run of intervals -------------------------------------------------------------


def assess_run(
    template: AnalysisTemplate,
    measurements: Sequence[Measurement],
    step: AnalysisStep | None = None,
) -> AnalysisRunVerdict:
    """Where an analysis step stands, from its measurements in the order they were taken.

    Like Argo Rollouts' ``assessMetricStatus``: the step succeeds once ``step.intervals``
    measurements have passed; it fails when failed measurements exceed ``failureLimit``,
    turns inconclusive when inconclusive ones exceed ``inconclusiveLimit``, and pauses on
    errors when more than ``consecutiveErrorLimit`` measurements in a row could not be taken.
    Failed, inconclusive and error measurements within their limits are tolerated but never
    count as passes, so each of them makes the step one interval longer. The first final phase
    reached is kept: measurements after it change nothing.

    Worked examples (S passed, F failed, I inconclusive, E error; limits 0, 2 and 3 by
    default, ``intervals`` 3):

    >>> def run(verdicts, intervals=3, **limits):
    ...     t = AnalysisTemplate.model_validate(limits)
    ...     ms = [Measurement(datetime(2024, 1, 1), "30s", 100.0, (), Verdict(
    ...         {"S": "Successful", "F": "Failed", "I": "Inconclusive", "E": "Error"}[v]),
    ...         f"m{i}") for i, v in enumerate(verdicts)]
    ...     r = assess_run(t, ms, AnalysisStep(intervals=intervals))
    ...     return r.phase.value, r.summary
    >>> run("")
    ('Running', '0 of 3 checks passed')
    >>> run("SS")
    ('Running', '2 of 3 checks passed')
    >>> run("SSS")
    ('Successful', 'm2, 3 of 3 checks passed')
    >>> run("SF")
    ('Failed', 'm1, 1 of 2 checks failed')
    >>> run("FFF", failureLimit=2)
    ('Failed', 'm2, 3 of 3 checks failed')
    >>> run("SFSS", failureLimit=1)
    ('Successful', 'm3, 3 of 4 checks passed')
    >>> run("SII")
    ('Running', '1 of 3 checks passed; last: m2')
    >>> run("III")
    ('Inconclusive', 'm2, 3 of 3 checks inconclusive (limit 2)')
    >>> run("EEE")
    ('Running', '0 of 3 checks passed; last: m2')
    >>> run("EEEE")
    ('ErrorPaused', 'm3, 4 checks in a row could not be taken (limit 3)')
    >>> run("EESEESS")
    ('Successful', 'm6, 3 of 7 checks passed')
    """
    required = step.intervals if step is not None else AnalysisStep().intervals
    passed = failed = inconclusive = errors = consecutive = 0
    phase, summary, taken = RunPhase.RUNNING, "", 0
    for taken, m in enumerate(measurements, start=1):
        consecutive = consecutive + 1 if m.verdict is Verdict.ERROR else 0
        if m.verdict is Verdict.SUCCESSFUL:
            passed += 1
        elif m.verdict is Verdict.FAILED:
            failed += 1
        elif m.verdict is Verdict.INCONCLUSIVE:
            inconclusive += 1
        else:
            errors += 1
        if failed > template.failure_limit:
            phase, summary = RunPhase.FAILED, f"{m.message}, {failed} of {taken} checks failed"
        elif inconclusive > template.inconclusive_limit:
            phase = RunPhase.INCONCLUSIVE
            summary = (
                f"{m.message}, {inconclusive} of {taken} checks inconclusive"
                f" (limit {template.inconclusive_limit})"
            )
        elif consecutive > template.consecutive_error_limit:
            phase = RunPhase.ERROR_PAUSED
            summary = (
                f"{m.message}, {consecutive} checks in a row could not be taken"
                f" (limit {template.consecutive_error_limit})"
            )
        elif passed >= required:
            phase, summary = RunPhase.SUCCESSFUL, f"{m.message}, {passed} of {taken} checks passed"
        if phase is not RunPhase.RUNNING:
            break
    if phase is RunPhase.RUNNING:
        summary = f"{passed} of {required} checks passed"
        if measurements and measurements[-1].verdict is not Verdict.SUCCESSFUL:
            summary += f"; last: {measurements[-1].message}"
    return AnalysisRunVerdict(
        phase, summary, required, taken, passed, failed, inconclusive, errors, consecutive
    )
