"""Feature flags as a service reads them: flagd's file format, in a ConfigMap per service.

Pure functions. For each Microservice that names flags in ``spec.flags``, the operator
renders a ConfigMap ``<service>-flags`` whose key ``flags.json`` is a flagd flag file::

    {"flags": {"new-checkout": {"state": "ENABLED", "variants": {"on": true, "off": false},
                                "defaultVariant": "off",
                                "targeting": {"fractional": [["on", 10], ["off", 90]]}}}}

Every pod of the service, stable and canary, mounts it at ``/etc/pilotboat/flags``; the
environment points OpenFeature's flagd provider at it in file mode, which watches the file.
The flags' content stays out of the pod template, so changing a flag restarts nothing and
is not a release.

**Splits in force.** A canary step ``setFlag`` sets a *split*: the percentages of a flag's
``fractional`` rule for this service. Where a split comes from, in order of precedence:

1. the release in progress (its setFlag steps; dropped when the release rolls back, so the
   configuration rolls back with the code);
2. a split *promoted* with an earlier release: it stays in force after promotion while the
   FeatureFlag's variants and targeting are what they were then (its *basis*); any edit of
   them (say, to write the final split into Git) ends it, and the spec speaks again;
3. the FeatureFlag's spec.

The state is never overridden: ``state: DISABLED`` (the kill switch) is rendered at once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pilotboat.api import FeatureFlagSpec
from pilotboat.api.targeting import fractional_buckets, fractional_operations

__all__ = [
    "FLAGS_DIRECTORY",
    "FLAGS_FILE",
    "FLAGS_KEY",
    "FlagOverride",
    "RenderedFlags",
    "flag_basis",
    "flag_config_map_name",
    "flags_environment",
    "overrides_from_status",
    "overrides_to_status",
    "render_flag",
    "render_flags",
    "served_split",
    "settle_overrides",
    "with_split",
]

FLAGS_DIRECTORY = "/etc/pilotboat/flags"
FLAGS_KEY = "flags.json"
FLAGS_FILE = f"{FLAGS_DIRECTORY}/{FLAGS_KEY}"


def flag_config_map_name(service: str) -> str:
    """``payments-flags``: the ConfigMap holding ``payments``' flags."""
    return f"{service}-flags"


def flags_environment() -> list[dict[str, str]]:
    """What tells an OpenFeature flagd provider to read the mounted file (in-process
    resolver with an offline source: flagd's file mode)."""
    return [
        {"name": "FLAGD_RESOLVER", "value": "in-process"},
        {"name": "FLAGD_OFFLINE_FLAG_SOURCE_PATH", "value": FLAGS_FILE},
    ]


@dataclass(frozen=True)
class FlagOverride:
    """A split in force for one flag of one service, and where it came from."""

    flag: str
    variants: Mapping[str, int]
    scope: str  # "release" (the release in progress) or "promoted"
    version: str | None = None
    basis: str | None = None  # flag_basis() of the FeatureFlag when promoted


def flag_basis(spec: FeatureFlagSpec) -> str:
    """A digest of what a promoted split depends on: the flag's variants and targeting
    (not its state: the kill switch does not end a promoted split)."""
    blob = json.dumps(
        {"variants": spec.variants, "targeting": spec.targeting},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def with_split(targeting: Mapping[str, Any] | None, split: Mapping[str, int]) -> dict[str, Any]:
    """``targeting`` with every ``fractional`` split replaced by ``split`` (a bucket-by
    expression, if any, and the order of the buckets kept); without targeting, a plain
    ``fractional`` rule.

    >>> with_split(None, {"on": 10, "off": 90})
    {'fractional': [['on', 10], ['off', 90]]}
    >>> with_split({"fractional": [{"var": "email"}, ["on", 0], ["off", 100]]},
    ...            {"off": 50, "on": 50})
    {'fractional': [{'var': 'email'}, ['on', 50], ['off', 50]]}

    Raises :class:`ValueError` when the targeting has rules but no ``fractional`` to move.
    """
    if not targeting:
        return {"fractional": [[variant, percent] for variant, percent in split.items()]}
    if not fractional_operations(targeting):
        raise ValueError("its targeting has no fractional split to move")

    def buckets(args: Any) -> list[list[Any]]:
        # The declared order of the buckets is kept: a variant keeps its hash range's start,
        # so moving 10% -> 50% keeps the first 10% of users where they were.
        declared = [b[0] for b in fractional_buckets(args) if isinstance(b, list) and b]
        order = [v for v in declared if v in split] + [v for v in split if v not in declared]
        return [[variant, split[variant]] for variant in order]

    def rewrite(rule: Any) -> Any:
        if isinstance(rule, list):
            return [rewrite(item) for item in rule]
        if isinstance(rule, Mapping):
            out = {}
            for op, args in rule.items():
                if op == "fractional":
                    items = list(args) if isinstance(args, list) else [args]
                    head = items[:1] if items and not isinstance(items[0], list) else []
                    out[op] = [*(rewrite(h) for h in head), *buckets(args)]
                else:
                    out[op] = rewrite(args)
            return out
        return rule

    result: dict[str, Any] = rewrite(targeting)
    return result


def render_flag(spec: FeatureFlagSpec, split: Mapping[str, int] | None = None) -> dict[str, Any]:
    """One flag in flagd's format, with ``split`` moved into its fractional rule."""
    targeting = dict(spec.targeting) if spec.targeting else None
    if split is not None:
        unknown = sorted(set(split) - set(spec.variants))
        if unknown:
            raise ValueError(f"the split names variants the flag does not have: {unknown}")
        targeting = with_split(targeting, split)
    entry: dict[str, Any] = {
        "state": spec.state,
        "variants": dict(spec.variants),
        "defaultVariant": spec.default_variant,
    }
    if targeting:
        entry["targeting"] = targeting
    return entry


@dataclass(frozen=True)
class RenderedFlags:
    """The flag file of one service, and what could not go into it."""

    document: dict[str, Any]
    served: dict[str, dict[str, int]]  # flag name -> variant -> percent
    problems: tuple[str, ...]

    def text(self) -> str:
        """``flags.json``: stable text, so an unchanged flag set is an unchanged ConfigMap."""
        return json.dumps(self.document, indent=2, sort_keys=True) + "\n"


def served_split(entry: Mapping[str, Any]) -> dict[str, int]:
    """What share of evaluations each variant gets from a rendered flag, where that can be
    told without a context: all to the default without targeting, the buckets of a
    ``fractional`` rule at the top; ``{}`` when disabled or when the targeting decides.

    >>> served_split({"state": "ENABLED", "defaultVariant": "off", "variants": {}})
    {'off': 100}
    >>> served_split({"state": "ENABLED", "targeting": {"fractional": [["on", 10], ["off", 90]]}})
    {'on': 10, 'off': 90}
    """
    if entry.get("state") == "DISABLED":
        return {}
    targeting = entry.get("targeting")
    if not targeting:
        return {str(entry.get("defaultVariant")): 100}
    if isinstance(targeting, Mapping) and list(targeting) == ["fractional"]:
        return {str(b[0]): int(b[1]) for b in fractional_buckets(targeting["fractional"])}
    return {}


def render_flags(
    names: Iterable[str],
    flags: Mapping[str, FeatureFlagSpec | None],
    overrides: Sequence[FlagOverride] = (),
    previous: Mapping[str, Any] | None = None,
) -> RenderedFlags:
    """The flag file of a service reading the flags ``names``.

    ``flags`` holds each FeatureFlag's valid spec (None: it is missing or invalid). A flag
    that is missing or invalid keeps its entry from ``previous`` (the file as rendered
    before), so a bad edit does not take a flag away from running code; an override that
    cannot apply leaves the flag's own split. Both are reported in ``problems``.
    """
    by_flag: dict[str, FlagOverride] = {}
    for item in overrides:  # release splits win over promoted ones
        if item.flag not in by_flag or item.scope == "release":
            by_flag[item.flag] = item
    old_flags = ((previous or {}).get("flags") or {}) if isinstance(previous, Mapping) else {}
    out: dict[str, Any] = {}
    served: dict[str, dict[str, int]] = {}
    problems: list[str] = []
    for name in sorted(set(names)):
        spec = flags.get(name)
        if spec is None:
            problems.append(f"FeatureFlag {name} is missing or invalid")
            key = name
            kept = old_flags.get(name) if isinstance(old_flags, Mapping) else None
            if kept is not None:
                out[key] = kept
                served[name] = served_split(kept)
            continue
        key = spec.flag_key(name)
        override = by_flag.get(name)
        try:
            entry = render_flag(spec, override.variants if override else None)
        except ValueError as exc:
            problems.append(f"the split of FeatureFlag {name} cannot apply: {exc}")
            entry = render_flag(spec)
        out[key] = entry
        served[name] = served_split(entry)
    for flag in sorted(set(by_flag) - set(names)):
        problems.append(f"a release sets FeatureFlag {flag}, which is not in spec.flags")
    return RenderedFlags({"flags": out}, served, tuple(problems))


def overrides_from_status(raw: Any) -> list[FlagOverride]:
    """``status.flagOverrides`` (wire form) as overrides; malformed entries are skipped."""
    result = []
    for item in raw or ():
        if not isinstance(item, Mapping) or not item.get("flag"):
            continue
        variants = item.get("variants") or {}
        result.append(
            FlagOverride(
                flag=str(item["flag"]),
                variants={str(k): int(v) for k, v in variants.items()},
                scope=str(item.get("scope") or "promoted"),
                version=item.get("version"),
                basis=item.get("basis"),
            )
        )
    return result


def overrides_to_status(overrides: Iterable[FlagOverride]) -> list[dict[str, Any]] | None:
    """Overrides in wire form (a list, so a merge patch replaces it whole); None if none."""
    items = [
        {
            "flag": o.flag,
            "variants": dict(o.variants),
            "scope": o.scope,
            **({"version": o.version} if o.version else {}),
            **({"basis": o.basis} if o.basis else {}),
        }
        for o in sorted(overrides, key=lambda o: (o.flag, o.scope))
    ]
    return items or None


def settle_overrides(
    previous: Sequence[FlagOverride],
    release: Mapping[str, Mapping[str, int]],
    *,
    version: str,
    promoted: bool,
    bases: Mapping[str, str | None],
) -> list[FlagOverride]:
    """The overrides in force after a pass of the release state machine.

    ``previous``: what status held; ``release``: the splits of the release in progress
    after the decision (empty after a rollback); ``promoted``: the release just finished,
    so its splits (``previous`` release entries) become promoted ones, with the flag's
    current basis; ``bases``: each flag's current :func:`flag_basis` (None: flag missing).
    Promoted splits whose basis no longer matches are dropped.

    >>> rel = [FlagOverride("f", {"on": 100, "off": 0}, "release", "v2")]
    >>> [(o.flag, o.scope, o.basis) for o in settle_overrides(
    ...     rel, {}, version="v2", promoted=True, bases={"f": "b1"})]
    [('f', 'promoted', 'b1')]
    >>> settle_overrides(rel, {}, version="v2", promoted=False, bases={"f": "b1"})
    []
    """
    promoted_now: dict[str, FlagOverride] = {
        o.flag: o
        for o in previous
        if o.scope == "promoted" and o.basis is not None and bases.get(o.flag) == o.basis
    }
    if promoted:
        for o in previous:
            if o.scope == "release" and bases.get(o.flag) is not None:
                promoted_now[o.flag] = FlagOverride(
                    o.flag, dict(o.variants), "promoted", o.version, bases[o.flag]
                )
    current = [
        FlagOverride(flag, dict(variants), "release", version)
        for flag, variants in release.items()
    ]
    return sorted([*promoted_now.values(), *current], key=lambda o: (o.flag, o.scope))
