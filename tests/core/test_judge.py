"""The statistical judge: one signal's canary samples against the stable's, and the score."""

from __future__ import annotations

import doctest
import itertools
import math
import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import mannwhitneyu

import pilotboat.core.judge
from pilotboat.core.judge import (
    Criteria,
    Direction,
    ScoreVerdict,
    SignalJudgement,
    SignalVerdict,
    compare_samples,
    compare_signal,
    score,
    smallest_p_value,
)

pytestmark = pytest.mark.core

UP, DOWN, EITHER = Direction.INCREASE, Direction.DECREASE, Direction.EITHER
ALTERNATIVE = {UP: "greater", DOWN: "less", EITHER: "two-sided"}


def test_docstring_examples_hold() -> None:
    result = doctest.testmod(pilotboat.core.judge)
    assert result.attempted > 0 and result.failed == 0


def pairs_u(canary: list[float], stable: list[float]) -> float:
    """U of the canary by its definition: pairs it wins, ties counting a half."""
    return sum((c > s) + 0.5 * (c == s) for c in canary for s in stable)


LATENCY = [0.100, 0.104, 0.098, 0.110, 0.102, 0.097, 0.105, 0.099, 0.101, 0.103, 0.100, 0.106]
SLOWER = [v * 1.3 for v in LATENCY]
A_BIT_SLOWER = [v * 1.05 + 0.001 for v in LATENCY]

# (direction, canary, stable, floor, verdict)
CASES: list[tuple[Direction, list[float], list[float], float, SignalVerdict]] = [
    # 30% slower, every sample: worse beyond the 10% tolerance
    (UP, SLOWER, LATENCY, 0.001, SignalVerdict.FAIL),
    # 5% slower is significant, but within the tolerance
    (UP, A_BIT_SLOWER, LATENCY, 0.001, SignalVerdict.PASS),
    # faster never fails a one-sided test of "higher is worse"
    (UP, [v * 0.5 for v in LATENCY], LATENCY, 0.001, SignalVerdict.PASS),
    # ... but does fail a two-sided one
    (EITHER, [v * 0.5 for v in LATENCY], LATENCY, 0.001, SignalVerdict.FAIL),
    # less traffic is worse, more is not
    (DOWN, [v * 0.5 for v in LATENCY], LATENCY, 0.0, SignalVerdict.FAIL),
    (DOWN, [v * 2 for v in LATENCY], LATENCY, 0.0, SignalVerdict.PASS),
    # near zero: a stable error ratio of 0 makes any error an infinite relative change; the
    # absolute floor (0.1 percentage point) decides
    (UP, [0.0005] * 12, [0.0] * 12, 0.001, SignalVerdict.PASS),
    (UP, [0.002] * 12, [0.0] * 12, 0.001, SignalVerdict.FAIL),
    # interleaved samples: no significant difference
    (UP, LATENCY[::2] * 2, LATENCY[1::2] * 2, 0.001, SignalVerdict.PASS),
]


@pytest.mark.parametrize(("direction", "canary", "stable", "floor", "verdict"), CASES)
def test_verdicts_and_their_numbers_agree_with_scipy(
    direction: Direction,
    canary: list[float],
    stable: list[float],
    floor: float,
    verdict: SignalVerdict,
) -> None:
    j = compare_samples("latency", canary, stable, Criteria(direction, floor=floor))
    expected = mannwhitneyu(canary, stable, alternative=ALTERNATIVE[direction])
    assert j.verdict is verdict, j.explanation
    assert j.statistic == pytest.approx(pairs_u(canary, stable))
    assert j.statistic == pytest.approx(float(expected.statistic))
    assert j.p_value == pytest.approx(float(expected.pvalue))
    assert (j.n_canary, j.n_stable) == (len(canary), len(stable))
    assert j.canary_median == pytest.approx(statistics.median(canary))
    assert j.stable_median == pytest.approx(statistics.median(stable))
    assert j.effect == pytest.approx(j.canary_median - j.stable_median)  # type: ignore[operator]
    assert j.test.startswith("Mann-Whitney U ")
    assert f"n={len(canary)}/{len(stable)}" in j.explanation
    assert "p=" in j.explanation


def permutation_p(canary: list[float], stable: list[float], direction: Direction) -> float:
    """The exact p-value of U by counting every split of the pooled samples (no ties)."""
    pooled, n = canary + stable, len(canary)
    observed = pairs_u(canary, stable)
    mean = n * len(stable) / 2
    extreme = total = 0
    for chosen in itertools.combinations(range(len(pooled)), n):
        picked = set(chosen)
        u = pairs_u(
            [pooled[i] for i in chosen], [v for i, v in enumerate(pooled) if i not in picked]
        )
        total += 1
        if direction is UP:
            extreme += u >= observed
        elif direction is DOWN:
            extreme += u <= observed
        else:
            extreme += abs(u - mean) >= abs(observed - mean)
    return extreme / total


# Small samples without ties, where scipy computes the exact distribution. Fully separated
# groups of five are 1 of C(10, 5) = 252 orderings.
EXACT: list[tuple[list[float], list[float], Direction, float, float | None]] = [
    ([6, 7, 8, 9, 10], [1, 2, 3, 4, 5], UP, 25.0, 1 / 252),
    ([6, 7, 8, 9, 10], [1, 2, 3, 4, 5], EITHER, 25.0, 2 / 252),
    ([1, 2, 3, 4, 5], [6, 7, 8, 9, 10], DOWN, 0.0, 1 / 252),
    ([4, 5, 6, 7, 8], [1, 2, 3, 9, 10], UP, 15.0, None),
    ([2, 4, 6, 8, 10], [1, 3, 5, 7, 9], UP, 15.0, None),
    ([2, 4, 6, 8, 10, 12], [1, 3, 5, 7, 9], EITHER, 20.0, None),
    ([0.5, 0.9, 1.4, 2.2, 3.1, 3.3, 4.0], [0.1, 0.2, 0.3, 1.0, 1.1, 1.2], UP, 36.0, None),
]


@pytest.mark.parametrize(("canary", "stable", "direction", "u", "p"), EXACT)
def test_exact_u_and_p_values(
    canary: list[float], stable: list[float], direction: Direction, u: float, p: float | None
) -> None:
    j = compare_samples("latency", canary, stable, Criteria(direction, min_samples=5))
    assert j.statistic == u == pairs_u(canary, stable)
    exact = permutation_p(canary, stable, direction)
    assert j.p_value == pytest.approx(exact)
    if p is not None:
        assert exact == pytest.approx(p)
    expected = mannwhitneyu(canary, stable, alternative=ALTERNATIVE[direction])
    assert j.p_value == pytest.approx(float(expected.pvalue))


def test_medians_effect_and_explanation() -> None:
    j = compare_samples(
        "latency",
        SLOWER,
        LATENCY,
        Criteria(UP, floor=0.001),
        "p99 latency",
        lambda v: f"{v * 1000:.2f}ms",
    )
    assert j.canary_median == pytest.approx(0.13195)
    assert j.stable_median == pytest.approx(0.1015)
    assert j.relative == pytest.approx(0.3)
    assert j.explanation.startswith(
        "p99 latency worse: median 131.95ms vs stable 101.50ms (+30.0%), Mann-Whitney U"
        " one-sided (higher is worse), p="
    )
    assert j.explanation.endswith("< 0.05, n=12/12")


@pytest.mark.parametrize(
    ("canary", "stable", "message"),
    [
        ([1.0] * 9, [0.0] * 40, "too few samples (canary 9, stable 40; at least 10 each)"),
        ([1.0] * 40, [], "too few samples (canary 40, stable 0; at least 10 each)"),
        ([math.nan] * 30 + [1.0] * 5, [0.0] * 40, "too few samples (canary 5, stable 40"),
    ],
)
def test_too_few_samples_is_inconclusive(
    canary: list[float], stable: list[float], message: str
) -> None:
    j = compare_samples("errors", canary, stable, Criteria(UP))
    assert j.verdict is SignalVerdict.INCONCLUSIVE
    assert message in j.explanation


def test_samples_too_few_to_reach_the_confidence_are_inconclusive() -> None:
    # 3 against 3: the most extreme ordering has p = 1/20, not below 0.05
    assert smallest_p_value(3, 3, UP) == pytest.approx(0.05)
    j = compare_samples("errors", [9.0, 9.0, 9.0], [0.0, 0.0, 0.0], Criteria(UP, min_samples=2))
    assert j.verdict is SignalVerdict.INCONCLUSIVE
    assert j.explanation == "errors: n=3/3 cannot reach 95% confidence: inconclusive"


def test_many_samples_are_judged() -> None:
    assert smallest_p_value(2000, 3000, EITHER) == 0.0
    j = compare_samples("latency", LATENCY * 200, LATENCY * 300, Criteria(UP))
    assert j.verdict is SignalVerdict.PASS and (j.n_canary, j.n_stable) == (2400, 3600)


def test_a_single_outlier_pod_is_named() -> None:
    stable = [0.0] * 36
    pods = {"web-canary-a": [0.2] * 12, "web-canary-b": [0.0] * 12, "web-canary-c": [0.0] * 12}
    j = compare_signal("errors", pods, stable, Criteria(UP, floor=0.001))
    assert "pod web-canary-a alone is worse" in j.explanation
    assert "the other 2 canary pods are not: suspect the pod or its node" in j.explanation
    # pooled, the one pod's errors are a third of the samples: the median stays 0
    assert j.verdict is SignalVerdict.PASS


def test_two_bad_pods_are_the_version_not_an_outlier() -> None:
    pods = {"a": [0.2] * 12, "b": [0.2] * 12, "c": [0.0] * 12}
    j = compare_signal("errors", pods, [0.0] * 36, Criteria(UP, floor=0.001))
    assert j.verdict is SignalVerdict.FAIL
    assert "alone" not in j.explanation


def test_one_pod_has_no_outlier_to_name() -> None:
    j = compare_signal("errors", {"a": [0.2] * 12}, [0.0] * 36, Criteria(UP, floor=0.001))
    assert j.verdict is SignalVerdict.FAIL and "alone" not in j.explanation


def judgement(signal: str, verdict: str) -> SignalJudgement:
    return SignalJudgement(
        signal, signal, "t", 12, 12, 0.0, 0.0, None, None, None, None, SignalVerdict(verdict), ""
    )


# (verdicts by signal, weights, score, verdict)
SCORES: list[tuple[dict[str, str], dict[str, float], float | None, ScoreVerdict]] = [
    ({"errors": "Pass", "latency": "Pass"}, {}, 100.0, ScoreVerdict.PASS),
    ({"errors": "Fail", "latency": "Pass"}, {}, 50.0, ScoreVerdict.FAIL),
    ({"errors": "Pass", "latency": "Fail"}, {"errors": 4}, 80.0, ScoreVerdict.MARGINAL),
    ({"errors": "Pass", "latency": "Fail"}, {"errors": 19}, 95.0, ScoreVerdict.PASS),
    ({"errors": "Pass", "latency": "Fail"}, {"latency": 0}, 100.0, ScoreVerdict.PASS),
    ({"errors": "Pass", "latency": "Inconclusive"}, {}, 100.0, ScoreVerdict.MARGINAL),
    ({"errors": "Fail", "latency": "Inconclusive"}, {}, 0.0, ScoreVerdict.FAIL),
    ({"errors": "Inconclusive"}, {}, None, ScoreVerdict.INCONCLUSIVE),
    ({}, {}, None, ScoreVerdict.INCONCLUSIVE),
]


@pytest.mark.parametrize(("verdicts", "weights", "value", "verdict"), SCORES)
def test_score(
    verdicts: dict[str, str],
    weights: dict[str, float],
    value: float | None,
    verdict: ScoreVerdict,
) -> None:
    card = score([judgement(s, v) for s, v in verdicts.items()], weights)
    assert card.verdict is verdict, card.explanation
    assert card.score == (None if value is None else pytest.approx(value))


# --- properties ---------------------------------------------------------------------------

values = st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False)
samples = st.lists(values, min_size=10, max_size=60)
directions = st.sampled_from(list(Direction))
criteria = st.builds(
    Criteria,
    direction=directions,
    confidence=st.sampled_from([0.9, 0.95, 0.99]),
    tolerance=st.sampled_from([0.0, 0.1, 0.5]),
    floor=st.sampled_from([0.0, 0.001, 1.0]),
    min_samples=st.integers(2, 10),
)


@given(samples, criteria)
def test_identical_samples_never_fail(stable: list[float], c: Criteria) -> None:
    assert compare_samples("latency", list(stable), stable, c).verdict is not SignalVerdict.FAIL


@given(samples, st.floats(min_value=1e-3, max_value=1e3), criteria)
def test_a_canary_strictly_better_never_fails_a_one_sided_test(
    stable: list[float], shift: float, c: Criteria
) -> None:
    for direction, sign in ((UP, -1), (DOWN, 1)):
        better = [v + sign * shift for v in stable]
        one_sided = Criteria(direction, c.confidence, c.tolerance, c.floor, c.min_samples)
        assert compare_samples("x", better, stable, one_sided).verdict is not SignalVerdict.FAIL


@given(
    st.lists(values, max_size=60),
    st.lists(values, max_size=60),
    directions,
    st.integers(1, 40),
)
def test_too_few_samples_never_pass(
    canary: list[float], stable: list[float], direction: Direction, missing: int
) -> None:
    smallest = min(len(canary), len(stable))
    c = Criteria(direction, min_samples=smallest + missing)
    assert compare_samples("x", canary, stable, c).verdict is SignalVerdict.INCONCLUSIVE


@given(st.lists(st.sampled_from(["Pass", "Fail", "Inconclusive"]), min_size=1, max_size=4))
def test_with_equal_weights_the_score_never_passes_a_failed_or_inconclusive_signal(
    verdicts: list[str],
) -> None:
    names = ["errors", "latency", "traffic", "saturation"]
    card = score([judgement(n, v) for n, v in zip(names, verdicts, strict=False)])
    if "Inconclusive" in verdicts or "Fail" in verdicts:
        assert card.verdict is not ScoreVerdict.PASS
    if card.score is not None:
        assert 0 <= card.score <= 100
