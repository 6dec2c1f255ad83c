"""FeatureFlag: one flagd-compatible flag, and which services read it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from pilotboat.api.common import SpecModel, StatusBase
from pilotboat.api.kind import KindDescriptor, PrinterColumn
from pilotboat.api.targeting import targeting_problems, variant_type_problems

__all__ = [
    "FlagState",
    "FeatureFlagSpec",
    "FeatureFlagStatus",
    "FEATURE_FLAG",
    "feature_flag_problems",
]

FlagState = Literal["ENABLED", "DISABLED"]
MAX_VARIANTS = 64


class FeatureFlagSpec(SpecModel):
    """A feature flag in flagd's format; its key is spec.key, or the object's name.

    defaultVariant must be one of the keys of variants, the variants' values share one JSON
    type, and targeting is JsonLogic that flagd can evaluate, whose fractional splits sum to
    100 (:mod:`pilotboat.api.targeting`). The admission webhook refuses a flag otherwise, and
    the operator does not render one it missed.
    """

    # These rules are checked here, not by the API server: CEL cannot see into free-form JSON
    # (the API server leaves such fields out of CEL).

    key: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        description="The flag key services evaluate; metadata.name when unset.",
    )
    state: FlagState = Field(default="ENABLED", description="ENABLED or DISABLED.")
    variants: dict[str, Any] = Field(
        min_length=1,
        max_length=MAX_VARIANTS,
        description="Variant name to value; values may be of any JSON type.",
        json_schema_extra={"additionalProperties": {"x-kubernetes-preserve-unknown-fields": True}},
    )
    default_variant: str = Field(
        min_length=1, max_length=253, description="The variant served when no rule matches."
    )
    targeting: dict[str, Any] | None = Field(
        default=None, description="flagd targeting rules (JsonLogic)."
    )

    @model_validator(mode="after")
    def _a_flag_flagd_can_serve(self) -> FeatureFlagSpec:
        problems = []
        if self.default_variant not in self.variants:
            problems.append(
                f"spec.defaultVariant: must be one of the keys of variants: "
                f"{self.default_variant!r} is not in {sorted(self.variants)}"
            )
        problems += variant_type_problems(self.variants)
        problems += targeting_problems(self.targeting, self.variants)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def flag_key(self, name: str) -> str:
        """The key services evaluate: ``spec.key``, or the object's ``name``."""
        return self.key or name


class FeatureFlagStatus(StatusBase):
    """What the operator observed about a FeatureFlag."""

    consumers: list[str] = Field(
        default_factory=list, description="Microservices that read this flag."
    )
    served: dict[str, dict[str, int]] = Field(
        default_factory=dict,
        description="Per service, the percent of evaluations each variant gets now.",
    )


FEATURE_FLAG = KindDescriptor(
    kind="FeatureFlag",
    plural="featureflags",
    singular="featureflag",
    short_names=("pbflag",),
    spec_model=FeatureFlagSpec,
    status_model=FeatureFlagStatus,
    description="A feature flag (OpenFeature/flagd) that canary steps may roll out by percent.",
    printer_columns=(
        PrinterColumn("State", ".spec.state", description="ENABLED or DISABLED."),
        PrinterColumn("Default", ".spec.defaultVariant", description="The default variant."),
    ),
)


def feature_flag_problems(spec: Any) -> list[str]:
    """Why a FeatureFlag's ``spec`` (wire form) is refused, one message per problem, each
    starting with the field it is about; empty when it is a valid flag.

    >>> feature_flag_problems({"variants": {"on": True}, "defaultVariant": "off"})
    ["spec.defaultVariant: must be one of the keys of variants: 'off' is not in ['on']"]
    """
    try:
        FeatureFlagSpec.model_validate(spec or {})
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            if err["loc"]:
                path = "spec" + "".join(
                    f"[{loc}]" if isinstance(loc, int) else f".{loc}" for loc in err["loc"]
                )
                problems.append(f"{path}: {err['msg']}")
            else:
                problems += str(err["msg"]).removeprefix("Value error, ").split("; ")
        return problems
    return []
