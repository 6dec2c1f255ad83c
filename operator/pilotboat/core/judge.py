"""Judging a canary by statistics: its samples of one golden signal against the stable's.

Pure. Two kinds of evidence, both from the same window for canary and stable:

- **Pooled counts** (:func:`compare_proportions`), for a ratio of events to a total such as
  errors among requests: every error and every request of each track over the whole window,
  read from the counters themselves (:func:`counter_increases`, so no ``rate()``
  extrapolation and no slice of the window left out), compared with Fisher's exact test
  (``scipy.stats.fisher_exact``) on the 2x2 table, one-sided in the direction that is worse.
  A median of per-step error ratios stays 0 while fewer than half the steps hold an error;
  the pooled ratio does not, and the exact test never fails a healthy canary more often than
  its significance level, however few the errors.
- **Samples** (:func:`compare_signal`), for everything else: a *sample* is one signal's value
  in one step of the window on one pod (the mean latency of one pod in one 4s step, from its
  histogram's ``_sum`` and ``_count`` counters: :func:`step_means`).

:func:`compare_signal` decides, per signal, whether the canary is worse:

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

The medians are compared, so samples suit a signal whose every step has a value (latency,
traffic, saturation); ratios of rare events go to :func:`compare_proportions`, with the same
effect rule on the pooled ratios.

:func:`outlier_pod` (samples) and :func:`compare_proportions` (each canary pod's own counts
against the stable's pooled ones) tell a bad version from a bad pod: when one canary pod alone
is worse than the stable while the other canary pods are not, the verdict text says so. A pod
needs only :data:`OUTLIER_MIN_SAMPLES` samples or :data:`OUTLIER_MIN_REQUESTS` requests for
that: the test's own p-value, not a count, says whether it is evidence.

:func:`score` combines the signals like Kayenta: each signal has a weight; the score is the
share (0 to 100) of the conclusive signals' weight that passed. At or above ``pass_score``
with no inconclusive signal is a Pass, below ``marginal_score`` a Fail, between them Marginal.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

__all__ = [
    "ABSOLUTE_FLOORS",
    "DEFAULT_CONFIDENCE",
    "DEFAULT_TOLERANCE",
    "DEFAULT_MIN_SAMPLES",
    "DEFAULT_PASS_SCORE",
    "DEFAULT_MARGINAL_SCORE",
    "TEST_NAME",
    "PROPORTION_TEST_NAME",
    "OUTLIER_MIN_SAMPLES",
    "OUTLIER_MIN_REQUESTS",
    "Counts",
    "compare_proportions",
    "counter_increases",
    "counts_from_counters",
    "proportion_p_value",
    "step_means",
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

DEFAULT_CONFIDENCE = 0.95  # the core's own; the API's default (0.99) is what an analysis passes
DEFAULT_TOLERANCE = 0.10
DEFAULT_MIN_SAMPLES = 10
DEFAULT_PASS_SCORE = 95.0
DEFAULT_MARGINAL_SCORE = 75.0
TEST_NAME = "Mann-Whitney U"
PROPORTION_TEST_NAME = "Fisher's exact"
OUTLIER_MIN_SAMPLES = 3
"""Samples a canary pod needs for its own test against the stable (:func:`outlier_pod`)."""
OUTLIER_MIN_REQUESTS = 20
"""Requests a canary pod needs for its own test against the stable (:func:`compare_proportions`)."""

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
    scipy's U for the canary sample. For a test of pooled counts (:func:`compare_proportions`)
    the "medians" are the pooled ratios, ``n_canary`` and ``n_stable`` the totals (requests)
    and ``statistic`` the canary's event count (errors). ``scored`` is False for a signal
    neither track exports (no series at all): it is reported, and :func:`score` leaves it
    out as it does a signal of weight 0.
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
    scored: bool = True


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
    from scipy.stats import mannwhitneyu  # on first use: scipy costs ~50 MiB, the judge is opt-in

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
            f"{label} not shown worse: {medians}, {evidence} >= {criteria.alpha:.2g}, {n}",
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

    Each canary pod is compared with the stable on its own (with at least
    :data:`OUTLIER_MIN_SAMPLES` samples, or ``min_samples`` when that is lower); when exactly
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
    per_pod = replace(criteria, min_samples=min(criteria.min_samples, OUTLIER_MIN_SAMPLES))
    s = _finite(stable)
    allowed = max(criteria.tolerance * abs(statistics.median(s)), criteria.floor) if s else 0.0
    verdicts: dict[str, SignalJudgement | SignalVerdict] = {}
    for pod, samples in sorted(canary_by_pod.items()):
        c = _finite(samples)
        if (
            s
            and min(len(c), len(s)) >= per_pod.min_samples
            and _worsening(statistics.median(c), statistics.median(s), criteria.direction)
            <= allowed
        ):  # within the tolerance: a pass whatever the test says, so it is not run
            verdicts[pod] = SignalVerdict.PASS
        else:
            verdicts[pod] = compare_samples(signal, c, s, per_pod, fmt=fmt)
    return _outlier(verdicts, "median ", fmt)


def _outlier(
    verdicts: Mapping[str, SignalJudgement | SignalVerdict], what: str, fmt: _Format
) -> str | None:
    """The words for the one pod that failed while every other one (at least one) passed."""

    def verdict(pod: str) -> SignalVerdict:
        found = verdicts[pod]
        return found if isinstance(found, SignalVerdict) else found.verdict

    failed = [p for p in verdicts if verdict(p) is SignalVerdict.FAIL]
    passed = [p for p in verdicts if verdict(p) is SignalVerdict.PASS]
    if len(failed) != 1 or not passed or len(failed) + len(passed) != len(verdicts):
        return None
    pod = failed[0]
    j = verdicts[pod]
    assert isinstance(j, SignalJudgement)
    assert j.canary_median is not None and j.stable_median is not None and j.p_value is not None
    others = len(passed)
    return (
        f"pod {pod} alone is worse ({what}{fmt(j.canary_median)} vs stable"
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


# --- pooled counts -------------------------------------------------------------------------


def counter_increases(values: Sequence[float]) -> list[float]:
    """How much a counter grew from each of its values to the next, oldest first.

    The values are a counter's as Prometheus stores them, one per step (a range query of the
    counter itself, no ``rate()``): consecutive windows then share their boundary value, so
    every increment falls in exactly one window and none is extrapolated. A value below the
    one before is a restart, which counts from 0 again; non-finite values are left out.

    A counter without a value at the window's start (a leading NaN) was born in the window:
    a pod that started, or a labelled series that counts its first event (a pod's first
    5xx), and counters start at 0, so its first value is an increase too. Without that, a
    canary's first window lost every request its new pods served before their second
    scrape, and every pod lost the first errors of each error series.

    >>> counter_increases([10, 12, 12, 15, 2, 4])
    [2.0, 0.0, 3.0, 2.0, 2.0]
    >>> counter_increases([float("nan"), 5, 7])   # born in the window: 0, then 5, then 7
    [5.0, 2.0]
    >>> counter_increases([3, float("nan"), 7])   # a gap in the middle is only a gap
    [4.0]
    """
    finite = _finite(values)
    if finite and values and not math.isfinite(values[0]):
        finite = [0.0, *finite]
    return [b - a if b >= a else b for a, b in zip(finite, finite[1:], strict=False)]


def step_means(sums: Sequence[float], counts: Sequence[float]) -> list[float]:
    """The mean observation of each step (latency, say) from a histogram's ``_sum`` and
    ``_count`` counters read at the same instants; a step without observations has none.

    >>> step_means([1.0, 1.5, 1.5, 2.7], [10, 20, 20, 30])
    [0.05, 0.12]
    """
    grown = zip(counter_increases(sums), counter_increases(counts), strict=False)
    return [round(s / n, 12) for s, n in grown if n > 0]


@dataclass(frozen=True)
class Counts:
    """How many of a track's requests (``total``) were events (errors) over a window."""

    events: int
    total: int

    @property
    def ratio(self) -> float | None:
        return self.events / self.total if self.total > 0 else None

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.events + other.events, self.total + other.total)


def counts_from_counters(events: Sequence[float], total: Sequence[float]) -> Counts:
    """The window's counts from the values of an events counter and a total counter (see
    :func:`counter_increases`); events beyond the total (counters scraped a request apart)
    are capped at it.

    >>> counts_from_counters([0, 1, 1, 3], [100, 130, 160, 190])
    Counts(events=3, total=90)
    """
    n = round(sum(counter_increases(total)))
    return Counts(min(round(sum(counter_increases(events))), n), n)


def proportion_p_value(canary: Counts, stable: Counts, direction: Direction) -> float:
    """Fisher's exact test (``scipy.stats.fisher_exact``) of the canary's event ratio
    against the stable's, in the direction that is worse: the chance, were both tracks
    alike, of a split of the events at least as bad for the canary as the one seen.

    >>> round(proportion_p_value(Counts(5, 240), Counts(0, 240), Direction.INCREASE), 4)
    0.0306
    >>> proportion_p_value(Counts(0, 240), Counts(5, 240), Direction.INCREASE)
    1.0
    """
    table = [
        [canary.events, canary.total - canary.events],
        [stable.events, stable.total - stable.events],
    ]
    from scipy.stats import fisher_exact  # on first use, as mannwhitneyu above

    p = float(fisher_exact(table, alternative=_ALTERNATIVE[direction]).pvalue)
    return 1.0 if math.isnan(p) else min(p, 1.0)


def _counts_text(c: Counts, fmt: _Format) -> str:
    ratio = c.ratio
    shown = fmt(ratio) if ratio is not None else "n/a"
    return f"{shown} ({c.events} of {c.total})"


def _proportions(
    signal: str,
    canary: Counts,
    stable: Counts,
    criteria: Criteria,
    label: str,
    fmt: _Format,
    minimum: int,
) -> SignalJudgement:
    test = f"{PROPORTION_TEST_NAME} {_SIDED[criteria.direction]}"
    n = f"n={canary.total}/{stable.total} requests"
    rc, rs = canary.ratio, stable.ratio
    effect = rc - rs if rc is not None and rs is not None else None
    relative = effect / rs if effect is not None and rs else None

    def judgement(verdict: SignalVerdict, explanation: str, p: float | None) -> SignalJudgement:
        return SignalJudgement(
            signal, label, test, canary.total, stable.total, rc, rs, float(canary.events), p,
            effect, relative, verdict, explanation,
        )  # fmt: skip

    if canary.total < minimum or stable.total < minimum:
        return judgement(
            SignalVerdict.INCONCLUSIVE,
            f"{label}: too few requests (canary {canary.total}, stable {stable.total};"
            f" at least {minimum} each): inconclusive",
            None,
        )
    assert rc is not None and rs is not None and effect is not None
    p = proportion_p_value(canary, stable, criteria.direction)
    ratios = (
        f"{_counts_text(canary, fmt)} vs stable {_counts_text(stable, fmt)}"
        f" ({_effect_text(effect, relative, fmt)})"
    )
    evidence = f"{test}, p={_p_text(p)}"
    if p >= criteria.alpha:
        return judgement(
            SignalVerdict.PASS,
            f"{label} not shown worse: {ratios}, {evidence} >= {criteria.alpha:.2g}, {n}",
            p,
        )
    allowed = max(criteria.tolerance * rs, criteria.floor)
    if _worsening(rc, rs, criteria.direction) <= allowed:
        return judgement(
            SignalVerdict.PASS,
            f"{label} within tolerance: {ratios}, at most {fmt(allowed)} allowed"
            f" ({criteria.tolerance:.0%}, floor {fmt(criteria.floor)}), {evidence}, {n}",
            p,
        )
    return judgement(
        SignalVerdict.FAIL, f"{label} worse: {ratios}, {evidence} < {criteria.alpha:.2g}, {n}", p
    )


def compare_proportions(
    signal: str,
    canary_by_pod: Mapping[str, Counts],
    stable: Counts,
    criteria: Criteria,
    label: str | None = None,
    fmt: _Format = _default_format,
) -> SignalJudgement:
    """The verdict on a ratio of events (errors among requests) from pooled counts: all the
    canary pods' events and requests over the window against the stable's, by Fisher's exact
    test (:func:`proportion_p_value`). It fails the canary when ``p < 1 - confidence`` *and*
    the canary's ratio is worse than the stable's by more than ``tolerance`` of the stable's
    ratio and more than ``floor``. Fewer than ``min_samples`` requests on either side is
    Inconclusive.

    Each canary pod with at least :data:`OUTLIER_MIN_REQUESTS` requests is also compared on
    its own with the stable's pooled counts; when exactly one fails while the others pass,
    the explanation names it. The verdict is the pooled one.

    >>> c = Criteria(Direction.INCREASE, confidence=0.995, floor=0.001)
    >>> pods = {"web-1": Counts(16, 80), "web-2": Counts(0, 80), "web-3": Counts(0, 80)}
    >>> j = compare_proportions("errors", pods, Counts(0, 240), c)
    >>> j.verdict.value, j.canary_median, j.n_canary
    ('Fail', 0.06666666666666667, 240)
    >>> pooled, outlier = j.explanation.split("; ", 1)
    >>> pooled
    "errors worse: 0.06667 (16 of 240) vs stable 0 (0 of 240) (+0.06667 absolute), \
Fisher's exact one-sided (higher is worse), p=1.2e-05 < 0.005, n=240/240 requests"
    >>> outlier
    'pod web-1 alone is worse (0.2 vs stable 0, p=6.8e-11); the other 2 canary pods are not: \
suspect the pod or its node, not only the version'
    >>> compare_proportions("errors", {"a": Counts(3, 240)}, Counts(2, 240), c).verdict.value
    'Pass'
    """
    label = label or signal
    pooled = sum(canary_by_pod.values(), Counts(0, 0))
    judgement = _proportions(
        signal, pooled, stable, criteria, label, fmt, max(criteria.min_samples, 1)
    )
    if judgement.verdict is SignalVerdict.INCONCLUSIVE or len(canary_by_pod) < 2:
        return judgement
    verdicts: dict[str, SignalJudgement | SignalVerdict] = {
        pod: _proportions(signal, counts, stable, criteria, label, fmt, OUTLIER_MIN_REQUESTS)
        for pod, counts in sorted(canary_by_pod.items())
    }
    outlier = _outlier(verdicts, "", fmt)
    if outlier is None:
        return judgement
    return replace(judgement, explanation=f"{judgement.explanation}; {outlier}")


def score(
    judgements: Sequence[SignalJudgement],
    weights: Mapping[str, float] | None = None,
    pass_score: float = DEFAULT_PASS_SCORE,
    marginal_score: float = DEFAULT_MARGINAL_SCORE,
    critical: Collection[str] | None = (),
) -> Scorecard:
    """All signals' verdict, Kayenta-style: the weighted share of the conclusive signals that
    passed, 0 to 100. A signal's weight is 1 unless `weights` says otherwise; weight 0 is
    reported but not scored, as is a signal neither track exports (``scored`` False).
    Inconclusive signals are left out of the score, so they can
    neither pass nor fail the canary, but while any is left out the verdict is at best
    Marginal. No conclusive signal at all is Inconclusive.

    A *critical* signal (Kayenta's critical metrics) that fails fails the whole verdict,
    whatever the score: with four golden signals of equal weight one failure scores 75, which
    is only marginal. ``critical`` names them; None makes every scored signal critical.

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
    >>> four = [j("errors", "Fail"), j("latency", "Pass"), j("traffic", "Pass"),
    ...         j("saturation", "Pass")]
    >>> score(four).explanation
    'score 75 < 95: marginal (errors failed)'
    >>> score(four, critical=None).explanation
    'score 75, but errors failed, a critical signal: fail'
    """
    weights = weights or {}

    def weight(j: SignalJudgement) -> float:
        return float(weights.get(j.signal, 1.0)) if j.scored else 0.0

    failed_critical = [
        j.signal
        for j in judgements
        if weight(j) > 0
        and j.verdict is SignalVerdict.FAIL
        and (critical is None or j.signal in critical)
    ]

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
    if failed_critical and value >= marginal_score:
        names = ", ".join(failed_critical)
        kind = "a critical signal" if len(failed_critical) == 1 else "critical signals"
        explanation = f"score {shown}, but {names} failed, {kind}: fail"
        return Scorecard(value, ScoreVerdict.FAIL, explanation)
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
