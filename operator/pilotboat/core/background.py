"""Background analysis: the canary judged every interval from a step until promotion. Pure.

Like Argo Rollouts' background AnalysisRun (``strategy.canary.analysis`` with a
``startingStep``): besides the analysis steps, which judge the canary at one point of the
release, ``strategy.backgroundAnalysis`` measures it with the strategy's template every
``analysis.interval`` from ``startingStep`` until promotion, so that a canary that starts
failing during a pause (``untilPromoted`` included) or after a setWeight is rolled back
within about one interval.

- :func:`background_measured_at` says which steps are measured: from ``startingStep`` on,
  except analysis steps (their own measurements judge the canary there) and after the last
  step (promoting).
- :func:`background_due_in` says when the next measurement is due: one interval after the
  later of the step's start and the last background measurement. A window of one interval
  ending then never reaches back into the step before, so a measurement never judges the
  weight the canary had before a setWeight.
- :func:`assess_background` turns the measurements of the release so far into the outcome
  the release machine acts on: ``Failed`` once failed measurements exceed ``failureLimit``
  (the release is rolled back, ``BackgroundAnalysisFailed``); ``Running`` otherwise.
  Inconclusive and error measurements never stop the release: they are reported (status,
  Events) and the explicit analysis steps stay the gates that need passes.
- :func:`kept_records` bounds ``status.backgroundAnalysis.measurements``: the last
  ``KEPT_RECORDS`` and every failed one (which :func:`assess_background` counts).

Records are ``status.backgroundAnalysis.measurements`` entries: ``{at, step, verdict, summary}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pilotboat.api import AnalysisTemplate, CanaryStep
from pilotboat.core.rollout import AnalysisOutcome, step_kind

__all__ = [
    "KEPT_RECORDS",
    "assess_background",
    "background_due_in",
    "background_measured_at",
    "kept_records",
]

KEPT_RECORDS = 20


def background_measured_at(
    steps: Sequence[CanaryStep], step_index: int | None, starting_step: int
) -> bool:
    """Whether background analysis measures at `step_index` of a release in progress.

    >>> from pilotboat.api import CanaryStep
    >>> steps = [CanaryStep.model_validate(s) for s in (
    ...     {"setWeight": 20}, {"pause": {"untilPromoted": True}}, {"analysis": {}}, {"pause":
    ...     {"duration": "1m"}})]
    >>> [background_measured_at(steps, i, 0) for i in (None, 0, 1, 2, 3, 4)]
    [False, True, True, False, True, False]
    >>> [background_measured_at(steps, i, 1) for i in (0, 1)]
    [False, True]
    """
    if step_index is None or not starting_step <= step_index < len(steps):
        return False
    return step_kind(steps[step_index]) != "analysis"


def background_due_in(
    now: float, interval: float, step_started_at: float | None, last_measured_at: float | None
) -> float:
    """Seconds until the next background measurement is due (0 or less: due now). Its window
    is the interval before it, which starts no earlier than the step or the last measurement.

    >>> background_due_in(100.0, 10.0, 95.0, None)  # the step started 5s ago
    5.0
    >>> background_due_in(100.0, 10.0, 80.0, 85.0)  # measured 15s ago, in this step
    -5.0
    >>> background_due_in(100.0, 10.0, 98.0, 95.0)  # a measurement before the step changed
    8.0
    >>> background_due_in(100.0, 10.0, None, None)  # no step start known: wait one interval
    10.0
    """
    starts = [t for t in (step_started_at, last_measured_at) if t is not None]
    start = max(starts) if starts else now
    return interval - (now - start)


def _counts(records: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    counts = {"Successful": 0, "Failed": 0, "Inconclusive": 0, "Error": 0}
    for record in records:
        verdict = str(record.get("verdict"))
        counts[verdict] = counts.get(verdict, 0) + 1
    return counts


def _step_label(record: Mapping[str, Any], steps: int) -> str:
    return f"step {int(record.get('step', 0)) + 1}/{steps}"


def assess_background(
    template: AnalysisTemplate, records: Sequence[Mapping[str, Any]], steps: int
) -> AnalysisOutcome:
    """Where the background analysis of a release stands, from its records (oldest first).

    >>> from pilotboat.api import AnalysisTemplate
    >>> def rec(step, verdict, summary="s"):
    ...     return {"at": "t", "step": step, "verdict": verdict, "summary": summary}
    >>> assess_background(AnalysisTemplate(), [], 3)
    AnalysisOutcome(result='Running', summary='background analysis: no measurement yet')
    >>> print(assess_background(AnalysisTemplate(), [rec(0, "Successful"),
    ...     rec(1, "Inconclusive", "12 requests")], 3).summary)
    background analysis: 1 passed, 1 inconclusive of 2 checks; last, at step 2/3: 12 requests
    >>> failed = assess_background(AnalysisTemplate(), [rec(0, "Successful"), rec(1, "Failed",
    ...     "error ratio 40.0% > 5.0%")], 3)
    >>> failed.result
    'Failed'
    >>> print(failed.summary)
    background analysis at step 2/3: error ratio 40.0% > 5.0%, 1 of 2 checks failed
    >>> t = AnalysisTemplate(failure_limit=1)
    >>> assess_background(t, [rec(1, "Failed"), rec(1, "Successful")], 3).result
    'Running'
    >>> assess_background(t, [rec(1, "Failed"), rec(1, "Successful"), rec(1, "Failed")], 3).result
    'Failed'
    """
    if not records:
        return AnalysisOutcome("Running", "background analysis: no measurement yet")
    counts = _counts(records)
    last = records[-1]
    if counts["Failed"] > template.failure_limit:
        return AnalysisOutcome(
            "Failed",
            f"background analysis at {_step_label(last, steps)}: {last.get('summary', '')}, "
            f"{counts['Failed']} of {len(records)} checks failed",
        )
    words = {
        "Successful": "passed",
        "Failed": "failed",
        "Inconclusive": "inconclusive",
        "Error": "could not be taken",
    }
    parts = ", ".join(f"{n} {words[v]}" for v, n in counts.items() if n and v in words)
    summary = f"background analysis: {parts} of {len(records)} checks"
    if last.get("verdict") != "Successful":
        summary += f"; last, at {_step_label(last, steps)}: {last.get('summary', '')}"
    return AnalysisOutcome("Running", summary)


def kept_records(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The records status keeps: the last `KEPT_RECORDS`, and every failed one before them.

    >>> rs = [{"verdict": "Failed" if i == 0 else "Successful", "i": i} for i in range(25)]
    >>> [r["i"] for r in kept_records(rs)][:3], len(kept_records(rs))
    ([0, 5, 6], 21)
    """
    cut = max(len(records) - KEPT_RECORDS, 0)
    return [
        dict(r) for i, r in enumerate(records) if i >= cut or r.get("verdict") == "Failed"
    ]
