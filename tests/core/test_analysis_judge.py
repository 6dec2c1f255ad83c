"""Golden-signal analysis with the statistical judge (``judge.method: mannWhitney``): the
sample queries it plans, and measurements judged from per-pod samples and thresholds."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from pilotboat.api.rollout import AnalysisTemplate
from pilotboat.core.analysis import (
    DEFAULT_SAMPLE_QUERIES,
    Measurement,
    Reading,
    SampleSeries,
    SeriesReading,
    Verdict,
    judge,
    plan_queries,
    queries_per_interval,
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


def measure(
    t: AnalysisTemplate,
    readings: dict[str, Any] | None = None,
    **series: tuple[SeriesReading, SeriesReading],
) -> Measurement:
    """Judge `series` (signal=(canary, stable)) and instant `readings` (key=value)."""
    plan = plan_queries(t, "cart", "shop", "v2", "v1", t.interval)
    given = {"requests": Reading(100)}
    for key, value in (readings or {}).items():
        given[key] = Reading(error=value) if isinstance(value, str) else Reading(value)
    sampled = {}
    for name, (canary, stable) in series.items():
        sampled[f"{name}.canary"], sampled[f"{name}.stable"] = canary, stable
    return judge(t, plan, given, NOW, series=sampled)


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
    plan = plan_queries(t, "cart", "shop", "v2", "v1", "2m")
    assert (plan.step, plan.window) == ("15s", "2m")
    queries = {q.key: q.expression for q in plan.sample_queries}
    sel = 'namespace="shop",service="cart",version="v2"'
    all_requests = f"rate(http_requests_total{{{sel}}}[15s])"
    assert queries["errors.canary"] == (
        f'(sum by (pod, instance) (rate(http_requests_total{{{sel},code=~"5.."}}[15s]))'
        f" or 0 * sum by (pod, instance) ({all_requests}))"
        f" / sum by (pod, instance) ({all_requests})"
    )
    assert queries["latency.canary"] == (
        "histogram_quantile(0.9, sum by (le, pod, instance) "
        f"(rate(http_request_duration_seconds_bucket{{{sel}}}[15s])))"
    )
    assert 'version="v1"' in str(queries["latency.stable"])
    # latency has no threshold: sampled, but not queried at an instant
    assert [q.key for q in plan.queries] == ["requests", "errors.canary", "errors.stable"]
    assert queries_per_interval(t) == 1 + 2 + 4
    assert set(DEFAULT_SAMPLE_QUERIES) == {"errors", "latency", "traffic", "saturation"}


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
    m = measure(t, latency=(pods(LATENCY), pods(LATENCY[::-1], LATENCY, name="web")))
    assert m.verdict is Verdict.SUCCESSFUL, m.message
    assert m.score == 100
    (j,) = m.judgements
    assert (j.n_canary, j.n_stable, j.verdict) == (12, 24, SignalVerdict.PASS)
    assert m.message.startswith("score 100 >= 95: pass (1 of 1 signals passed); p99 latency")
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
        latency=(pods(slower), pods(LATENCY)),
        errors=(pods([0.0] * 12), pods([0.0] * 12)),
    )
    assert m.verdict is Verdict.FAILED, m.message
    assert m.message.startswith("score 50 < 75: fail (latency failed); p99 latency worse: ")
    by_signal = {s.signal: s.verdict for s in m.samples}
    assert by_signal == {"errors": Verdict.SUCCESSFUL, "latency": Verdict.FAILED}


def test_weights_make_a_failed_signal_marginal() -> None:
    t = template({"latency": {}, "errors": {}}, weights={"errors": 4})
    m = measure(
        t,
        latency=(pods([v * 1.5 for v in LATENCY]), pods(LATENCY)),
        errors=(pods([0.0] * 12), pods([0.0] * 12)),
    )
    assert m.verdict is Verdict.INCONCLUSIVE
    assert m.message.startswith("score 80 < 95: marginal (latency failed)")


def test_a_threshold_is_a_hard_limit_whatever_the_score() -> None:
    t = template({"errors": {"maxRatio": 0.01}})
    window = {"errors.canary": 0.05, "errors.stable": 0.0}
    m = measure(t, window, errors=(pods([0.0] * 12), pods([0.0] * 12)))
    assert m.verdict is Verdict.FAILED
    assert m.message.startswith("error ratio 5.0% > 1.0% (stable 0.0%); score 100 >= 95: pass")
    (sample,) = m.samples
    assert (sample.canary, sample.verdict) == (0.05, Verdict.FAILED)
    assert "error ratio no worse: median 0% vs stable 0%" in sample.message


def test_too_few_samples_are_inconclusive_never_a_pass() -> None:
    m = measure(template({"latency": {}}), latency=(pods(LATENCY[:4]), pods(LATENCY)))
    assert m.verdict is Verdict.INCONCLUSIVE
    assert m.message == (
        "no score: latency inconclusive; p99 latency: too few samples"
        " (canary 4, stable 12; at least 10 each): inconclusive"
    )


def test_too_few_requests_decide_alone() -> None:
    t = template({"latency": {}})
    plan = plan_queries(t, "cart", "shop", "v2", "v1", "2m")
    series = {"latency.canary": pods(LATENCY), "latency.stable": pods(LATENCY)}
    m = judge(t, plan, {"requests": Reading(3)}, NOW, series=series)
    assert (m.verdict, m.message) == (
        Verdict.INCONCLUSIVE,
        "only 3 canary requests in 2m < minimum 20: inconclusive",
    )


def test_a_failed_range_query_is_an_error_naming_the_signal() -> None:
    refused = SeriesReading(error="Prometheus answered HTTP 400: bad_data: parse error")
    m = measure(template({"latency": {}}), latency=(pods(LATENCY), refused))
    assert m.verdict is Verdict.ERROR
    assert m.message == (
        "stable p99 latency samples: Prometheus answered HTTP 400: bad_data: parse error"
    )


def test_one_bad_canary_pod_is_named_as_the_outlier() -> None:
    zeros = [0.0] * 12
    canary = pods([0.2] * 12, zeros, zeros)
    m = measure(template({"errors": {}}), errors=(canary, pods(zeros, zeros, zeros, name="web")))
    assert "pod web-canary-0 alone is worse" in m.message
    assert m.verdict is Verdict.SUCCESSFUL  # pooled, most of the canary is as good as stable


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
