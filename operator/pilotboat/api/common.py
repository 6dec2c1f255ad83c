"""Building blocks shared by every kind: model bases, durations, names, conditions, CEL rules."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from pydantic.alias_generators import to_camel

__all__ = [
    "DURATION_PATTERN",
    "DNS_LABEL_PATTERN",
    "DNS_SUBDOMAIN_PATTERN",
    "LABEL_VALUE_PATTERN",
    "ApiModel",
    "SpecModel",
    "StatusModel",
    "Condition",
    "ConditionStatus",
    "Duration",
    "ObjectName",
    "DnsLabel",
    "LabelValue",
    "StatusBase",
    "cel_rule",
    "cel_validations",
    "error_path",
    "format_duration",
    "parse_duration",
    "LIST_MAP_BY_TYPE",
    "LIST_MAP_BY_NAME",
    "LIST_SET",
]

DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
"""A Go-style duration without sign or microseconds: ``30s``, ``5m``, ``1h30m``, ``250ms``."""

DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
LABEL_VALUE_PATTERN = r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"

_DURATION_RE = re.compile(DURATION_PATTERN)
_DURATION_PART_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

Duration = Annotated[str, StringConstraints(pattern=DURATION_PATTERN, max_length=64)]
"""A duration string such as ``30s``, ``5m`` or ``1h30m``; see :func:`parse_duration`."""

ObjectName = Annotated[
    str, StringConstraints(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)
]
"""The name of a Kubernetes object in the same namespace (a DNS-1123 subdomain)."""

DnsLabel = Annotated[str, StringConstraints(min_length=1, max_length=63, pattern=DNS_LABEL_PATTERN)]
"""A DNS-1123 label: lower-case alphanumerics and ``-``, at most 63 characters."""

LabelValue = Annotated[
    str, StringConstraints(min_length=1, max_length=63, pattern=LABEL_VALUE_PATTERN)
]
"""A value that is valid as a Kubernetes label value (and not empty)."""

LIST_MAP_BY_TYPE: dict[str, Any] = {
    "x-kubernetes-list-type": "map",
    "x-kubernetes-list-map-keys": ["type"],
}
LIST_MAP_BY_NAME: dict[str, Any] = {
    "x-kubernetes-list-type": "map",
    "x-kubernetes-list-map-keys": ["name"],
}
LIST_SET: dict[str, Any] = {"x-kubernetes-list-type": "set"}


def parse_duration(text: str) -> float:
    """Return the number of seconds a duration string stands for.

    Accepts what :data:`DURATION_PATTERN` accepts; parts add up and may repeat.

    >>> parse_duration("30s")
    30.0
    >>> parse_duration("1h30m")
    5400.0
    >>> parse_duration("1.5s")
    1.5
    >>> parse_duration("250ms")
    0.25

    Raises :class:`ValueError` for anything else (``""``, ``"5"``, ``"-1s"``, ``"1d"``).
    """
    if not isinstance(text, str) or not _DURATION_RE.fullmatch(text):
        raise ValueError(f"invalid duration {text!r}: expected e.g. '30s', '5m', '1h30m', '250ms'")
    return sum(
        float(number) * _UNIT_SECONDS[unit] for number, unit in _DURATION_PART_RE.findall(text)
    )


def format_duration(seconds: float) -> str:
    """Return the canonical duration string for ``seconds``, rounded to the millisecond.

    The inverse of :func:`parse_duration` up to that rounding.

    >>> format_duration(5400)
    '1h30m'
    >>> format_duration(0.25)
    '250ms'
    >>> format_duration(0)
    '0s'

    Raises :class:`ValueError` for negative values.
    """
    if seconds < 0:
        raise ValueError(f"durations are never negative, got {seconds!r}")
    total_ms = round(seconds * 1000)
    hours, rest = divmod(total_ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    parts = [
        f"{value}{unit}"
        for value, unit in ((hours, "h"), (minutes, "m"), (secs, "s"), (millis, "ms"))
        if value
    ]
    return "".join(parts) or "0s"


def cel_rule(rule: str, message: str, field_path: str | None = None) -> dict[str, str]:
    """One ``x-kubernetes-validations`` entry: CEL ``rule``, ``message``, ``fieldPath``."""
    entry = {"rule": rule, "message": message}
    if field_path is not None:
        entry["fieldPath"] = field_path
    return entry


def cel_validations(*rules: dict[str, str]) -> dict[str, Any]:
    """``json_schema_extra`` for a model whose cross-field rules the API server checks in CEL."""
    return {"x-kubernetes-validations": list(rules)}


class ApiModel(BaseModel):
    """Base of every API model: camelCase on the wire, snake_case in Python, immutable."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)


class SpecModel(ApiModel):
    """Base of models users write: unknown fields are errors."""

    model_config = ConfigDict(extra="forbid")


class StatusModel(ApiModel):
    """Base of models the operator writes: unknown fields (from older operators) are ignored."""

    model_config = ConfigDict(extra="ignore")


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(StatusModel):
    """One aspect of an object's observed state, as Kubernetes API conventions describe it."""

    type: str = Field(
        max_length=316,
        description="What this condition is about, in CamelCase (for example Ready, Progressing).",
    )
    status: ConditionStatus = Field(
        description="Whether the condition holds: True, False or Unknown."
    )
    reason: str = Field(
        default="",
        max_length=1024,
        description="Why the condition has its status: one CamelCase word a program can match on.",
    )
    message: str = Field(
        default="", max_length=32768, description="What a person needs to know, in a sentence."
    )
    last_transition_time: str | None = Field(
        default=None,
        description="When status last changed (RFC 3339); not when only reason or message do.",
    )
    observed_generation: int | None = Field(
        default=None,
        ge=0,
        description="The metadata.generation of the object this condition was computed from.",
    )


class StatusBase(StatusModel):
    """What every kind's status reports."""

    observed_generation: int | None = Field(
        default=None,
        ge=0,
        description="The metadata.generation the operator last acted on.",
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="The latest observations of the object's state, one per condition type.",
        json_schema_extra=LIST_MAP_BY_TYPE,
    )


_FIELD_FIRST = re.compile(r"^(?:Value error, )?(?P<field>[A-Za-z][\w.\[\]]*): (?P<rest>.+)$", re.S)


def error_path(error: Mapping[str, Any], root: str = "spec") -> tuple[str, str]:
    """The field path and message of one pydantic error, under ``root``. A cross-field rule
    of a model that leads its message with the field it is about (``image: required unless
    …``) is placed at that field.

    >>> error_path({"loc": ("ports", 0, "port"), "msg": "Input should be greater than 0"})
    ('spec.ports[0].port', 'Input should be greater than 0')
    >>> error_path({"loc": (), "msg": "Value error, image: required unless template"})
    ('spec.image', 'required unless template')
    >>> error_path({"loc": ("rollout",), "msg": "Value error, rollout sets exactly one"})
    ('spec.rollout', 'rollout sets exactly one')
    """
    path = root
    for part in error.get("loc") or ():
        if isinstance(part, str) and part.startswith("function-"):
            continue
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    message = str(error.get("msg", ""))
    lead = _FIELD_FIRST.match(message)
    if lead is not None:
        return f"{path}.{lead['field']}", lead["rest"]
    return path, message.removeprefix("Value error, ")

