"""Golden-signal analysis: pure verdicts on readings, and on runs of measurements."""

from __future__ import annotations

import doctest
import math
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import pilotboat.core.analysis
from pilotboat.api.rollout import AnalysisStep, AnalysisTemplate
from pilotboat.core.analysis import (
    DEFAULT_QUERIES,
    Measurement,
    Reading,
    RunPhase,
    Verdict,
    assess_run,
    judge,
    plan_queries,
    queries_per_interval,
)

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
NAN, INF = math.nan, math.inf


def test_docstring_examples_hold() -> None:
    result = doctest.testmod(pilotboat.core.analysis, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def template(signals: dict[str, Any], **fields: Any) -> AnalysisTemplate:
    return AnalysisTemplate.model_validate({"minSampleSize": 20, "signals": signals, **fields})


def measure(t: AnalysisTemplate, interval: str = "30s", **readings: Any) -> Measurement:
    """Judge `readings` (signal=(canary, stable), requests=n; a str is a query error)."""

    def reading(value: Any) -> Reading:
        return Reading(error=value) if isinstance(value, str) else Reading(value)

    plan = plan_queries(t, "cart", "shop", "v2", "v1", interval)
    given_ = {"requests": reading(readings.pop("requests", 100))}
    for name, (canary, stable) in readings.items():
        given_[f"{name}.canary"] = reading(canary)
        given_[f"{name}.stable"] = reading(stable)
    return judge(t, plan, given_, NOW)


ERRORS = {"errors": {"maxRatio": 0.01}}
LATENCY = {"latency": {"maxSeconds": 0.5}}

# (signals, readings, verdict, message)
SIGNAL_CASES: list[tuple[dict[str, Any], dict[str, Any], Verdict, str]] = [
    (ERRORS, {"errors": (0.041, 0.003)}, Verdict.FAILED, "error ratio 4.1% > 1.0% (stable 0.3%)"),
    (ERRORS, {"errors": (0.0, 0.0)}, Verdict.SUCCESSFUL, "error ratio 0.0% <= 1.0% (stable 0.0%)"),
    (ERRORS, {"errors": (0.01, 0.0)}, Verdict.SUCCESSFUL, "error ratio 1.0% <= 1.0% (stable 0.0%)"),
    # close to the limit, enough decimals are shown to tell the two apart
    (ERRORS, {"errors": (0.0101, 0.0)}, Verdict.FAILED, "error ratio 1.01% > 1.00% (stable 0.00%)"),
    (
        {"errors": {"maxIncreaseOverStable": 0.01}},
        {"errors": (0.041, 0.003)},
        Verdict.FAILED,
        "error ratio 4.1% > 1.3% (stable 0.3% + 1.0%)",
    ),
    (
        {"errors": {"maxIncreaseOverStable": 0.01}},
        {"errors": (0.012, 0.003)},
        Verdict.SUCCESSFUL,
        "error ratio 1.2% <= 1.3% (stable 0.3% + 1.0%)",
    ),
    (
        {"errors": {"maxIncreaseOverStable": 0.01}},
        {"errors": (0.012, NAN)},
        Verdict.INCONCLUSIVE,
        "error ratio 1.20% not compared: stable has no data (NaN)",
    ),
    (
        LATENCY,
        {"latency": (0.82, 0.12)},
        Verdict.FAILED,
        "p99 latency 0.82s > 0.50s (stable 0.12s)",
    ),
    (
        {"latency": {"quantile": 0.95, "maxRatioToStable": 2}},
        {"latency": (0.3, 0.12)},
        Verdict.FAILED,
        "p95 latency 0.30s > 0.24s (stable 0.12s x 2)",
    ),
    (
        {"latency": {"quantile": 0.999, "maxSeconds": 1, "maxRatioToStable": 1.5}},
        {"latency": (0.3, 0.25)},
        Verdict.SUCCESSFUL,
        "p99.9 latency 0.30s <= 1.00s (stable 0.25s); p99.9 latency 0.30s <= 0.38s"
        " (stable 0.25s x 1.5)",
    ),
    (
        {"traffic": {"minRate": 5}},
        {"traffic": (2.5, 40)},
        Verdict.FAILED,
        "request rate 2.50 req/s < 5.00 req/s (stable 40.00 req/s)",
    ),
    (
        {"saturation": {"max": 0.8}},
        {"saturation": (0.93, 0.41)},
        Verdict.FAILED,
        "saturation 0.93 > 0.80 (stable 0.41)",
    ),
    # one failed signal makes the measurement Failed; only the failures are in the message
    (
        {**ERRORS, **LATENCY},
        {"errors": (0.002, 0.003), "latency": (0.82, 0.12)},
        Verdict.FAILED,
        "p99 latency 0.82s > 0.50s (stable 0.12s)",
    ),
    # a failure outweighs an error: there is evidence against the canary
    (
        {**ERRORS, **LATENCY},
        {"errors": (0.5, 0.0), "latency": (NAN, 0.12)},
        Verdict.FAILED,
        "error ratio 50.0% > 1.0% (stable 0.0%)",
    ),
    # the stable's value is context for an absolute threshold, not a requirement
    (
        ERRORS,
        {"errors": (0.002, None)},
        Verdict.SUCCESSFUL,
        "error ratio 0.2% <= 1.0% (stable no data)",
    ),
]

# (readings, verdict, message): no number is never a pass
NO_DATA_CASES: list[tuple[dict[str, Any], Verdict, str]] = [
    ({"errors": (NAN, 0.0)}, Verdict.ERROR, "error ratio: no data (NaN)"),
    ({"errors": (None, 0.0)}, Verdict.ERROR, "error ratio: no data (empty result)"),
    ({"errors": (INF, 0.0)}, Verdict.ERROR, "error ratio: no data (+inf)"),
    (
        {"errors": ("Prometheus unreachable: x", 0.0)},
        Verdict.ERROR,
        "error ratio: Prometheus unreachable: x",
    ),
    ({"errors": (0.0, "boom")}, Verdict.ERROR, "stable error ratio: boom"),
    (
        {"requests": 7, "errors": (0.5, 0.0)},
        Verdict.INCONCLUSIVE,
        "only 7 canary requests in 30s < minimum 20: inconclusive",
    ),
    # no traffic at all: the ratio is NaN, but the sample size says why
    (
        {"requests": 0, "errors": (NAN, NAN)},
        Verdict.INCONCLUSIVE,
        "only 0 canary requests in 30s < minimum 20: inconclusive",
    ),
    (
        {"requests": 19.6, "errors": (0.0, 0.0)},
        Verdict.SUCCESSFUL,
        "error ratio 0.0% <= 1.0% (stable 0.0%)",
    ),
    (
        {"requests": None, "errors": (0.0, 0.0)},
        Verdict.INCONCLUSIVE,
        "only 0 canary requests in 30s < minimum 20: inconclusive",
    ),
    ({"requests": NAN, "errors": (0.0, 0.0)}, Verdict.ERROR, "canary requests: no data (NaN)"),
]


@pytest.mark.parametrize(("signals", "readings", "verdict", "message"), SIGNAL_CASES)
def test_a_signal_is_judged_against_its_thresholds_with_the_numbers_in_the_message(
    signals: dict[str, Any], readings: dict[str, Any], verdict: Verdict, message: str
) -> None:
    m = measure(template(signals), **readings)
    assert (m.verdict, m.message) == (verdict, message)


@pytest.mark.parametrize(("readings", "verdict", "message"), NO_DATA_CASES)
def test_no_data_is_an_error_and_too_few_requests_inconclusive(
    readings: dict[str, Any], verdict: Verdict, message: str
) -> None:
    m = measure(template(ERRORS), **readings)
    assert (m.verdict, m.message) == (verdict, message)


def test_one_cause_shared_by_every_signal_is_said_once() -> None:
    down = "Prometheus unreachable: connection refused (http://127.0.0.1:1)"
    m = measure(
        template({**ERRORS, **LATENCY}), requests=down, errors=(down, down), latency=(down, down)
    )
    assert (m.verdict, m.message) == (Verdict.ERROR, down)
    assert {s.verdict for s in m.samples} == {Verdict.ERROR}


def test_the_sample_and_values_are_kept_on_the_measurement() -> None:
    m = measure(
        template({**ERRORS, **LATENCY}), requests=120, errors=(0.041, 0.003), latency=(0.2, 0.1)
    )
    assert m.sample_size == 120 and m.taken_at == NOW and m.interval == "30s"
    assert [(s.signal, s.canary, s.stable, s.verdict) for s in m.samples] == [
        ("errors", 0.041, 0.003, Verdict.FAILED),
        ("latency", 0.2, 0.1, Verdict.SUCCESSFUL),
    ]


def test_a_template_without_thresholds_judges_nothing_and_never_passes() -> None:
    for t in (template({}), template({"errors": {}}), AnalysisTemplate()):
        m = measure(t)
        assert m.verdict is Verdict.INCONCLUSIVE
        assert "nothing to judge" in m.message


def test_default_queries_fill_in_service_namespace_revision_interval_and_quantile() -> None:
    t = template({"errors": {"maxRatio": 0.01}, "latency": {"quantile": 0.95, "maxSeconds": 1}})
    plan = plan_queries(
        t, "cart", "shop", "v2", "v1", "90s", canary_revision="c0ffee", stable_revision="5ab1e"
    )
    queries = {q.key: q.expression for q in plan.queries}
    sel = 'namespace="shop",service="cart",revision="c0ffee"'
    assert queries == {
        "requests": f"sum(increase(http_requests_total{{{sel}}}[1m30s])) or vector(0)",
        "errors.canary": "(sum(rate(http_requests_total"
        f'{{{sel},code=~"5.."}}[1m30s])) or vector(0))'
        f" / sum(rate(http_requests_total{{{sel}}}[1m30s]))",
        "errors.stable": queries["errors.stable"],
        "latency.canary": "histogram_quantile(0.95, sum by (le) "
        f"(rate(http_request_duration_seconds_bucket{{{sel}}}[1m30s])))",
        "latency.stable": queries["latency.stable"],
    }
    assert 'revision="5ab1e"' in str(queries["errors.stable"])
    assert set(DEFAULT_QUERIES) == {"errors", "latency", "traffic", "saturation", "requests"}


@pytest.mark.parametrize(
    ("query", "revisions", "canary", "stable"),
    [
        # an image- or env-only change: the same version, two revisions, two sets of pods
        (None, ("a1", "b2"), 'revision="a1"', 'revision="b2"'),
        # a stable Deployment whose pods predate the label: the series without one
        (None, ("a1", ""), 'revision="a1"', 'revision=""'),
        # a user's template may select on either
        ('rate(x{r="{{ revision }}"}[{{ interval }}])', ("a1", "b2"),
         'rate(x{r="a1"}[30s])', 'rate(x{r="b2"}[30s])'),
        ('rate(x{v="{{ version }}"}[{{ interval }}])', ("a1", "b2"),
         'rate(x{v="v1"}[30s])', 'rate(x{v="v1"}[30s])'),
    ],
)  # fmt: skip
def test_each_track_is_selected_by_its_revision_not_its_version(
    query: str | None, revisions: tuple[str, str], canary: str, stable: str
) -> None:
    t = template({"errors": {"maxRatio": 0.01, **({"query": query} if query else {})}})
    plan = plan_queries(t, "cart", "shop", "v1", "v1", "30s",
                        canary_revision=revisions[0], stable_revision=revisions[1])  # fmt: skip
    queries = {q.key: str(q.expression) for q in plan.queries}
    assert canary in queries["errors.canary"] and stable in queries["errors.stable"]
    assert f'revision="{revisions[0]}"' in queries["requests"]  # the canary's sample size
    if query is None:
        assert "version" not in "".join(queries.values())


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ("sum(rate(x{service='{{ servce }}'}[1m]))", "query template: 'servce' is undefined"),
        ("sum(rate(x{service='{{ service }'}[1m]))", "query template: unexpected '}' (line 1)"),
        ("{{ quantile }}", "query template: 'quantile' is undefined"),  # latency only
        ("{{ ''.__class__.__mro__ }}", "query template: access to attribute '__class__'"),
    ],
)
def test_a_broken_query_template_is_an_error_naming_the_problem(query: str, problem: str) -> None:
    t = template({"errors": {"maxRatio": 0.01, "query": query}})
    plan = plan_queries(t, "cart", "shop", "v2", "v1", "30s")
    assert [q.key for q in plan.to_send] == ["requests"]  # a broken query is never sent
    m = judge(t, plan, {"requests": Reading(100)}, NOW)
    assert m.verdict is Verdict.ERROR
    assert m.message.startswith(f"error ratio: {problem}")


def test_queries_per_interval_counts_sample_size_and_canary_and_stable_per_signal() -> None:
    assert queries_per_interval(template({})) == 1
    assert queries_per_interval(template(ERRORS)) == 3
    every = {**ERRORS, **LATENCY, "traffic": {"minRate": 1}, "saturation": {"max": 1}}
    assert queries_per_interval(template(every)) == 9
    assert len(plan_queries(template(every), "a", "b", "c", "d", "1m").to_send) == 9


# --- runs -----------------------------------------------------------------------------------

LETTER = {
    "S": Verdict.SUCCESSFUL,
    "F": Verdict.FAILED,
    "I": Verdict.INCONCLUSIVE,
    "E": Verdict.ERROR,
}


def measurement(verdict: Verdict, message: str = "") -> Measurement:
    return Measurement(NOW, "30s", 100.0, (), verdict, message or verdict.value.lower())


def run(verdicts: str | list[Verdict], intervals: int = 3, **limits: int) -> Any:
    ms = [measurement(v if isinstance(v, Verdict) else LETTER[v]) for v in verdicts]
    return assess_run(
        AnalysisTemplate.model_validate(limits), ms, AnalysisStep(intervals=intervals)
    )


# (verdicts, intervals, limits, phase, passed)
RUN_CASES: list[tuple[str, int, dict[str, int], RunPhase, int]] = [
    ("", 3, {}, RunPhase.RUNNING, 0),
    ("SS", 3, {}, RunPhase.RUNNING, 2),
    ("SSS", 3, {}, RunPhase.SUCCESSFUL, 3),
    ("S", 1, {}, RunPhase.SUCCESSFUL, 1),
    ("SF", 3, {}, RunPhase.FAILED, 1),
    ("FF", 3, {"failureLimit": 1}, RunPhase.FAILED, 0),
    ("FSSS", 3, {"failureLimit": 1}, RunPhase.SUCCESSFUL, 3),
    ("III", 3, {}, RunPhase.INCONCLUSIVE, 0),
    ("ISISS", 3, {}, RunPhase.SUCCESSFUL, 3),
    ("I", 3, {"inconclusiveLimit": 0}, RunPhase.INCONCLUSIVE, 0),
    ("EEE", 3, {}, RunPhase.RUNNING, 0),
    ("EEEE", 3, {}, RunPhase.ERROR_PAUSED, 0),
    ("E", 3, {"consecutiveErrorLimit": 0}, RunPhase.ERROR_PAUSED, 0),
    ("EEESEEESS", 3, {}, RunPhase.SUCCESSFUL, 3),  # errors must be in a row to pause
    ("SSSF", 3, {}, RunPhase.SUCCESSFUL, 3),  # the first final phase is kept
    ("FSSS", 3, {}, RunPhase.FAILED, 0),
]


@pytest.mark.parametrize(("verdicts", "intervals", "limits", "phase", "passed"), RUN_CASES)
def test_a_run_is_assessed_like_argo_rollouts_assess_metric_status(
    verdicts: str, intervals: int, limits: dict[str, int], phase: RunPhase, passed: int
) -> None:
    result = run(verdicts, intervals, **limits)
    assert (result.phase, result.passed) == (phase, passed)


def test_the_summary_carries_the_last_message_and_the_counts() -> None:
    t = AnalysisTemplate.model_validate({"failureLimit": 2, "consecutiveErrorLimit": 1})
    bad = measurement(Verdict.FAILED, "error ratio 4.1% > 1.0% (stable 0.3%)")
    assert assess_run(t, [bad] * 3, AnalysisStep(intervals=3)).summary == (
        "error ratio 4.1% > 1.0% (stable 0.3%), 3 of 3 checks failed"
    )
    down = measurement(Verdict.ERROR, "Prometheus unreachable: connection refused")
    r = assess_run(t, [down] * 2, AnalysisStep(intervals=3))
    assert r.phase is RunPhase.ERROR_PAUSED
    assert r.summary == (
        "Prometheus unreachable: connection refused, 2 checks in a row could not be taken (limit 1)"
    )
    few = measurement(
        Verdict.INCONCLUSIVE, "only 7 canary requests in 30s < minimum 20: inconclusive"
    )
    assert run([Verdict.SUCCESSFUL]).summary == "1 of 3 checks passed"
    r = assess_run(t, [few], AnalysisStep(intervals=3))
    assert r.summary == "0 of 3 checks passed; last: " + few.message


verdicts = st.lists(st.sampled_from(list(Verdict)), max_size=25)
limits = st.fixed_dictionaries(
    {
        "failureLimit": st.integers(0, 4),
        "inconclusiveLimit": st.integers(0, 4),
        "consecutiveErrorLimit": st.integers(0, 4),
    }
)
intervals = st.integers(1, 8)


@given(verdicts, intervals, limits)
def test_successful_requires_exactly_intervals_passing_measurements(
    vs: list[Verdict], n: int, lim: dict[str, int]
) -> None:
    result = run(vs, n, **lim)
    if result.phase is RunPhase.SUCCESSFUL:
        assert result.passed == n
        assert sum(v is Verdict.SUCCESSFUL for v in vs[: result.taken]) == n


@given(verdicts, intervals, limits)
def test_a_run_with_an_error_or_inconclusive_among_the_required_ones_is_never_successful(
    vs: list[Verdict], n: int, lim: dict[str, int]
) -> None:
    required = vs[:n]
    if any(v in (Verdict.ERROR, Verdict.INCONCLUSIVE) for v in required):
        assert run(required, n, **lim).phase is not RunPhase.SUCCESSFUL


@given(verdicts, intervals, limits)
def test_adding_a_failed_measurement_never_turns_failed_into_successful(
    vs: list[Verdict], n: int, lim: dict[str, int]
) -> None:
    before = run(vs, n, **lim).phase
    after = run([*vs, Verdict.FAILED], n, **lim).phase
    if before is RunPhase.FAILED:
        assert after is RunPhase.FAILED
    if before is not RunPhase.SUCCESSFUL:
        assert after is not RunPhase.SUCCESSFUL


@given(verdicts, intervals, limits, verdicts)
def test_a_final_phase_is_kept_whatever_comes_after(
    vs: list[Verdict], n: int, lim: dict[str, int], more: list[Verdict]
) -> None:
    before = run(vs, n, **lim)
    if before.phase is not RunPhase.RUNNING:
        assert run(vs + more, n, **lim).phase is before.phase


@given(
    st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
    st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
    st.one_of(st.none(), st.just(NAN), st.floats(min_value=0, max_value=1e6)),
)
def test_a_measurement_without_finite_numbers_and_enough_requests_never_passes(
    canary: float | None, stable: float | None, requests: float | None
) -> None:
    t = template({"errors": {"maxRatio": 0.05, "maxIncreaseOverStable": 0.01}})
    m = measure(t, requests=requests, errors=(canary, stable))
    if m.verdict is Verdict.SUCCESSFUL:
        assert canary is not None and math.isfinite(canary) and canary <= 0.05
        assert stable is not None and math.isfinite(stable) and canary <= stable + 0.01
        assert requests is not None and round(requests) >= 20
