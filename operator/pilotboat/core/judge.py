"""Judging a canary by statistics: its samples of one golden signal against the stable's.

Pure. A *sample* is one signal's value in one short slice of the analysis window on one pod
(the error ratio of one pod in one 10s step, say); the canary's samples and the stable's come
from the same window. :func:`compare_signal` decides, per signal, whether the canary is worse:

- **Test**: a Mann-Whitney U test (``scipy.stats.mannwhitneyu``), which assumes no shape of
  the distributions, only that samples are independent. One-sided in the direction that is
  worse for the signal (higher latency, errors and saturation; lower traffic), two-sided for
  a signal whose direction is ``either``. *Significant* means ``p < 1 - confidence``.
- **Effect**: a significant difference fails the canary only if its median is worse than the
  stable's by more than ``tolerance`` of the stable's median (10% by default) *and* by more
  than the signal's absolute floor (:data:`ABSOLUTE_FLOORS`). The floor is what keeps near-zero
  values honest: a stable error ratio of 0 makes any canary error an infinite relative change,
  and a tenth of a percentage point is below what a person would act on.
- **Too few samples**: fewer than ``min_samples`` on either side, or so few that even the most
  extreme ordering could not reach the confidence (3 against 3 cannot beat p = 0.05), is
  Inconclusive. Absence of evidence is never a Pass.

The medians are compared, so a canary whose errors come in fewer than half its steps has a
median error ratio of 0 like the stable's: the absolute ceilings of the threshold judge
(``maxRatio`` over the whole window), which stay in force beside this one, catch that case.

:func:`outlier_pod` tells a bad version from a bad pod: when one canary pod alone is worse than
the stable while the other canary pods are not, the verdict text says so.

:func:`score` combines the signals like Kayenta: each signal has a weight; the score is the
share (0 to 100) of the conclusive signals' weight that passed. At or above ``pass_score``
with no inconclusive signal is a Pass, below ``marginal_score`` a Fail, between them Marginal.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

from scipy.stats import mannwhitneyu

__all__ = [
    "ABSOLUTE_FLOORS",
    "DEFAULT_CONFIDENCE",
    "DEFAULT_TOLERANCE",
    "DEFAULT_MIN_SAMPLES",
    "DEFAULT_PASS_SCORE",
    "DEFAULT_MARGINAL_SCORE",
    "TEST_NAME",
    "Direction",
    "SignalVerdict",
    "ScoreVerdict",
    "Criteria",
    "SignalJudgement",
    "Scorecard",
    "compare_samples",
    "compare_signal",
    "outlier_pod",
    "smallest_p_value",
    "score",
]

DEFAULT_CONFIDENCE = 0.95
DEFAULT_TOLERANCE = 0.10
DEFAULT_MIN_SAMPLES = 10
DEFAULT_PASS_SCORE = 95.0
DEFAULT_MARGINAL_SCORE = 75.0
TEST_NAME = "Mann-Whitney U"

ABSOLUTE_FLOORS: Mapping[str, float] = {
    "errors": 0.001,  # a tenth of a percentage point of the requests
    "latency": 0.001,  # a millisecond
    "traffic": 0.1,  # a request every ten seconds
    "saturation": 0.01,  # a hundredth of a CPU second per second, or of one in-flight request
}
"""The smallest worsening of a median, in the signal's own units, that may fail a canary."""


class Direction(StrEnum):
    """Which way a signal may not move: ``increase`` (higher is worse), ``decrease`` (lower
    is worse) or ``either`` (a change either way is worse; the test is two-sided)."""

    INCREASE = "increase"
    DECREASE = "decrease"
    EITHER = "either"


class SignalVerdict(StrEnum):
    PASS = "Pass"
    FAIL = "Fail"
    INCONCLUSIVE = "Inconclusive"


class ScoreVerdict(StrEnum):
    """The verdict on all signals together. Marginal and Inconclusive pause for a person."""

    PASS = "Pass"
    MARGINAL = "Marginal"
    FAIL = "Fail"
    INCONCLUSIVE = "Inconclusive"


_ALTERNATIVE = {
    Direction.INCREASE: "greater",
    Direction.DECREASE: "less",
    Direction.EITHER: "two-sided",
}
_SIDED = {
    Direction.INCREASE: "one-sided (higher is worse)",
    Direction.DECREASE: "one-sided (lower is worse)",
    Direction.EITHER: "two-sided",
}


@dataclass(frozen=True)
class Criteria:
    """How one signal is judged."""

    direction: Direction
    confidence: float = DEFAULT_CONFIDENCE
    tolerance: float = DEFAULT_TOLERANCE
    floor: float = 0.0
    min_samples: int = DEFAULT_MIN_SAMPLES

    @property
    def alpha(self) -> float:
        """The significance level; rounded, so that 1 - 0.95 is 0.05 and not a hair above."""
        return round(1.0 - self.confidence, 12)


@dataclass(frozen=True)
class SignalJudgement:
    """The statistical verdict on one signal, with the numbers behind it.

    ``effect`` is the canary's median minus the stable's, in the signal's units; ``relative``
    is that as a share of the stable's median (``None`` when that is 0). ``statistic`` is
    scipy's U for the canary sample.
    """

    signal: str
    label: str
    test: str
    n_canary: int
    n_stable: int
    canary_median: float | None
    stable_median: float | None
    statistic: float | None
    p_value: float | None
    effect: float | None
    relative: float | None
    verdict: SignalVerdict
    explanation: str


@dataclass(frozen=True)
class Scorecard:
    score: float | None
    verdict: ScoreVerdict
    explanation: str


_Format = Callable[[float], str]


def _default_format(value: float) -> str:
    return f"{value:.4g}"


def _finite(values: Sequence[float]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(v)]


def smallest_p_value(n_canary: int, n_stable: int, direction: Direction) -> float:
    """The smallest p-value a rank test can give with these sample sizes: the chance of the
    most extreme ordering, ``1 / C(n + m, n)`` (twice that two-sided). Below it no amount of
    difference is significant.

    >>> smallest_p_value(3, 3, Direction.INCREASE)
    0.05
    >>> smallest_p_value(5, 5, Direction.EITHER) < 0.01
    True
    """
    if n_canary == 0 or n_stable == 0:
        return 1.0
    orderings = math.comb(n_canary + n_stable, n_canary)
    if orderings > 10**300:  # beyond a float; the bound is 0 for every purpose
        return 0.0
    one_sided = 1.0 / orderings
    return min(1.0, 2 * one_sided) if direction is Direction.EITHER else one_sided


def _worsening(canary: float, stable: float, direction: Direction) -> float:
    if direction is Direction.INCREASE:
        return canary - stable
    if direction is Direction.DECREASE:
        return stable - canary
    return abs(canary - stable)


def _effect_text(effect: float, relative: float | None, fmt: _Format) -> str:
    if relative is not None:
        return f"{relative * 100:+.1f}%"
    sign = "+" if effect >= 0 else "-"
    return f"{sign}{fmt(abs(effect))} absolute"


def _p_text(p: float) -> str:
    return f"{p:.2g}" if p >= 0.001 else f"{p:.1e}"


def compare_samples(
    signal: str,
    canary: Sequence[float],
    stable: Sequence[float],
    criteria: Criteria,
    label: str | None = None,
    fmt: _Format = _default_format,
) -> SignalJudgement:
    """The verdict on one signal from the canary's samples and the stable's over the same
    window. Non-finite samples (a step without traffic has no error ratio) are left out.

    >>> c = Criteria(Direction.INCREASE, floor=0.001)
    >>> j = compare_samples("errors", [0.05] * 12, [0.0] * 12, c)
    >>> j.verdict.value, j.n_canary, j.canary_median, j.stable_median
    ('Fail', 12, 0.05, 0.0)
    >>> j.explanation
    'errors worse: median 0.05 vs stable 0 (+0.05 absolute), Mann-Whitney U one-sided \
(higher is worse), p=9.6e-07 < 0.05, n=12/12'
    >>> compare_samples("errors", [0.0] * 12, [0.0] * 12, c).verdict.value
    'Pass'
    >>> compare_samples("errors", [0.5] * 4, [0.0] * 40, c).explanation
    'errors: too few samples (canary 4, stable 40; at least 10 each): inconclusive'
    """
    label = label or signal
    c, s = _finite(canary), _finite(stable)
    test = f"{TEST_NAME} {_SIDED[criteria.direction]}"
    n = f"n={len(c)}/{len(s)}"

    def judgement(
        verdict: SignalVerdict,
        explanation: str,
        statistic: float | None = None,
        p: float | None = None,
    ) -> SignalJudgement:
        cm = statistics.median(c) if c else None
        sm = statistics.median(s) if s else None
        effect = cm - sm if cm is not None and sm is not None else None
        relative = effect / abs(sm) if effect is not None and sm else None
        return SignalJudgement(
            signal, label, test, len(c), len(s), cm, sm, statistic, p, effect, relative,
            verdict, explanation,
        )  # fmt: skip

    if len(c) < criteria.min_samples or len(s) < criteria.min_samples:
        return judgement(
            SignalVerdict.INCONCLUSIVE,
            f"{label}: too few samples (canary {len(c)}, stable {len(s)};"
            f" at least {criteria.min_samples} each): inconclusive",
        )
    # With ties and few samples scipy's normal approximation can give a p-value below what
    # any ordering of the samples could: below that bound, nothing is significant.
    if smallest_p_value(len(c), len(s), criteria.direction) >= criteria.alpha:
        return judgement(
            SignalVerdict.INCONCLUSIVE,
            f"{label}: {n} cannot reach {criteria.confidence:.0%} confidence: inconclusive",
        )
    cm, sm = statistics.median(c), statistics.median(s)
    result = mannwhitneyu(c, s, alternative=_ALTERNATIVE[criteria.direction])
    statistic, p = float(result.statistic), float(result.pvalue)
    if math.isnan(p):  # no variance at all: nothing tells the two apart
        p = 1.0
    effect = cm - sm
    relative = effect / abs(sm) if sm else None
    medians = (
        f"median {fmt(cm)} vs stable {fmt(sm)} ({_effect_text(effect, relative, fmt)})"
    )
    evidence = f"{test}, p={_p_text(p)}"
    if p >= criteria.alpha:
        return judgement(
            SignalVerdict.PASS,
            f"{label} no worse: {medians}, {evidence} >= {criteria.alpha:.2g}, {n}",
            statistic,
            p,
        )
    worse_by = _worsening(cm, sm, criteria.direction)
    allowed = max(criteria.tolerance * abs(sm), criteria.floor)
    if worse_by <= allowed:
        return judgement(
            SignalVerdict.PASS,
            f"{label} within tolerance: {medians}, at most {fmt(allowed)} allowed"
            f" ({criteria.tolerance:.0%}, floor {fmt(criteria.floor)}), {evidence}, {n}",
            statistic,
            p,
        )
    return judgement(
        SignalVerdict.FAIL,
        f"{label} worse: {medians}, {evidence} < {criteria.alpha:.2g}, {n}",
        statistic,
        p,
    )


def outlier_pod(
    signal: str,
    canary_by_pod: Mapping[str, Sequence[float]],
    stable: Sequence[float],
    criteria: Criteria,
    fmt: _Format = _default_format,
) -> str | None:
    """The pod that alone makes the canary look worse, in words, or ``None``.

    Each canary pod with enough samples is compared with the stable on its own; when exactly
    one of them fails and every other one passes (at least one), that pod is the outlier.

    >>> c = Criteria(Direction.INCREASE, floor=0.001)
    >>> pods = {"web-1": [0.3] * 12, "web-2": [0.0] * 12, "web-3": [0.0] * 12}
    >>> outlier_pod("errors", pods, [0.0] * 24, c)
    'pod web-1 alone is worse (median 0.3 vs stable 0, p=1.9e-09); the other 2 canary pods \
are not: suspect the pod or its node, not only the version'
    >>> outlier_pod("errors", {"web-1": [0.3] * 12}, [0.0] * 24, c) is None
    True
    """
    if len(canary_by_pod) < 2:
        return None
    verdicts = {
        pod: compare_samples(signal, samples, stable, criteria, fmt=fmt)
        for pod, samples in sorted(canary_by_pod.items())
    }
    failed = [p for p, j in verdicts.items() if j.verdict is SignalVerdict.FAIL]
    passed = [p for p, j in verdicts.items() if j.verdict is SignalVerdict.PASS]
    if len(failed) != 1 or not passed or len(failed) + len(passed) != len(verdicts):
        return None
    pod = failed[0]
    j = verdicts[pod]
    assert j.canary_median is not None and j.stable_median is not None and j.p_value is not None
    others = len(passed)
    return (
        f"pod {pod} alone is worse (median {fmt(j.canary_median)} vs stable"
        f" {fmt(j.stable_median)}, p={_p_text(j.p_value)}); the other {others} canary"
        f" pod{'s are' if others > 1 else ' is'} not: suspect the pod or its node,"
        " not only the version"
    )


def compare_signal(
    signal: str,
    canary_by_pod: Mapping[str, Sequence[float]],
    stable: Sequence[float],
    criteria: Criteria,
    label: str | None = None,
    fmt: _Format = _default_format,
) -> SignalJudgement:
    """:func:`compare_samples` on the canary's pods' samples pooled, with the outlier pod, if
    any (:func:`outlier_pod`), named at the end of the explanation. The verdict is the
    pooled one: an outlier is a clue for the person reading it, not a second vote."""
    pooled = [v for samples in canary_by_pod.values() for v in samples]
    judgement = compare_samples(signal, pooled, stable, criteria, label, fmt)
    if judgement.verdict is SignalVerdict.INCONCLUSIVE:
        return judgement
    outlier = outlier_pod(signal, canary_by_pod, stable, criteria, fmt)
    if outlier is None:
        return judgement
    return replace(judgement, explanation=f"{judgement.explanation}; {outlier}")


def score(
    judgements: Sequence[SignalJudgement],
    weights: Mapping[str, float] | None = None,
    pass_score: float = DEFAULT_PASS_SCORE,
    marginal_score: float = DEFAULT_MARGINAL_SCORE,
) -> Scorecard:
    """All signals' verdict, Kayenta-style: the weighted share of the conclusive signals that
    passed, 0 to 100. A signal's weight is 1 unless `weights` says otherwise; weight 0 is
    reported but not scored. Inconclusive signals are left out of the score, so they can
    neither pass nor fail the canary, but while any is left out the verdict is at best
    Marginal. No conclusive signal at all is Inconclusive.

    >>> def j(signal, verdict):
    ...     return SignalJudgement(signal, signal, TEST_NAME, 12, 12, 0, 0, None, None,
    ...                            None, None, SignalVerdict(verdict), "")
    >>> score([j("errors", "Pass"), j("latency", "Pass")]).explanation
    'score 100 >= 95: pass (2 of 2 signals passed)'
    >>> score([j("errors", "Pass"), j("latency", "Fail")], {"errors": 3}).explanation
    'score 75 < 95: marginal (latency failed)'
    >>> score([j("errors", "Fail"), j("latency", "Pass")], {"errors": 3}).explanation
    'score 25 < 75: fail (errors failed)'
    >>> score([j("errors", "Pass"), j("latency", "Inconclusive")]).explanation
    'score 100, but latency inconclusive: marginal'
    >>> score([j("errors", "Inconclusive")]).verdict.value
    'Inconclusive'
    """
    weights = weights or {}

    def weight(j: SignalJudgement) -> float:
        return float(weights.get(j.signal, 1.0))

    scored = [j for j in judgements if weight(j) > 0]
    conclusive = [j for j in scored if j.verdict is not SignalVerdict.INCONCLUSIVE]
    unsure = [j.signal for j in scored if j.verdict is SignalVerdict.INCONCLUSIVE]
    total = sum(weight(j) for j in conclusive)
    if total <= 0:
        names = ", ".join(unsure) or "no signal"
        return Scorecard(None, ScoreVerdict.INCONCLUSIVE, f"no score: {names} inconclusive")
    value = 100.0 * sum(weight(j) for j in conclusive if j.verdict is SignalVerdict.PASS) / total
    shown = f"{value:.0f}" if value == round(value) else f"{value:.1f}"
    failed = ", ".join(j.signal for j in conclusive if j.verdict is SignalVerdict.FAIL)
    if value < marginal_score:
        return Scorecard(
            value, ScoreVerdict.FAIL, f"score {shown} < {marginal_score:g}: fail ({failed} failed)"
        )
    if value < pass_score:
        return Scorecard(
            value,
            ScoreVerdict.MARGINAL,
            f"score {shown} < {pass_score:g}: marginal ({failed} failed)",
        )
    if unsure:
        return Scorecard(
            value,
            ScoreVerdict.MARGINAL,
            f"score {shown}, but {', '.join(unsure)} inconclusive: marginal",
        )
    return Scorecard(
        value,
        ScoreVerdict.PASS,
        f"score {shown} >= {pass_score:g}: pass ({len(conclusive)} of {len(conclusive)}"
        " signals passed)",
    )
