"""Golden-signal analysis with the statistical judge (``judge.method: mannWhitney``): the
sample queries it plans, and measurements judged from per-pod samples and thresholds."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

import pytest

from pilotboat.api.rollout import AnalysisTemplate
from pilotboat.core.analysis import (
    DEFAULT_SAMPLE_QUERIES,
    DEFAULT_SAMPLE_TOTALS,
    Measurement,
    Reading,
    SampleSeries,
    SeriesReading,
    Verdict,
    judge,
    judged_signals,
    plan_queries,
    queries_per_interval,
    sampled_signals,
)
from pilotboat.core.judge import SignalVerdict

pytestmark = pytest.mark.core

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
LATENCY = [0.100, 0.104, 0.098, 0.110, 0.102, 0.097, 0.105, 0.099, 0.101, 0.103, 0.100, 0.106]


def template(signals: dict[str, Any], **judge_fields: Any) -> AnalysisTemplate:
    return AnalysisTemplate.model_validate(
        {
            "minSampleSize": 20,
            "interval": "2m",
            "signals": signals,
            "judge": {"method": "mannWhitney", **judge_fields},
        }
    )


def pods(*per_pod: list[float], name: str = "web-canary") -> SeriesReading:
    return SeriesReading(
        tuple(SampleSeries(f"{name}-{i}", tuple(v)) for i, v in enumerate(per_pod))
    )


def counters(
    *per_pod: list[float], name: str = "web-canary", start: float = 1000.0
) -> SeriesReading:
    """A counter's values per pod, as a range query from the window's start returns them:
    `start`, then grown by each step's increase in `per_pod`."""
    return SeriesReading(
        tuple(
            SampleSeries(f"{name}-{i}", tuple(itertools.accumulate(v, initial=start)))
            for i, v in enumerate(per_pod)
        )
    )


def latency_counters(
    *per_pod: list[float], name: str = "web-canary", per_step: int = 20
) -> tuple[SeriesReading, SeriesReading]:
    """The histogram's ``_sum`` and ``_count`` counters of pods whose mean latency in each
    step is given, `per_step` requests a step."""
    sums = counters(*([m * per_step for m in means] for means in per_pod), name=name)
    counts = counters(*([per_step] * len(means) for means in per_pod), name=name)
    return sums, counts


def error_counters(
    *per_pod: list[float], name: str = "web-canary", per_step: int = 20
) -> tuple[SeriesReading, SeriesReading]:
    """The errors and requests counters of pods with these errors per step."""
    requests = counters(*([per_step] * len(errors) for errors in per_pod), name=name)
    return counters(*per_pod, name=name, start=10.0), requests


Track = tuple[SeriesReading, SeriesReading] | SeriesReading


def measure(
    t: AnalysisTemplate,
    readings: dict[str, Any] | None = None,
    canary_share: float | None = None,
    **series: tuple[Track, Track],
) -> Measurement:
    """Judge `series` (signal=(canary, stable), each a reading or a (counter, total) pair)
    and instant `readings` (key=value)."""
    plan = plan_queries(t, "cart", "shop", "v2", "v1", t.interval)
    given = {"requests": Reading(100)}
    for key, value in (readings or {}).items():
        given[key] = Reading(error=value) if isinstance(value, str) else Reading(value)
    sampled = {}
    for name, tracks in series.items():
        for track, reading in zip(("canary", "stable"), tracks, strict=True):
            if isinstance(reading, tuple):
                sampled[f"{name}.{track}"], sampled[f"{name}.{track}.total"] = reading
            else:
                sampled[f"{name}.{track}"] = reading
    return judge(t, plan, given, NOW, series=sampled, canary_share=canary_share)


def test_without_a_judge_nothing_is_sampled() -> None:
    for judge_spec in (None, {"method": "threshold"}):
        t = AnalysisTemplate.model_validate(
            {"signals": {"errors": {"maxRatio": 0.01}, "traffic": {}}, "judge": judge_spec}
        )
        plan = plan_queries(t, "cart", "shop", "v2", "v1", "30s")
        assert plan.sample_queries == () and plan.step is None
        assert queries_per_interval(t) == 3


def test_sample_queries_are_per_pod_per_step_for_every_declared_signal() -> None:
    t = template({"errors": {"maxRatio": 0.01}, "latency": {"quantile": 0.9}}, step="15s")
    plan = plan_queries(
        t, "cart", "shop", "v2", "v1", "2m", canary_revision="r2", stable_revision="r1"
    )
    assert (plan.step, plan.window) == ("15s", "2m")
    queries = {q.key: q.expression for q in plan.sample_queries}
    sel = 'namespace="shop",service="cart",revision="r2"'
    requests = f"sum by (pod, instance) (http_requests_total{{{sel}}})"
    # counters as they are, no rate(): their increases cover the whole window
    assert queries["errors.canary"] == (
        f'sum by (pod, instance) (http_requests_total{{{sel},code=~"5.."}}) or 0 * {requests}'
    )
    assert queries["errors.canary.total"] == requests
    assert queries["latency.canary"] == (
        f"sum by (pod, instance) (http_request_duration_seconds_sum{{{sel}}})"
    )
    assert queries["latency.canary.total"] == (
        f"sum by (pod, instance) (http_request_duration_seconds_count{{{sel}}})"
    )
    assert 'revision="r1"' in str(queries["latency.stable"])
    assert 'revision="r1"' in str(queries["latency.stable.total"])
    assert all(q.counter for q in plan.sample_queries)
    # latency has no threshold: sampled, but not queried at an instant
    assert [q.key for q in plan.queries] == ["requests", "errors.canary", "errors.stable"]
    assert queries_per_interval(t) == 1 + 2 + 8 == len(plan.queries) + len(plan.sample_queries)
    assert set(DEFAULT_SAMPLE_QUERIES) == {"errors", "latency", "traffic", "saturation"}
    assert set(DEFAULT_SAMPLE_TOTALS) == {"errors", "latency", "saturation"}


def test_a_query_override_is_per_step_values_and_saturation_cpu_per_request() -> None:
    override = 'sum by (pod) (rate(my_errors{version="{{ version }}"}[{{ interval }}]))'
    t = template({"errors": {"query": override}, "saturation": {}}, step="15s")
    plan = plan_queries(t, "cart", "shop", "v2", "v1", "2m")
    assert [(q.key, q.counter) for q in plan.sample_queries] == [
        ("errors.canary", False),
        ("errors.stable", False),
        ("saturation.canary", True),
        ("saturation.stable", True),
        ("saturation.canary.total", True),
        ("saturation.stable.total", True),
    ]
    queries = {q.key: q.expression or "" for q in plan.sample_queries}
    assert queries["saturation.canary"].startswith(
        "sum by (pod, instance) (process_cpu_seconds_total{"
    )
    assert queries["saturation.canary.total"].startswith(
        "sum by (pod, instance) (http_requests_total{"
    )
    assert plan.sample_queries[0].expression == (
        'sum by (pod) (rate(my_errors{version="v2"}[15s]))'
    )


def test_a_window_of_its_own_and_too_many_samples() -> None:
    plan = plan_queries(template({"traffic": {}}, window="10m"), "a", "b", "c", "d", "2m")
    assert plan.window == "10m"
    t = template({"traffic": {}}, step="100ms")
    plan = plan_queries(t, "a", "b", "c", "d", "10m")
    assert [q.error for q in plan.sample_queries] == [
        "judge.step 100ms gives 6000 samples per series in 10m, more than 1000"
    ] * 2
    assert plan.samples_to_send == ()


def test_a_healthy_canary_passes_with_the_numbers_in_the_message() -> None:
    t = template({"latency": {}})
    stable = latency_counters(LATENCY[::-1], LATENCY, name="web")
    m = measure(t, latency=(latency_counters(LATENCY), stable))
    assert m.verdict is Verdict.SUCCESSFUL, m.message
    assert m.score == 100
    (j,) = m.judgements
    assert (j.n_canary, j.n_stable, j.verdict) == (12, 24, SignalVerdict.PASS)
    assert m.message.startswith("score 100 >= 95: pass (1 of 1 signals passed); mean latency")
    assert "median 0.102s vs stable 0.102s (+0.0%)" in m.message
    assert "Mann-Whitney U one-sided (higher is worse), p=" in m.message
    assert m.message.endswith("n=12/24")
    (sample,) = m.samples
    assert (sample.canary, sample.stable, sample.verdict) == (0.1015, 0.1015, Verdict.SUCCESSFUL)


def test_a_slower_canary_fails_on_its_score() -> None:
    t = template({"latency": {}, "errors": {}})
    slower = [v * 1.5 for v in LATENCY]
    m = measure(
        t,
        latency=(latency_counters(slower), latency_counters(LATENCY)),
        errors=(error_counters([0.0] * 12), error_counters([0.0] * 12)),
    )
    assert m.verdict is Verdict.FAILED, m.message
    assert m.message.startswith("score 50 < 75: fail (latency failed); mean latency worse: ")
    by_signal = {s.signal: s.verdict for s in m.samples}
    assert by_signal == {"errors": Verdict.SUCCESSFUL, "latency": Verdict.FAILED}


def test_errors_are_judged_on_pooled_counts() -> None:
    # 6 errors in 240 requests, each in a different step: the median step has none, the
    # pooled ratio is 2.5%, and Fisher's exact test against 0 of 240 gives p = 0.015
    few = [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0, 0, 0, 0]
    t = template({"errors": {}}, confidence=0.95)
    m = measure(t, errors=(error_counters(few, few), error_counters([0.0] * 12, [0.0] * 12)))
    (j,) = m.judgements
    assert (j.n_canary, j.n_stable) == (480, 480)
    assert (j.canary_median, j.stable_median) == (6 / 480, 0.0)
    assert j.test == "Fisher's exact one-sided (higher is worse)"
    assert j.p_value == pytest.approx(0.0154, abs=1e-4)
    assert j.verdict is SignalVerdict.FAIL and m.verdict is Verdict.FAILED, m.message
    assert "error ratio worse: 1.25% (6 of 480) vs stable 0% (0 of 480)" in m.message
    assert m.message.endswith("n=480/480 requests")


def test_weights_make_a_failed_signal_that_is_not_critical_marginal() -> None:
    series = {
        "latency": (latency_counters([v * 1.5 for v in LATENCY]), latency_counters(LATENCY)),
        "errors": (error_counters([0.0] * 12), error_counters([0.0] * 12)),
    }
    signals = {"latency": {}, "errors": {}}
    m = measure(template(signals, weights={"errors": 4}, critical=["errors"]), **series)
    assert m.verdict is Verdict.INCONCLUSIVE
    assert m.message.startswith("score 80 < 95: marginal (latency failed)")
    # every scored signal is critical unless `critical` says otherwise
    m = measure(template(signals, weights={"errors": 4}), **series)
    assert m.verdict is Verdict.FAILED
    assert m.message.startswith("score 80, but latency failed, a critical signal: fail")
    # without weights one failure of two scores 50: a fail by the score alone
    assert measure(template(signals, critical=[]), **series).verdict is Verdict.FAILED


def test_a_threshold_is_a_hard_limit_whatever_the_score() -> None:
    t = template({"errors": {"maxRatio": 0.01}})
    window = {"errors.canary": 0.05, "errors.stable": 0.0}
    m = measure(t, window, errors=(error_counters([0.0] * 12), error_counters([0.0] * 12)))
    assert m.verdict is Verdict.FAILED
    assert m.message.startswith("error ratio 5.0% > 1.0% (stable 0.0%); score 100 >= 95: pass")
    (sample,) = m.samples
    assert (sample.canary, sample.verdict) == (0.05, Verdict.FAILED)
    assert "error ratio not shown worse: 0% (0 of 240) vs stable 0% (0 of 240)" in sample.message


def test_too_few_samples_are_inconclusive_never_a_pass() -> None:
    t = template({"latency": {}})
    m = measure(t, latency=(latency_counters(LATENCY[:4]), latency_counters(LATENCY)))
    assert m.verdict is Verdict.INCONCLUSIVE
    assert m.message == (
        "no score: latency inconclusive; mean latency: too few samples"
        " (canary 4, stable 12; at least 10 each): inconclusive"
    )
    few = error_counters([0.0] * 2, per_step=4)
    m = measure(template({"errors": {}}), errors=(few, error_counters([0.0] * 12)))
    assert m.verdict is Verdict.INCONCLUSIVE
    assert m.message.endswith(
        "error ratio: too few requests (canary 8, stable 240; at least 10 each): inconclusive"
    )


def test_too_few_requests_decide_alone() -> None:
    t = template({"latency": {}})
    plan = plan_queries(t, "cart", "shop", "v2", "v1", "2m")
    sums, counts = latency_counters(LATENCY)
    series = {
        "latency.canary": sums,
        "latency.stable": sums,
        "latency.canary.total": counts,
        "latency.stable.total": counts,
    }
    m = judge(t, plan, {"requests": Reading(3)}, NOW, series=series)
    assert (m.verdict, m.message) == (
        Verdict.INCONCLUSIVE,
        "only 3 canary requests in 2m < minimum 20: inconclusive",
    )


def test_a_failed_range_query_is_an_error_naming_the_signal() -> None:
    refused = SeriesReading(error="Prometheus answered HTTP 400: bad_data: parse error")
    sums, _ = latency_counters(LATENCY)
    m = measure(template({"latency": {}}), latency=(latency_counters(LATENCY), (sums, refused)))
    assert m.verdict is Verdict.ERROR
    assert m.message == (
        "stable mean latency samples: Prometheus answered HTTP 400: bad_data: parse error"
    )


def test_one_bad_canary_pod_is_named_as_the_outlier() -> None:
    zeros = [0.0] * 4
    canary = error_counters([4.0] * 4, zeros, zeros)  # 20% of one pod's requests
    stable = error_counters(zeros, zeros, zeros, name="web")
    m = measure(template({"errors": {}}), errors=(canary, stable))
    assert "pod web-canary-0 alone is worse (20% vs stable 0%" in m.message
    # pooled, a third of the canary failing 20% is 6.7% against 0%: the version fails too
    assert m.verdict is Verdict.FAILED, m.message


def test_a_value_query_override_is_judged_on_its_values() -> None:
    override = 'sum by (pod) (rate(my_errors{version="{{ version }}"}[{{ interval }}]))'
    t = template({"errors": {"query": override}})
    m = measure(t, errors=(pods([0.05] * 12), pods([0.0] * 12)))
    (j,) = m.judgements
    assert j.test.startswith("Mann-Whitney U") and j.verdict is SignalVerdict.FAIL


@pytest.mark.parametrize(
    ("judge_fields", "message"),
    [
        ({"marginalScore": 96}, "judge.marginalScore (96) must not be above judge.passScore (95)"),
        ({"step": "1m", "window": "30s"}, "judge.window (30s) must not be shorter than judge.step"),
        ({"step": "10ms", "window": "1h"}, "judge.window / judge.step gives 360000 samples"),
    ],
)
def test_inconsistent_judge_settings_are_refused_naming_the_field(
    judge_fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        template({"errors": {}}, **judge_fields)


@pytest.mark.parametrize(
    ("judge_fields", "location"),
    [
        ({"method": "tTest"}, "judge.method"),
        ({"confidence": 1}, "judge.confidence"),
        ({"weights": {"latncy": 1}}, "judge.weights.latncy"),
        ({"directions": {"errors": "up"}}, "judge.directions.errors"),
    ],
)
def test_invalid_judge_fields_are_named(judge_fields: dict[str, Any], location: str) -> None:
    with pytest.raises(ValueError, match=location):
        template({"errors": {}}, **judge_fields)


def test_counters_are_read_from_the_windows_start_and_values_from_its_first_step() -> None:
    """A counter's increases must cover the whole window: its range query starts where the
    window does. A per-step value (a rate over the step) starts a step later."""
    from datetime import timedelta

    from pilotboat.adapters.metric_provider import read_samples

    asked: list[tuple[str, datetime, datetime, float]] = []

    class Recording:
        def query(self, expression: str, at: datetime) -> float | None:
            raise AssertionError("no instant query expected")

        def query_range(
            self, expression: str, start: datetime, end: datetime, step: float
        ) -> list[SampleSeries]:
            asked.append((expression, start, end, step))
            return [SampleSeries("web-canary-0", (1.0, 2.0))]

    in_flight = 'max by (pod) (http_requests_in_flight{version="{{ version }}"})'
    t = template({"errors": {}, "saturation": {"query": in_flight}}, step="4s", window="16s")
    plan = plan_queries(t, "cart", "shop", "v2", "v1", "16s")
    series, sent = read_samples(Recording(), plan, NOW)
    assert sent == len(asked) == 6 and set(series) == {q.key for q in plan.sample_queries}
    starts = {("counter" if "in_flight" not in e else "value"): s for e, s, _, _ in asked}
    assert starts == {"counter": NOW - timedelta(seconds=16), "value": NOW - timedelta(seconds=12)}
    assert {(end, step) for _, _, end, step in asked} == {(NOW, 4.0)}


def test_a_pod_born_in_the_window_counts_all_its_requests_and_errors() -> None:
    """A range query over a canary pod that started in the window: Prometheus has no value
    for it at the window's start. Its counters started at 0 with the pod, so every request
    and error it served counts; before, a new pod's first window lost them all."""
    import doctest

    import pilotboat.adapters.prometheus as prometheus
    from pilotboat.core.judge import Counts, counts_from_counters

    assert doctest.testmod(prometheus).failed == 0
    born = prometheus._series([
        {"metric": {"pod": "web-canary-1"}, "values": [[130, "12"], [140, "20"]]},  # requests
        {"metric": {"pod": "web-canary-1"}, "values": [[140, "3"]]},  # its first 5xx: 3
    ], 120, 10)  # fmt: skip
    assert counts_from_counters(born[1].values, born[0].values) == Counts(events=3, total=20)
    old = prometheus._series([{"metric": {"pod": "web-stable-1"},
                               "values": [[120, "100"], [130, "110"], [140, "125"]]}], 120, 10)
    assert counts_from_counters((), old[0].values) == Counts(events=0, total=25)


# --- traffic under a route's weight -------------------------------------------------------

# A route gives the canary 10 % of 100 requests a second: its one pod gets 10 a second, each
# of the four stable pods 22.5. Twelve 10 s steps of each, with a little noise.
NOISE = [0.0, 0.4, -0.3, 0.2, -0.1, 0.3, -0.4, 0.1, 0.0, -0.2, 0.3, -0.1]


def _requests(per_second: float, pods: int, name: str) -> SeriesReading:
    return counters(
        *([(per_second + n * (1 + i % 2)) * 10 for n in NOISE] for i in range(pods)), name=name
    )


def test_traffic_under_a_route_is_judged_over_each_pods_share() -> None:
    t = template({"traffic": {}}, step="10s")
    healthy = (_requests(10.0, 1, "web-canary"), _requests(22.5, 4, "web-stable"))
    # The per-pod rates alone say the canary lost more than half its traffic ...
    raw = measure(t, traffic=healthy)
    assert raw.judgements[0].verdict is SignalVerdict.FAIL
    # ... but it gets what the route's 10 % gives it.
    routed = measure(t, canary_share=0.10, traffic=healthy)
    assert routed.judgements[0].verdict is SignalVerdict.PASS, routed.message
    assert "routed share (canary 10%)" in routed.message
    assert routed.judgements[0].canary_median == pytest.approx(100, rel=0.05)
    # A canary that gets half of what the route gives it fails over its share as well.
    starved = (_requests(5.0, 1, "web-canary"), _requests(23.75, 4, "web-stable"))
    lost = measure(t, canary_share=0.10, traffic=starved)
    assert lost.judgements[0].verdict is SignalVerdict.FAIL, lost.message
    assert lost.verdict is Verdict.FAILED


def test_traffic_shares_leave_a_replica_ratio_as_it_was() -> None:
    t = template({"traffic": {}}, step="10s")
    even = (_requests(20.0, 1, "web-canary"), _requests(20.0, 4, "web-stable"))
    plain = measure(t, traffic=even).judgements[0]
    shared = measure(t, canary_share=0.2, traffic=even).judgements[0]
    assert plain.verdict is shared.verdict is SignalVerdict.PASS
    assert plain.p_value == pytest.approx(shared.p_value)
    # A share of 0 or 1 says nothing of what a pod should get: the rates stay as they are.
    for share in (0.0, 1.0):
        assert measure(t, canary_share=share, traffic=even).judgements[0].canary_median == (
            plain.canary_median
        )


# --- the confidence is split among the signals that can fail the window ---------------------


def test_a_signal_reported_with_weight_0_takes_no_share_of_the_confidence() -> None:
    # 7 errors of 60 against none of 60: p = 0.0065, significant at 0.01 / 1, not at 0.01 / 2.
    bad = error_counters([2.0, 2.0, 2.0, 1.0], per_step=15)
    good = error_counters([0.0] * 4, name="web-stable", per_step=15)
    latency = (latency_counters(LATENCY), latency_counters(LATENCY, name="web-stable"))
    signals = {"errors": {}, "latency": {}}
    both = measure(template(signals), errors=(bad, good), latency=latency)
    errors_only = measure(
        template(signals, weights={"latency": 0}), errors=(bad, good), latency=latency
    )
    p = both.judgements[0].p_value
    assert p is not None and 0.005 < p < 0.01
    assert both.judgements[0].verdict is SignalVerdict.PASS, both.message
    assert "< 0.01" in errors_only.message and "< 0.005" not in errors_only.message
    assert errors_only.judgements[0].verdict is SignalVerdict.FAIL, errors_only.message
    assert errors_only.verdict is Verdict.FAILED


# --- a window never reaches back past the step ---------------------------------------------


def test_the_judges_window_is_cut_at_the_start_of_the_step() -> None:
    t = template({"latency": {}}, step="4s", window="60s")
    assert plan_queries(t, "cart", "shop", "v2", "v1", "10s").window == "1m"
    young = plan_queries(t, "cart", "shop", "v2", "v1", "10s", step_age=26.5)
    assert young.window == "24s" and young.step == "4s"
    # never shorter than the interval the thresholds measure
    assert plan_queries(t, "cart", "shop", "v2", "v1", "10s", step_age=3.0).window == "10s"
    # a step older than the window leaves it whole
    assert plan_queries(t, "cart", "shop", "v2", "v1", "10s", step_age=600.0).window == "1m"


# --- all four signals under the judge; a series nobody exports --------------------------------


def test_with_the_judge_and_no_signals_all_four_are_judged() -> None:
    from pilotboat.handlers.analysis import effective_template

    spec = AnalysisTemplate.model_validate({"judge": {"method": "mannWhitney"}})
    judged = effective_template(spec)
    assert [name for name, _ in sampled_signals(judged)] == [
        "errors", "latency", "traffic", "saturation"
    ]
    # the thresholds stay hard limits on errors and latency
    assert [name for name, _ in judged_signals(judged)] == ["errors", "latency"]
    plain = effective_template(AnalysisTemplate.model_validate({"interval": "1m"}))
    assert [name for name, _ in judged_signals(plain)] == ["errors", "latency"]
    assert sampled_signals(plain) == ()


def test_a_signal_neither_track_exports_is_reported_and_not_scored() -> None:
    t = template({"errors": {}, "saturation": {}})
    nothing = SeriesReading(())
    errors = (error_counters([0.0] * 6), error_counters([0.0] * 6, name="web-stable"))
    m = measure(t, errors=errors, saturation=((nothing, nothing), (nothing, nothing)))
    by_signal = {j.signal: j for j in m.judgements}
    assert by_signal["saturation"].scored is False
    assert "neither track exports" in by_signal["saturation"].explanation
    assert m.verdict is Verdict.SUCCESSFUL, m.message
    assert m.scorecard is not None and m.scorecard.explanation.startswith("score 100 >= 95")
    # ... but a canary without the series its stable exports is inconclusive, as ever
    cpu = counters([0.5] * 6, name="web-stable")
    requests = counters([20.0] * 6, name="web-stable")
    half = measure(t, errors=errors, saturation=((nothing, nothing), (cpu, requests)))
    assert {j.signal: j for j in half.judgements}["saturation"].scored is True
    assert half.verdict is Verdict.INCONCLUSIVE, half.message
