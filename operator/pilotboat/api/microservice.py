"""Microservice: a service, its release strategy, and what its rollout looks like now."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, StringConstraints, model_validator

from pilotboat.api.common import (
    LIST_MAP_BY_NAME,
    LIST_SET,
    Duration,
    LabelValue,
    ObjectName,
    SpecModel,
    StatusBase,
    StatusModel,
    cel_rule,
    cel_validations,
)
from pilotboat.api.kind import KindDescriptor, PrinterColumn, ScaleSubresource
from pilotboat.api.rollout import CanaryStrategy

__all__ = [
    "ServicePort",
    "EnvVar",
    "ResourceRequirements",
    "ReadinessProbe",
    "Toleration",
    "DatabaseRef",
    "ConfigMapKeyRef",
    "OpenAPISource",
    "ConsumedAPI",
    "ApiContract",
    "RetryPolicy",
    "CircuitBreaker",
    "Dependency",
    "RolloutStrategy",
    "PodTemplate",
    "PodTemplateMetadata",
    "WorkloadRef",
    "MicroserviceSpec",
    "MicroservicePhase",
    "Verdict",
    "AnalysisRecord",
    "AnalysisStatus",
    "JudgementRecord",
    "MeasurementRecord",
    "SignalJudgementRecord",
    "ReleaseStatus",
    "RolloutCommands",
    "ReleaseCommands",
    "LastCommand",
    "FlagSplit",
    "MicroserviceStatus",
    "MICROSERVICE",
]

PortName = Annotated[
    str, StringConstraints(min_length=1, max_length=15, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
]
Quantity = str | int


class ServicePort(SpecModel):
    """A port the service listens on."""

    name: PortName = Field(description="Port name, a DNS label of at most 15 characters.")
    port: int = Field(ge=1, le=65535, description="Port of the Service.")
    target_port: int | None = Field(
        default=None, ge=1, le=65535, description="Container port; the same as port if unset."
    )
    protocol: Literal["TCP", "UDP"] = Field(default="TCP", description="TCP or UDP.")


class EnvVar(SpecModel):
    """An environment variable for the service's containers."""

    name: str = Field(min_length=1, max_length=256, description="Variable name.")
    value: str = Field(default="", description="Variable value.")


class ResourceRequirements(SpecModel):
    """Compute resources per container, as Kubernetes quantities (e.g. cpu: 100m, memory: 128Mi)."""

    requests: dict[str, Quantity] | None = Field(
        default=None, description="Resources the scheduler reserves."
    )
    limits: dict[str, Quantity] | None = Field(
        default=None, description="Resources the container may not exceed."
    )


class ReadinessProbe(SpecModel):
    """An HTTP GET that tells Kubernetes when a pod may receive traffic."""

    path: str = Field(default="/healthz", min_length=1, description="HTTP path to probe.")
    port: str | int | None = Field(
        default=None, description="Port name or number to probe; the first port if unset."
    )
    period_seconds: int = Field(default=5, ge=1, le=3600, description="Seconds between probes.")


class Toleration(SpecModel):
    """A taint the service's pods tolerate."""

    key: str | None = Field(default=None, description="Taint key; all keys when unset.")
    operator: Literal["Exists", "Equal"] = Field(
        default="Equal", description="Exists (any value) or Equal (the value below)."
    )
    value: str | None = Field(default=None, description="Taint value, with operator Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to tolerate; all effects when unset."
    )


class DatabaseRef(SpecModel):
    """The database this service owns."""

    owned_database: ObjectName = Field(
        description="Name of an OwnedDatabase in this namespace whose owner is this service."
    )


class ConfigMapKeyRef(SpecModel):
    """A key in a ConfigMap in this namespace."""

    name: ObjectName = Field(description="ConfigMap name.")
    key: str = Field(min_length=1, max_length=253, description="Key within the ConfigMap.")


class OpenAPISource(SpecModel):
    """Where the service's OpenAPI document is. Exactly one of its fields is set."""

    model_config = ConfigDict(
        json_schema_extra=cel_validations(
            cel_rule(
                "has(self.inline) != has(self.configMapRef)",
                "openapi sets exactly one of inline, configMapRef",
            )
        )
    )

    inline: str | None = Field(default=None, description="The OpenAPI document (YAML or JSON).")
    config_map_ref: ConfigMapKeyRef | None = Field(
        default=None, description="A ConfigMap key holding the OpenAPI document."
    )

    @model_validator(mode="after")
    def _exactly_one_source(self) -> OpenAPISource:
        if (self.inline is None) == (self.config_map_ref is None):
            raise ValueError("openapi sets exactly one of inline, configMapRef")
        return self


class ConsumedAPI(SpecModel):
    """What this service uses of another service's API; checked against that service's contract."""

    service: ObjectName = Field(description="Name of the Microservice whose API is used.")
    operations: list[str] = Field(
        default_factory=list, description="operationIds this service calls."
    )
    request_fields: list[str] = Field(
        default_factory=list, description="Request fields this service sends (JSON paths)."
    )
    response_fields: list[str] = Field(
        default_factory=list, description="Response fields this service reads (JSON paths)."
    )


class ApiContract(SpecModel):
    """The API the service provides and the APIs it consumes."""

    openapi: OpenAPISource | None = Field(
        default=None, description="The API this service provides, as OpenAPI."
    )
    consumes: list[ConsumedAPI] = Field(
        default_factory=list, description="The parts of other services' APIs this service uses."
    )


class RetryPolicy(SpecModel):
    """How calls to a dependency are retried."""

    attempts: int = Field(default=2, ge=0, le=10, description="Retries after the first attempt.")
    backoff: Duration = Field(default="100ms", description="Wait before the first retry.")


class CircuitBreaker(SpecModel):
    """When calls to a dependency stop for a while."""

    consecutive_failures: int = Field(
        default=5, ge=1, description="Failures in a row that open the circuit."
    )
    open_for: Duration = Field(default="30s", description="How long the circuit stays open.")


class Dependency(SpecModel):
    """Another service this one calls, and how the calls are protected."""

    service: ObjectName = Field(description="Name of the Microservice called.")
    timeout: Duration | None = Field(default=None, description="Timeout of one call, e.g. 2s.")
    retries: RetryPolicy | None = Field(default=None, description="Retry policy.")
    circuit_breaker: CircuitBreaker | None = Field(default=None, description="Circuit breaker.")


class RolloutStrategy(SpecModel):
    """How a new version is released. Exactly one of its fields is set."""

    model_config = ConfigDict(
        json_schema_extra=cel_validations(
            cel_rule(
                "has(self.canary) != has(self.rolloutPolicyRef)",
                "rollout sets exactly one of canary, rolloutPolicyRef",
            )
        )
    )

    canary: CanaryStrategy | None = Field(default=None, description="A canary release, inline.")
    rollout_policy_ref: ObjectName | None = Field(
        default=None, description="Name of a RolloutPolicy in this namespace to follow."
    )

    @model_validator(mode="after")
    def _exactly_one_strategy(self) -> RolloutStrategy:
        if (self.canary is None) == (self.rollout_policy_ref is None):
            raise ValueError("rollout sets exactly one of canary, rolloutPolicyRef")
        return self


# The image reference grammar of the distribution project (reference/regexp.go), without
# IPv6 registries: what the kubelet can pull. Anything else would only fail on the node.
_DOMAIN = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_PATH = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
IMAGE_REFERENCE_PATTERN = (
    rf"^(?:{_DOMAIN}(?:\.{_DOMAIN})*(?::[0-9]+)?/)?{_PATH}(?:/{_PATH})*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9A-Fa-f]{32,})?$"
)


class PodTemplateMetadata(SpecModel):
    """Labels and annotations of the pods; the operator adds its own labels to them."""

    labels: dict[str, str] | None = Field(default=None, description="Labels of the pods.")
    annotations: dict[str, str] | None = Field(
        default=None, description="Annotations of the pods."
    )


class PodTemplate(SpecModel):
    """A complete core/v1 pod template, as in a Deployment.

    The first container is the service's: the short fields of the Microservice (image, env,
    ports, resources, readinessProbe, imagePullPolicy, nodeSelector, tolerations) are sugar
    that fills it in or overrides what it says. Every other container is a sidecar, kept as
    written. The API server validates the whole template when the operator renders the
    Deployment (a dry run at admission), and a refusal names the Microservice field."""

    metadata: PodTemplateMetadata | None = Field(
        default=None, description="Labels and annotations of the pods."
    )
    spec: dict[str, Any] = Field(
        default_factory=dict,
        description="A core/v1 PodSpec (containers, volumes, probes, securityContext, …).",
    )

    @model_validator(mode="after")
    def _containers(self) -> PodTemplate:
        containers = self.spec.get("containers")
        if containers is None:
            return self
        if not isinstance(containers, list) or not containers:
            raise ValueError("spec.containers: a list of at least one container")
        names: set[str] = set()
        for index, container in enumerate(containers):
            if not isinstance(container, dict):
                raise ValueError(f"spec.containers[{index}]: a container object")
            name = container.get("name")
            if not isinstance(name, str) or not name:
                raise ValueError(f"spec.containers[{index}].name: required")
            if name in names:
                raise ValueError(f"spec.containers[{index}].name: {name!r} is used twice")
            names.add(name)
            if "image" in container and not isinstance(container["image"], str):
                raise ValueError(f"spec.containers[{index}].image: a string")
        return self

    def main_container(self) -> dict[str, Any] | None:
        """The service's own container (the first), if the template has one."""
        containers = self.spec.get("containers") or []
        return containers[0] if containers else None


class WorkloadRef(SpecModel):
    """An existing Deployment in this namespace whose pod template the Microservice runs.

    The Deployment's template is the source of truth (as spec.template would be): the
    operator runs its own stable Deployment from it, scales the original down only as its
    own pods become ready, and releases every later change of that template as a canary.
    The original is never deleted; deleting the Microservice scales it back up first."""

    api_version: Literal["apps/v1"] = Field(
        default="apps/v1", description="API version of the workload: apps/v1."
    )
    kind: Literal["Deployment"] = Field(
        default="Deployment", description="Kind of the workload: Deployment."
    )
    name: ObjectName = Field(description="Name of the Deployment, in this namespace.")
    scale_down: Literal["progressively", "never"] = Field(
        default="progressively",
        description="progressively (the default): the original is scaled down one pod for"
        " each ready pod of the Microservice, to 0; never: it is left as it is.",
    )


_WORKLOAD_REF_RULES = cel_validations(
    cel_rule(
        "!has(self.workloadRef) || !has(self.template)",
        "spec.template must be absent with spec.workloadRef: the referenced Deployment's"
        " template is the pod template",
        ".template",
    ),
    cel_rule(
        "!has(self.workloadRef) || !has(self.image)",
        "spec.image must be absent with spec.workloadRef: the referenced Deployment's"
        " template names the image",
        ".image",
    ),
)


class MicroserviceSpec(SpecModel):
    """The desired state of a service: what runs, how it is reached, and how it is released."""

    model_config = ConfigDict(json_schema_extra=_WORKLOAD_REF_RULES)

    image: str | None = Field(
        default=None,
        min_length=1,
        max_length=1024,
        pattern=IMAGE_REFERENCE_PATTERN,
        description="Container image to run: [registry[:port]/]path[:tag][@digest]. Required"
        " unless spec.template's first container names its image.",
    )
    template: PodTemplate | None = Field(
        default=None,
        description="The full pod template (core/v1 PodTemplateSpec), as in a Deployment: "
        "volumes, envFrom and valueFrom, probes, command and args, securityContext, "
        "serviceAccountName, sidecars, affinity. The first container is the service's; the "
        "short fields above fill it in.",
    )
    workload_ref: WorkloadRef | None = Field(
        default=None,
        description="An existing Deployment in this namespace to adopt: its pod template is"
        " the Microservice's (spec.template and spec.image must then be absent); the original"
        " is scaled down as the Microservice's pods become ready and left at 0 replicas.",
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = Field(
        default=None,
        description="When the kubelet pulls the image; Kubernetes' default when unset"
        " (IfNotPresent or Never for images built on the node).",
    )
    version: LabelValue = Field(
        description="Version of this release; a label value. Changing it starts a rollout."
    )
    replicas: int = Field(
        default=1,
        ge=0,
        le=1000,
        description="Number of pods, 0 to 1000; the scale subresource sets it (kubectl scale,"
        " a HorizontalPodAutoscaler). A canary release splits this count between the tracks.",
    )
    progress_deadline_seconds: int = Field(
        default=600,
        ge=1,
        le=2147483647,
        description="Seconds a canary step's pods have to become ready, counted from the step"
        " that asked for them; past it the release is rolled back (ProgressDeadlineExceeded)."
        " 600 by default, as for a Deployment.",
    )
    ports: list[ServicePort] = Field(
        default=[ServicePort(name="http", port=8080)],
        max_length=32,
        description="Ports the service listens on; http 8080 by default.",
        json_schema_extra=LIST_MAP_BY_NAME,
    )
    env: list[EnvVar] | None = Field(
        default=None, description="Environment variables.", json_schema_extra=LIST_MAP_BY_NAME
    )
    resources: ResourceRequirements | None = Field(
        default=None, description="Compute resources per container."
    )
    readiness_probe: ReadinessProbe | None = Field(
        default=None, description="HTTP readiness probe."
    )
    node_selector: dict[str, str] | None = Field(
        default=None, description="Labels a node must have to run the pods."
    )
    tolerations: list[Toleration] | None = Field(
        default=None, description="Taints the pods tolerate."
    )
    bounded_context: str | None = Field(
        default=None, max_length=253, description="The bounded context this service belongs to."
    )
    database: DatabaseRef | None = Field(default=None, description="The database it owns.")
    api: ApiContract | None = Field(
        default=None, description="The API it provides and the APIs it consumes."
    )
    dependencies: list[Dependency] | None = Field(
        default=None, description="Services it calls, with timeouts, retries and circuit breaking."
    )
    flags: list[ObjectName] | None = Field(
        default=None,
        description="Names of the FeatureFlags this service reads.",
        json_schema_extra=LIST_SET,
    )
    rollout: RolloutStrategy | None = Field(
        default=None,
        description="How new versions are released; without it a new version replaces the old"
        " one as a plain Deployment update.",
    )

    @model_validator(mode="after")
    def _image_and_env(self) -> MicroserviceSpec:
        if self.workload_ref is not None:
            for given in ("template", "image"):
                if getattr(self, given) is not None:
                    raise ValueError(f"{given}: must be absent with spec.workloadRef; the "
                                     "referenced Deployment's template is the pod template")
            return self
        main = self.template.main_container() if self.template else None
        if self.image is None and not (main and main.get("image")):
            raise ValueError("image: required unless spec.template.spec.containers[0].image "
                             "is set")
        template_env = {e.get("name") for e in (main or {}).get("env") or ()
                        if isinstance(e, dict)}
        for index, var in enumerate(self.env or ()):
            if var.name in template_env:
                raise ValueError(f"env[{index}].name: {var.name!r} is also set in "
                                 "spec.template.spec.containers[0].env; set it in one place")
        return self

    @property
    def main_image(self) -> str:
        """The image of the service's own container."""
        main = self.template.main_container() if self.template else None
        return self.image or str((main or {}).get("image") or "")


MicroservicePhase = Literal["Healthy", "Progressing", "Paused", "Degraded"]
Verdict = Literal["Successful", "Failed", "Inconclusive", "Error"]


class AnalysisRecord(StatusModel):
    """One measurement of one golden signal and what was concluded from it."""

    signal: str = Field(description="The signal measured: errors, latency, traffic, saturation.")
    value: float | None = Field(default=None, description="The measured value, if any.")
    threshold: str = Field(default="", description="The threshold it was judged against.")
    stable_value: float | None = Field(
        default=None,
        description="The stable track's value over the same window (its own pods, selected by"
        " revision), if any.",
    )
    verdict: Verdict = Field(description="Successful, Failed, Inconclusive or Error.")
    at: str | None = Field(default=None, description="When it was measured (RFC 3339).")
    message: str = Field(default="", description="Why, in a sentence.")


class MeasurementRecord(StatusModel):
    """One measurement of all signals at once, in the analysis step that took it."""

    at: str = Field(description="When it was measured (RFC 3339).")
    step: int = Field(
        ge=0, description="Index of the step it was taken at (an analysis step's, in `analysis`)."
    )
    verdict: Verdict = Field(description="The worst verdict of its signals.")
    summary: str = Field(default="", description="The numbers behind the verdict.")


class SignalJudgementRecord(StatusModel):
    """The statistical judge's verdict on one signal, with the numbers behind it."""

    signal: str = Field(description="errors, latency, traffic or saturation.")
    test: str = Field(
        default="", description="The test and its sides, e.g. `Mann-Whitney U one-sided`."
    )
    weight: float = Field(default=1.0, ge=0, description="The signal's weight in the score.")
    canary_samples: int = Field(
        default=0, ge=0, description="Canary samples compared (requests, for errors)."
    )
    stable_samples: int = Field(
        default=0, ge=0, description="Stable samples compared (requests, for errors)."
    )
    canary_median: float | None = Field(
        default=None, description="The canary's median sample (its pooled ratio, for errors)."
    )
    stable_median: float | None = Field(
        default=None, description="The stable's median sample (its pooled ratio, for errors)."
    )
    p_value: float | None = Field(default=None, description="The test's p-value, if it ran.")
    effect: float | None = Field(
        default=None, description="Canary median minus stable median, in the signal's units."
    )
    relative_effect: float | None = Field(
        default=None, description="The effect as a share of the stable median (0.1 is +10%)."
    )
    verdict: Literal["Pass", "Fail", "Inconclusive"] = Field(
        description="Pass, Fail or Inconclusive (too few samples)."
    )
    explanation: str = Field(default="", description="The verdict in a sentence, with numbers.")


class JudgementRecord(StatusModel):
    """The statistical judge's last verdict (judge.method mannWhitney), Kayenta-style: the
    weighted share of the conclusive signals that passed, against the pass and marginal
    scores."""

    at: str | None = Field(default=None, description="When it was measured (RFC 3339).")
    step: int | None = Field(default=None, ge=0, description="The analysis step that took it.")
    score: float | None = Field(
        default=None, description="0 to 100; none when no signal was conclusive."
    )
    verdict: Literal["Pass", "Marginal", "Fail", "Inconclusive"] = Field(
        description="Pass (at or above passScore), Marginal (between), Fail (below"
        " marginalScore) or Inconclusive (no conclusive signal)."
    )
    pass_score: float = Field(default=95.0, description="The score at or above which it passes.")
    marginal_score: float = Field(default=75.0, description="The score below which it fails.")
    explanation: str = Field(default="", description="The score's verdict in a sentence.")
    signals: list[SignalJudgementRecord] = Field(
        default_factory=list, description="Each signal's test, samples, medians and verdict."
    )


class AnalysisStatus(StatusModel):
    """Results of the analysis of the current canary."""

    history: list[AnalysisRecord] = Field(
        default_factory=list,
        description="Most recent measurements per signal (the last ten each), oldest first.",
    )
    measurements: list[MeasurementRecord] = Field(
        default_factory=list,
        description="Measurements of the current analysis step (in `backgroundAnalysis`: the"
        " last twenty of the release, and every failed one).",
    )
    last_measured_at: str | None = Field(
        default=None, description="When the last measurement was taken (RFC 3339)."
    )
    summary: str | None = Field(default=None, description="Where the analysis stands, in words.")
    queries: int = Field(default=0, ge=0, description="Prometheus queries in the last measurement.")
    judgement: JudgementRecord | None = Field(
        default=None,
        description="The statistical judge's last score and per-signal tests (judge.method"
        " mannWhitney).",
    )


class RolloutCommands(StatusModel):
    """Requests from people, written through the status subresource (RBAC grants that
    separately from editing the spec): each value is a fresh token; the operator acts on a
    token once and records it under `release.handledCommands`."""

    promote: str | None = Field(default=None, description="Go past the current pause or analysis.")
    promote_full: str | None = Field(default=None, description="Skip all remaining steps.")
    abort: str | None = Field(default=None, description="Roll back the release in progress.")
    retry: str | None = Field(default=None, description="Start a rolled-back release again.")


class ReleaseCommands(RolloutCommands):
    """The commands people send, each with who sent it: the admission policy
    pilotboat-command-identity makes `<command>By` the user the API server authenticated
    whenever that command's token changes (the operator's webhook `command-identity` fills
    it in when the client left it out)."""

    promote_by: str | None = Field(default=None, description="Who sent `promote`.")
    promote_full_by: str | None = Field(default=None, description="Who sent `promoteFull`.")
    abort_by: str | None = Field(default=None, description="Who sent `abort`.")
    retry_by: str | None = Field(default=None, description="Who sent `retry`.")


class LastCommand(StatusModel):
    """The last release command the operator acted on, and who sent it."""

    name: Literal["promote", "promoteFull", "abort", "retry"] = Field(
        description="promote, promoteFull, abort or retry."
    )
    by: str | None = Field(default=None, description="Who sent it (`status.commands.<name>By`).")
    verified: bool = Field(
        default=False,
        description="Whether the API server vouched for `by`: the admission policy"
        " pilotboat-command-identity was in force when the command was sent.",
    )
    at: str | None = Field(default=None, description="When the operator acted on it (RFC 3339).")


class ReleaseStatus(StatusModel):
    """What the operator remembers about the release in progress, so a restart resumes it."""

    revision: str | None = Field(default=None, description="Digest of the pod template released.")
    step_started_at: float | None = Field(
        default=None, description="When the current step started (Unix seconds)."
    )
    aborted_revision: str | None = Field(
        default=None, description="A revision rolled back; it is not retried until asked."
    )
    promoting: bool = Field(default=False, description="The stable track is taking the canary.")
    rollback_reason: str | None = Field(
        default=None, description="Why the last release was rolled back, with its numbers."
    )
    rollback_cause: str | None = Field(
        default=None,
        description="The condition reason of that rollback when it was not an analysis step"
        " or a request: ProgressDeadlineExceeded, BackgroundAnalysisFailed.",
    )
    mirror_percent: int = Field(
        default=0, ge=0, le=100, description="Share of stable's requests mirrored to the canary."
    )
    handled_commands: RolloutCommands | None = Field(
        default=None, description="The command tokens already acted on."
    )


class FlagSplit(StatusModel):
    """A FeatureFlag split in force for this service, set by a release's setFlag step."""

    flag: str = Field(description="Name of the FeatureFlag.")
    variants: dict[str, int] = Field(description="Percent of evaluations per variant.")
    scope: Literal["release", "promoted"] = Field(
        description="release: set by the release in progress (a rollback drops it); promoted:"
        " kept from a promoted release until the flag's variants or targeting change."
    )
    version: str | None = Field(default=None, description="The version whose release set it.")
    basis: str | None = Field(
        default=None, description="Digest of the flag's variants and targeting when promoted."
    )


class MicroserviceStatus(StatusBase):
    """What the operator observed about a Microservice and its rollout."""

    phase: MicroservicePhase | None = Field(
        default=None, description="Healthy, Progressing, Paused or Degraded."
    )
    stable_version: str | None = Field(default=None, description="The version serving by default.")
    canary_version: str | None = Field(
        default=None, description="The version being released, while a rollout runs."
    )
    current_step_index: int | None = Field(
        default=None, ge=0, description="Index of the canary step running now, if any."
    )
    canary_weight: int = Field(
        default=0,
        ge=0,
        le=100,
        description="Percent of traffic the current step gives the canary (the target).",
    )
    actual_weight: int = Field(
        default=0,
        ge=0,
        le=100,
        description="Percent of traffic the canary receives now: the HTTPRoute's weight under "
        "Gateway API routing (it rises only once canary pods are ready for it), the canary's "
        "share of ready pods under replica ratio.",
    )
    replicas: int = Field(
        default=0,
        ge=0,
        description="Pods the Microservice runs now, ready or not, stable and canary (as a"
        " Deployment counts them): above spec.replicas while a canary surges.",
    )
    selector: str | None = Field(
        default=None,
        description="Label selector of its pods, both tracks (the scale subresource's"
        " selector, for a HorizontalPodAutoscaler).",
    )
    ready_replicas: int = Field(default=0, ge=0, description="Ready pods, stable and canary.")
    step: str | None = Field(
        default=None,
        description="The step running now as people count it, from 1: `2/4` (`kubectl get`'s"
        " Step column; currentStepIndex is the same step from 0).",
    )
    ready: str | None = Field(
        default=None,
        description="Ready pods of the wanted ones, `3/4` (`kubectl get`'s Ready column).",
    )
    pause_reason: str | None = Field(default=None, description="Why the rollout is paused.")
    failed_checks: int = Field(
        default=0, ge=0, description="Failed measurements in the current rollout."
    )
    analysis: AnalysisStatus | None = Field(
        default=None, description="Results of the analysis of the current canary."
    )
    background_analysis: AnalysisStatus | None = Field(
        default=None,
        description="Results of the background analysis of the current canary"
        " (strategy.backgroundAnalysis), in the shape of `analysis`: its measurements span"
        " the release, each with the step it was taken at.",
    )
    message: str | None = Field(default=None, description="Where the release is, in a sentence.")
    release: ReleaseStatus | None = Field(
        default=None, description="Bookkeeping of the release in progress."
    )
    commands: ReleaseCommands | None = Field(
        default=None, description="Promote / abort / retry requests (kubectl pilotboat)."
    )
    last_command: LastCommand | None = Field(
        default=None, description="The last release command acted on, and who sent it."
    )
    flag_overrides: list[FlagSplit] | None = Field(
        default=None, description="FeatureFlag splits that releases set for this service."
    )


MICROSERVICE = KindDescriptor(
    kind="Microservice",
    plural="microservices",
    singular="microservice",
    short_names=("msvc", "ms"),
    spec_model=MicroserviceSpec,
    status_model=MicroserviceStatus,
    description="A service Pilotboat runs and releases, by canary, in step with its migrations.",
    scale=ScaleSubresource(".spec.replicas", ".status.replicas", ".status.selector"),
    printer_columns=(
        PrinterColumn("Version", ".spec.version", description="Desired version."),
        PrinterColumn("Stable", ".status.stableVersion", description="Version serving by default."),
        PrinterColumn("Phase", ".status.phase", description="Rollout phase."),
        PrinterColumn(
            "Step", ".status.step", description="Current canary step, from 1 (`2/4`)."
        ),
        PrinterColumn(
            "Weight", ".status.canaryWeight", "integer", description="Canary traffic percent."
        ),
        PrinterColumn("Ready", ".status.ready", description="Ready pods of the wanted ones."),
    ),
)
