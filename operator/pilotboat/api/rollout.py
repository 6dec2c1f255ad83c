"""Canary releases: steps, analysis templates, traffic routing and reusable rollout policies."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, model_validator

from pilotboat.api.common import (
    Duration,
    ObjectName,
    SpecModel,
    StatusBase,
    cel_rule,
    cel_validations,
    parse_duration,
)
from pilotboat.api.kind import KindDescriptor, PrinterColumn

__all__ = [
    "STEP_KINDS",
    "MAX_STEPS",
    "PauseStep",
    "AnalysisStep",
    "SetFlagStep",
    "MirrorStep",
    "CanaryStep",
    "PrometheusSource",
    "ErrorsSignal",
    "LatencySignal",
    "TrafficSignal",
    "SaturationSignal",
    "GoldenSignals",
    "JudgeMethod",
    "SignalDirection",
    "SignalWeights",
    "SignalDirections",
    "AnalysisJudge",
    "MAX_JUDGE_SAMPLES",
    "AnalysisTemplate",
    "BackgroundAnalysis",
    "ReplicaRatioRouting",
    "GatewayAPIRouting",
    "TrafficRouting",
    "CanaryStrategy",
    "RolloutPolicySpec",
    "RolloutPolicyStatus",
    "ROLLOUT_POLICY",
]

STEP_KINDS = ("setWeight", "pause", "analysis", "setFlag", "mirror")
"""The fields of a :class:`CanaryStep`, exactly one of which is set."""

MAX_STEPS = 50
MAX_FLAG_VARIANTS = 64
MAX_JUDGE_SAMPLES = 1000
"""The most samples one series may give the judge in one measurement (window / step)."""

Percent = Annotated[int, Field(ge=0, le=100)]

_STEPS_NEVER_DECREASE = cel_rule(
    "self.steps.filter(s, has(s.setWeight)).map(s, s.setWeight).isSorted()",
    "steps: setWeight values never decrease from one step to the next",
    ".steps",
)


def _check_weights_never_decrease(steps: list[CanaryStep]) -> None:
    weights = [s.set_weight for s in steps if s.set_weight is not None]
    for index, (before, after) in enumerate(zip(weights, weights[1:], strict=False)):
        if after < before:
            raise ValueError(
                f"steps: setWeight values never decrease, but setWeight {after} follows "
                f"{before} (setWeight number {index + 2})"
            )


class PauseStep(SpecModel):
    """Wait: for a fixed duration, or until someone promotes the rollout."""

    model_config = ConfigDict(
        json_schema_extra=cel_validations(
            cel_rule(
                "has(self.duration) != (has(self.untilPromoted) && self.untilPromoted)",
                "pause has a duration or waits for promotion (untilPromoted: true), not both",
            )
        )
    )

    duration: Duration | None = Field(
        default=None, description="How long to wait before the next step, e.g. 5m."
    )
    until_promoted: bool | None = Field(
        default=None,
        description="Wait until the rollout is promoted (kubectl pilotboat promote).",
    )

    @model_validator(mode="after")
    def _duration_or_promotion(self) -> PauseStep:
        if (self.duration is not None) == bool(self.until_promoted):
            raise ValueError(
                "pause has a duration or waits for promotion (untilPromoted: true), not both"
            )
        return self


class AnalysisStep(SpecModel):
    """Judge the canary's golden signals for a number of intervals before going on."""

    intervals: int = Field(
        default=3, ge=1, le=1000, description="How many analysis intervals must pass."
    )
    interval: Duration | None = Field(
        default=None,
        description="Length of one interval; overrides the analysis template's interval.",
    )


class SetFlagStep(SpecModel):
    """Move a FeatureFlag's percentage rollout: the share of traffic each variant gets."""

    model_config = ConfigDict(
        json_schema_extra=cel_validations(
            cel_rule(
                "self.variants.map(k, self.variants[k]).sum() == 100",
                "setFlag.variants: the percentages must sum to 100",
                ".variants",
            )
        )
    )

    flag: ObjectName = Field(description="Name of the FeatureFlag in this namespace.")
    variants: dict[str, Percent] = Field(
        min_length=1,
        max_length=MAX_FLAG_VARIANTS,
        description="Percent of evaluations per variant name; the percentages sum to 100.",
    )

    @model_validator(mode="after")
    def _sums_to_100(self) -> SetFlagStep:
        total = sum(self.variants.values())
        if total != 100:
            raise ValueError(f"setFlag.variants: the percentages must sum to 100, not {total}")
        return self


class MirrorStep(SpecModel):
    """Copy a share of the stable traffic to the canary, discarding the canary's answers."""

    percent: Percent = Field(description="Percent of requests mirrored to the canary, 0 to 100.")


class CanaryStep(SpecModel):
    """One step of a canary release. Exactly one of its fields is set."""

    model_config = ConfigDict(
        json_schema_extra=cel_validations(
            cel_rule(
                "[has(self.setWeight), has(self.pause), has(self.analysis), has(self.setFlag),"
                " has(self.mirror)].filter(x, x).size() == 1",
                "a step sets exactly one of setWeight, pause, analysis, setFlag, mirror",
            )
        )
    )

    set_weight: Percent | None = Field(
        default=None, description="Send this percent of the traffic to the canary, 0 to 100."
    )
    pause: PauseStep | None = Field(
        default=None, description="Wait for a duration or until the rollout is promoted."
    )
    analysis: AnalysisStep | None = Field(
        default=None, description="Judge the golden signals for some intervals."
    )
    set_flag: SetFlagStep | None = Field(
        default=None, description="Change a FeatureFlag's percentage rollout."
    )
    mirror: MirrorStep | None = Field(
        default=None, description="Mirror a share of the traffic to the canary."
    )

    @model_validator(mode="after")
    def _exactly_one_kind(self) -> CanaryStep:
        present = [
            name
            for name, value in zip(
                STEP_KINDS,
                (self.set_weight, self.pause, self.analysis, self.set_flag, self.mirror),
                strict=True,
            )
            if value is not None
        ]
        if len(present) != 1:
            found = ", ".join(present) or "none"
            raise ValueError(
                "a step sets exactly one of setWeight, pause, analysis, setFlag, mirror"
                f" (found: {found})"
            )
        return self

    @property
    def kind(self) -> str:
        """Which of :data:`STEP_KINDS` this step is."""
        values = (self.set_weight, self.pause, self.analysis, self.set_flag, self.mirror)
        return next(name for name, v in zip(STEP_KINDS, values, strict=True) if v is not None)


class PrometheusSource(SpecModel):
    """Where the golden signals are read from."""

    address: str | None = Field(
        default=None,
        max_length=2048,
        description="Base URL of the Prometheus HTTP API; the operator's default when unset.",
    )


_QUERY = (
    "PromQL for {}, a template rendered once per track with {{{{ service }}}},"
    " {{{{ namespace }}}}, {{{{ version }}}}, {{{{ revision }}}} (the track's pod-template"
    " revision: its pods' pilotboat.dev/revision label, which Prometheus relabels to"
    " `revision`){} and {{{{ interval }}}}. The operator's default query, which selects each"
    " track by `revision`, when unset."
)


class ErrorsSignal(SpecModel):
    """Thresholds on the canary's error ratio."""

    max_ratio: float | None = Field(
        default=None, ge=0, le=1, description="Highest acceptable share of failed requests, 0 to 1."
    )
    max_increase_over_stable: float | None = Field(
        default=None,
        ge=0,
        description="Highest acceptable error ratio above the stable version's, e.g. 0.01.",
    )
    query: str | None = Field(
        default=None,
        description=_QUERY.format("the error ratio", ""),
    )


class LatencySignal(SpecModel):
    """Thresholds on the canary's latency."""

    quantile: float = Field(
        default=0.99, gt=0, lt=1, description="Which latency quantile is judged, e.g. 0.99."
    )
    max_seconds: float | None = Field(
        default=None, gt=0, description="Highest acceptable latency at that quantile, in seconds."
    )
    max_ratio_to_stable: float | None = Field(
        default=None,
        gt=0,
        description="Highest acceptable canary latency as a multiple of the stable's, e.g. 1.2.",
    )
    query: str | None = Field(
        default=None, description=_QUERY.format("the latency", ", {{ quantile }}")
    )


class TrafficSignal(SpecModel):
    """Thresholds on the canary's request rate."""

    min_rate: float | None = Field(
        default=None, ge=0, description="Lowest acceptable request rate, in requests per second."
    )
    query: str | None = Field(
        default=None, description=_QUERY.format("the request rate", "")
    )


class SaturationSignal(SpecModel):
    """Thresholds on how full the canary is."""

    max: float | None = Field(
        default=None, ge=0, description="Highest acceptable saturation, e.g. 0.8 of CPU limit."
    )
    query: str | None = Field(
        default=None, description=_QUERY.format("saturation", "")
    )


class GoldenSignals(SpecModel):
    """The four golden signals and their thresholds. A signal without thresholds is judged only
    by the statistical judge (judge.method mannWhitney)."""

    errors: ErrorsSignal | None = Field(default=None, description="Error ratio thresholds.")
    latency: LatencySignal | None = Field(default=None, description="Latency thresholds.")
    traffic: TrafficSignal | None = Field(default=None, description="Request rate thresholds.")
    saturation: SaturationSignal | None = Field(default=None, description="Saturation thresholds.")


JudgeMethod = Literal["threshold", "mannWhitney"]
SignalName = Literal["errors", "latency", "traffic", "saturation"]
SignalDirection = Literal["increase", "decrease", "either"]

_WEIGHT = "Weight of {} in the score; 1 when unset, 0 to report it without scoring it."
_DIRECTION = "Which way {} may not move: increase, decrease or either; {} when unset."


class SignalWeights(SpecModel):
    """How much each signal counts in the judge's score."""

    errors: float | None = Field(default=None, ge=0, le=1000, description=_WEIGHT.format("errors"))
    latency: float | None = Field(
        default=None, ge=0, le=1000, description=_WEIGHT.format("latency")
    )
    traffic: float | None = Field(
        default=None, ge=0, le=1000, description=_WEIGHT.format("traffic")
    )
    saturation: float | None = Field(
        default=None, ge=0, le=1000, description=_WEIGHT.format("saturation")
    )


class SignalDirections(SpecModel):
    """Which change of each signal is worse; either makes the test two-sided."""

    errors: SignalDirection | None = Field(
        default=None, description=_DIRECTION.format("errors", "increase")
    )
    latency: SignalDirection | None = Field(
        default=None, description=_DIRECTION.format("latency", "increase")
    )
    traffic: SignalDirection | None = Field(
        default=None, description=_DIRECTION.format("traffic", "decrease")
    )
    saturation: SignalDirection | None = Field(
        default=None, description=_DIRECTION.format("saturation", "increase")
    )


class AnalysisJudge(SpecModel):
    """How a measurement is judged. threshold: each signal's value over the window against
    its thresholds. mannWhitney: besides the thresholds, which stay hard limits, the canary's
    per-pod samples against the stable's with a Mann-Whitney U test, scored Kayenta-style."""

    model_config = ConfigDict(
        json_schema_extra=cel_validations(
            cel_rule(
                "self.marginalScore <= self.passScore",
                "judge.marginalScore must not be above judge.passScore",
                ".marginalScore",
            )
        )
    )

    method: JudgeMethod = Field(
        default="threshold",
        description="threshold (thresholds only) or mannWhitney (statistical tests as well:"
        " Fisher's exact test on pooled error counts, Mann-Whitney U on per-pod mean latency"
        " and the other signals' per-step samples).",
    )
    confidence: float = Field(
        default=0.99,
        ge=0.5,
        lt=1,
        description="How sure a window's verdict must be that the canary is worse, all signals"
        " together: each of the n scored signals (weight above 0) fails only at p <"
        " (1 - confidence) / n (Bonferroni), so a healthy canary fails a window at most"
        " 1 - confidence of the time.",
    )
    tolerance: float = Field(
        default=0.1,
        ge=0,
        le=100,
        description="How much worse the canary may be, relative to the stable (its pooled"
        " error ratio; the median of its other samples), before a significant difference"
        " fails it; 0.1 is 10%.",
    )
    min_samples: int = Field(
        default=10,
        ge=2,
        le=MAX_JUDGE_SAMPLES,
        description="Below this a signal is inconclusive: requests per track for errors,"
        " samples per track for the other signals.",
    )
    step: Duration = Field(
        default="10s",
        description="Length of one sample: each pod gives one value per step. At least twice"
        " the scrape interval.",
    )
    window: Duration | None = Field(
        default=None,
        description="How far back samples are drawn from; the analysis interval when unset.",
    )
    weights: SignalWeights | None = Field(
        default=None, description="Weights of the signals in the score; 1 each when unset."
    )
    directions: SignalDirections | None = Field(
        default=None, description="Which change of each signal is worse."
    )
    critical: list[SignalName] | None = Field(
        default=None,
        max_length=4,
        description="Signals whose failed test fails the window whatever the score (Kayenta's"
        " critical metrics); every signal of weight above 0 when unset, none when empty (the"
        " score alone decides: with four signals of equal weight one failure scores 75,"
        " which is marginal).",
    )
    pass_score: float = Field(
        default=95.0,
        ge=0,
        le=100,
        description="Score (0 to 100) at or above which a check passes.",
    )
    marginal_score: float = Field(
        default=75.0,
        ge=0,
        le=100,
        description="Score below which a check fails; between the two it is inconclusive.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> AnalysisJudge:
        if self.marginal_score > self.pass_score:
            raise ValueError(
                f"judge.marginalScore ({self.marginal_score:g}) must not be above"
                f" judge.passScore ({self.pass_score:g})"
            )
        step = parse_duration(self.step)
        if step <= 0:
            raise ValueError("judge.step must be longer than 0s")
        if self.window is not None:
            window = parse_duration(self.window)
            if window < step:
                raise ValueError(
                    f"judge.window ({self.window}) must not be shorter than judge.step"
                    f" ({self.step})"
                )
            if window / step > MAX_JUDGE_SAMPLES:
                raise ValueError(
                    f"judge.window / judge.step gives {window / step:.0f} samples per series,"
                    f" more than {MAX_JUDGE_SAMPLES}"
                )
        return self


class AnalysisTemplate(SpecModel):
    """How the canary is judged: the signals, their thresholds, and how many bad results end it."""

    interval: Duration = Field(default="30s", description="Time between two measurements.")
    failure_limit: int = Field(
        default=0,
        ge=0,
        description="Failed measurements tolerated before the rollout is rolled back: per"
        " analysis step, and over the whole background analysis of a release.",
    )
    inconclusive_limit: int = Field(
        default=2,
        ge=0,
        description="Inconclusive measurements tolerated before an analysis step pauses the"
        " rollout for a human. Background analysis never pauses for them: it reports them"
        " and keeps measuring.",
    )
    consecutive_error_limit: int = Field(
        default=3,
        ge=0,
        description="Measurements in a row that could not be taken (no Prometheus answer, no"
        " data) tolerated before an analysis step pauses the rollout; it resumes by itself"
        " once a measurement is taken again. Background analysis never pauses or rolls back"
        " for them: it reports them and keeps measuring.",
    )
    min_sample_size: int = Field(
        default=20,
        ge=0,
        description="Canary requests per interval below which a measurement is inconclusive.",
    )
    prometheus: PrometheusSource | None = Field(
        default=None, description="Where to read the signals; the operator's default when unset."
    )
    signals: GoldenSignals | None = Field(
        default=None, description="The golden signals to judge and their thresholds."
    )
    judge: AnalysisJudge | None = Field(
        default=None,
        description="How measurements are judged; thresholds only (method threshold) when unset.",
    )

    @property
    def statistical(self) -> bool:
        """Judged by the statistical judge (``judge.method: mannWhitney``), not thresholds only."""
        return self.judge is not None and self.judge.method == "mannWhitney"


SurgePercent = Annotated[str, Field(pattern=r"^(100|[1-9]?[0-9])%$", max_length=4)]
SurgeCount = Annotated[int, Field(strict=True, ge=0, le=1000)]


class ReplicaRatioRouting(SpecModel):
    """Split traffic by the ratio of canary to stable ready replicas behind one Service."""

    model_config = ConfigDict(
        json_schema_extra=cel_validations(
            cel_rule(
                "!has(self.maxSurge) || (type(self.maxSurge) == int ? self.maxSurge >= 0 &&"
                " self.maxSurge <= 1000 : self.maxSurge.matches('^(100|[1-9]?[0-9])%$'))",
                "maxSurge is a count of pods from 0 to 1000 or a percent of spec.replicas"
                " from 0% to 100%",
                ".maxSurge",
            )
        )
    )

    max_surge: SurgeCount | SurgePercent | None = Field(
        default=None,
        description="Extra canary pods allowed above spec.replicas, a count or a percent of"
        " spec.replicas (rounded up), so that a weight the replica count cannot give is met"
        " as nearly as those pods allow (setWeight 10 of 2 replicas: 2 stable + 1 canary, 33%,"
        " instead of 1 + 1, 50%). Unset: no extra pods beyond the one a high weight needs."
        " status.actualWeight always says the share the pods give.",
    )


class GatewayAPIRouting(SpecModel):
    """Split traffic with the weights of a Gateway API HTTPRoute's backends."""

    http_route: ObjectName = Field(description="Name of the HTTPRoute in this namespace.")
    port: int = Field(ge=1, le=65535, description="Service port the route's backends use.")


class TrafficRouting(SpecModel):
    """How canary traffic is split. Exactly one of its fields is set."""

    model_config = ConfigDict(
        json_schema_extra=cel_validations(
            cel_rule(
                "has(self.replicaRatio) != has(self.gatewayAPI)",
                "trafficRouting sets exactly one of replicaRatio, gatewayAPI",
            )
        )
    )

    replica_ratio: ReplicaRatioRouting | None = Field(
        default=None, description="Split by replica counts behind the service (no mesh needed)."
    )
    gateway_api: GatewayAPIRouting | None = Field(
        default=None, alias="gatewayAPI", description="Split with a Gateway API HTTPRoute."
    )

    @model_validator(mode="after")
    def _exactly_one_router(self) -> TrafficRouting:
        if (self.replica_ratio is None) == (self.gateway_api is None):
            raise ValueError("trafficRouting sets exactly one of replicaRatio, gatewayAPI")
        return self


_DEFAULT_ROUTING = TrafficRouting(replica_ratio=ReplicaRatioRouting())


class BackgroundAnalysis(SpecModel):
    """Judge the canary every interval from a step until promotion, besides the steps.

    Like Argo Rollouts' ``strategy.canary.analysis``: with the strategy's analysis template
    (the default signals when it has none), one measurement per ``analysis.interval`` while
    the release is at ``startingStep`` or later, except during an analysis step (which
    measures itself). A window never reaches back past the start of the step it judges.
    Failed measurements beyond ``failureLimit`` over the release roll it back
    (BackgroundAnalysisFailed); inconclusive and error measurements are reported and the
    release goes on."""

    starting_step: int = Field(
        default=0,
        ge=0,
        lt=MAX_STEPS,
        description="Index (from 0) of the step background analysis starts at; 0 when unset."
        " It must name one of the steps.",
    )


_BACKGROUND_DESCRIPTION = (
    "Judge the canary with the analysis template every interval from startingStep until"
    " promotion, at every step but analysis steps (they measure themselves); a window never"
    " reaches back past its step's start. Failed measurements over the release beyond"
    " failureLimit roll it back (BackgroundAnalysisFailed); inconclusive and error"
    " measurements are reported in status.backgroundAnalysis and Events, and the release"
    " goes on. Off when unset."
)
_BACKGROUND_STEP_RULE = cel_rule(
    "!has(self.backgroundAnalysis) || !has(self.backgroundAnalysis.startingStep)"
    " || self.backgroundAnalysis.startingStep < size(self.steps)",
    "backgroundAnalysis.startingStep must name one of the steps (from 0)",
    ".backgroundAnalysis.startingStep",
)


def _check_starting_step(background: BackgroundAnalysis | None, steps: list[CanaryStep]) -> None:
    if background is not None and background.starting_step >= len(steps):
        raise ValueError(
            f"backgroundAnalysis.startingStep ({background.starting_step}) must name one of"
            f" the {len(steps)} steps (from 0)"
        )

_STEPS_DESCRIPTION = (
    "The steps of the release, in order. setWeight values never decrease;"
    " after the last step the canary is promoted."
)


class CanaryStrategy(SpecModel):
    """A canary release: its steps, how the canary is judged, and how traffic is split."""

    model_config = ConfigDict(
        json_schema_extra=cel_validations(_STEPS_NEVER_DECREASE, _BACKGROUND_STEP_RULE)
    )

    steps: list[CanaryStep] = Field(
        min_length=1, max_length=MAX_STEPS, description=_STEPS_DESCRIPTION
    )
    analysis: AnalysisTemplate | None = Field(
        default=None,
        description="How analysis steps, and background analysis when backgroundAnalysis is"
        " set, judge the canary; the default signals when unset.",
    )
    background_analysis: BackgroundAnalysis | None = Field(
        default=None, description=_BACKGROUND_DESCRIPTION
    )
    traffic_routing: TrafficRouting = Field(
        default=_DEFAULT_ROUTING,
        description="How traffic is split between stable and canary; replicaRatio by default.",
    )

    @model_validator(mode="after")
    def _weights_never_decrease(self) -> CanaryStrategy:
        _check_weights_never_decrease(self.steps)
        _check_starting_step(self.background_analysis, self.steps)
        return self


class RolloutPolicySpec(SpecModel):
    """Canary steps and thresholds that many Microservices share by name."""

    model_config = ConfigDict(
        json_schema_extra=cel_validations(_STEPS_NEVER_DECREASE, _BACKGROUND_STEP_RULE)
    )

    steps: list[CanaryStep] = Field(
        min_length=1, max_length=MAX_STEPS, description=_STEPS_DESCRIPTION
    )
    analysis: AnalysisTemplate | None = Field(
        default=None,
        description="How analysis steps, and background analysis when backgroundAnalysis is"
        " set, judge the canary; the default signals when unset.",
    )
    background_analysis: BackgroundAnalysis | None = Field(
        default=None, description=_BACKGROUND_DESCRIPTION
    )
    traffic_routing: TrafficRouting | None = Field(
        default=None,
        description="How traffic is split; replicaRatio when unset.",
    )

    @model_validator(mode="after")
    def _weights_never_decrease(self) -> RolloutPolicySpec:
        _check_weights_never_decrease(self.steps)
        _check_starting_step(self.background_analysis, self.steps)
        return self

    def as_strategy(self) -> CanaryStrategy:
        """The canary strategy a Microservice referring to this policy follows."""
        return CanaryStrategy(
            steps=self.steps,
            analysis=self.analysis,
            background_analysis=self.background_analysis,
            traffic_routing=self.traffic_routing or _DEFAULT_ROUTING,
        )


class RolloutPolicyStatus(StatusBase):
    """What the operator observed about a RolloutPolicy."""

    used_by: list[str] = Field(
        default_factory=list, description="Names of the Microservices that refer to this policy."
    )


ROLLOUT_POLICY = KindDescriptor(
    kind="RolloutPolicy",
    plural="rolloutpolicies",
    singular="rolloutpolicy",
    short_names=("rp",),
    spec_model=RolloutPolicySpec,
    status_model=RolloutPolicyStatus,
    description="Canary steps and golden-signal thresholds shared by Microservices.",
    printer_columns=(
        PrinterColumn(
            name="Used-By",
            json_path=".status.usedBy",
            description="Microservices that refer to this policy.",
            priority=1,
        ),
    ),
)
