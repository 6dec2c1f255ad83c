"""Leaving Argo Rollouts: its manifests turned into Pilotboat's, and what could not be.

Pure: parsed YAML documents in, a :class:`Conversion` out. Each Argo ``Rollout`` becomes a
``Microservice`` of the same name (its canary strategy inline, or in a ``RolloutPolicy``
when asked), and every field of the input that has no exact counterpart in Pilotboat's API
becomes one :class:`Dropped` naming its path and why. ``AnalysisTemplate`` and
``ClusterAnalysisTemplate`` documents are read for the Rollouts that refer to them; their
Prometheus metrics become golden-signal thresholds where the verdict stays the same for
every measured value. Every manifest returned has been through the API models, so it is
what the CRDs accept. A document that cannot be what it claims to be raises
:class:`ConversionError`, naming the field.

The rules, with their reasons, are in docs/convert.md; the ones that take judgement:

- ``version``: the pod template's ``app.kubernetes.io/version`` label, else the Rollout's,
  else the image tag, else the first 12 hex digits of the image digest.
- A condition ``result[0] < X`` (success) or ``result[0] >= X`` (failure) becomes a ceiling;
  Pilotboat's ceilings include their limit, so a strict ``<`` becomes the largest float
  below X (:func:`threshold`). A floor on a success rate becomes a ceiling on errors over
  ``1 - (query)``, exact for thresholds from 0.5 to 1.
- Which golden signal a metric is follows from the words in its name (:func:`signal_for`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

from pydantic import ValidationError

from pilotboat import API_VERSION
from pilotboat.api import MicroserviceSpec, RolloutPolicySpec
from pilotboat.api.common import (
    DURATION_PATTERN,
    LABEL_VALUE_PATTERN,
    format_duration,
    parse_duration,
)

__all__ = [
    "ARGO_API_VERSION",
    "Conversion",
    "ConversionError",
    "Dropped",
    "SourceDocument",
    "convert",
    "signal_for",
    "threshold",
]

ARGO_API_VERSION = "argoproj.io/v1alpha1"
_TEMPLATE_KINDS = ("AnalysisTemplate", "ClusterAnalysisTemplate")
_GATEWAY_PLUGIN = "argoproj-labs/gatewayAPI"
_VERSION_LABEL = "app.kubernetes.io/version"
_NAME_LABEL = "app.kubernetes.io/name"
_NO_FIELD = "the Microservice has no field for it"


@dataclass(frozen=True)
class SourceDocument:
    """One parsed YAML document and the file it came from."""

    source: str
    body: Any


@dataclass(frozen=True)
class Dropped:
    """A field of the input that the output does not carry, and why."""

    source: str
    object: str
    """``Rollout shop/orders``: the kind, and namespace/name (name alone without one)."""
    path: str
    """The field, ``spec.strategy.canary.trafficRouting.istio``; empty for the whole object."""
    why: str

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        return f"{self.source}: {self.object}: {where}not carried over: {self.why}"


class ConversionError(ValueError):
    """A document that cannot be read as what it claims to be."""

    def __init__(self, source: str, obj: str, path: str, message: str) -> None:
        self.source, self.object, self.path, self.message = source, obj, path, message
        where = f"{path}: " if path else ""
        super().__init__(f"{source}: {obj}: {where}{message}")


@dataclass(frozen=True)
class Conversion:
    """Pilotboat manifests (wire form, in input order) and what did not carry over."""

    manifests: tuple[dict[str, Any], ...]
    dropped: tuple[Dropped, ...]


@dataclass
class _Scope:
    """Where findings about one object go."""

    source: str
    object: str
    drops: list[Dropped]

    def drop(self, path: str, why: str) -> None:
        found = Dropped(self.source, self.object, path, why)
        if found not in self.drops:
            self.drops.append(found)

    def fail(self, path: str, message: str) -> NoReturn:
        raise ConversionError(self.source, self.object, path, message)

    def mapping(self, value: Any, path: str) -> Mapping[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.fail(path, f"expected a mapping, found {type(value).__name__}")
        return value

    def sequence(self, value: Any, path: str) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            self.fail(path, f"expected a list, found {type(value).__name__}")
        return value

    def integer(self, value: Any, path: str) -> int:
        if isinstance(value, str) and value.isdigit():
            return int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(path, f"expected an integer, found {value!r}")
        return value

    def text(self, value: Any, path: str) -> str:
        if not isinstance(value, str) or not value:
            self.fail(path, f"expected a non-empty string, found {value!r}")
        return value

    def rest(self, node: Mapping[str, Any], path: str, handled: Iterable[str],
             whys: Mapping[str, str], default: str = _NO_FIELD) -> None:
        """Drop every key of ``node`` not in ``handled``."""
        keep = set(handled)
        for key in node:
            if key not in keep:
                self.drop(_join(path, key), whys.get(key, default))


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    if re.fullmatch(r"[A-Za-z0-9_-]+", key):
        return f"{path}.{key}" if path else key
    return f'{path}["{key}"]'


def _describe(kind: str, body: Mapping[str, Any]) -> str:
    meta = body.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    name, namespace = meta.get("name") or "?", meta.get("namespace")
    if namespace and kind != "ClusterAnalysisTemplate":
        return f"{kind} {namespace}/{name}"
    return f"{kind} {name}"


# --- thresholds ----------------------------------------------------------------------------


_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_CONDITION = re.compile(rf"^\s*result(?:\[0\])?\s*(<=|>=|<|>)\s*({_NUMBER})\s*$")
_CONDITION_REVERSED = re.compile(rf"^\s*({_NUMBER})\s*(<=|>=|<|>)\s*result(?:\[0\])?\s*$")
_FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}
_NEGATE = {"<": ">=", "<=": ">", ">": "<=", ">=": "<"}


def threshold(op: str, limit: float) -> float:
    """The inclusive limit that passes exactly the values ``value op limit`` passes.

    Pilotboat's ceilings pass ``value <= max`` and its floors ``value >= min``; a strict
    comparison moves the limit by one float, so the two agree on every float.

    >>> threshold("<=", 0.05)
    0.05
    >>> threshold("<", 0.05)
    0.049999999999999996
    >>> threshold(">", 1.0)
    1.0000000000000002
    """
    if op == "<":
        return math.nextafter(limit, -math.inf)
    if op == ">":
        return math.nextafter(limit, math.inf)
    return limit


def _parse_condition(text: str) -> tuple[str, float] | None:
    """``(op, X)`` for ``result[0] op X`` (or ``X op result[0]``, turned round)."""
    match = _CONDITION.match(text)
    if match:
        return match.group(1), float(match.group(2))
    match = _CONDITION_REVERSED.match(text)
    if match:
        return _FLIP[match.group(2)], float(match.group(1))
    return None


def _passing(metric: Mapping[str, Any]) -> tuple[str, float] | str:
    """The comparison a value passes, ``(op, X)``, or why there is none that is exact."""
    success, failure = metric.get("successCondition"), metric.get("failureCondition")
    parsed = {}
    for key, text in (("successCondition", success), ("failureCondition", failure)):
        if text is None:
            continue
        found = _parse_condition(str(text))
        if found is None:
            return (f"{key} {text!r} is not a comparison of result[0] with a number,"
                    " the only form Pilotboat's thresholds express")
        parsed[key] = found
    if not parsed:
        return "no successCondition or failureCondition: nothing to judge"
    if "successCondition" in parsed and "failureCondition" in parsed:
        (op, x), (fop, fx) = parsed["successCondition"], parsed["failureCondition"]
        if fx != x or fop != _NEGATE[op]:
            return ("successCondition and failureCondition leave values that meet neither"
                    " (Inconclusive in Argo); a Pilotboat threshold passes or fails")
        return op, x
    if "successCondition" in parsed:
        return parsed["successCondition"]
    op, x = parsed["failureCondition"]
    return _NEGATE[op], x


_WORDS: tuple[tuple[str, str], ...] = (
    ("success", r"success|availab"),
    ("errors", r"error|fail|5xx"),
    ("latency", r"latenc|duration|response.?time|p\d\d"),
    ("traffic", r"traffic|throughput|rps|request.?rate|requests"),
    ("saturation", r"saturat|cpu|memory|utili[sz]|in.?flight|queue|load"),
)


def signal_for(name: str, ceiling: bool) -> str | None:
    """Which golden signal a metric of this name is, judged against a ceiling or a floor:
    ``errors``, ``latency`` or ``saturation`` for ceilings, ``traffic`` or ``success`` (a
    success rate, judged as errors over ``1 - rate``) for floors; None when its name does
    not say.

    >>> signal_for("error-rate", True), signal_for("success-rate", False)
    ('errors', 'success')
    >>> signal_for("p99-latency", True), signal_for("requests-per-second", False)
    ('latency', 'traffic')
    >>> print(signal_for("canary-check", True))
    None
    """
    wanted = ("errors", "latency", "saturation") if ceiling else ("success", "traffic")
    lowered = name.lower()
    return next((s for s, words in _WORDS if s in wanted and re.search(words, lowered)), None)


@dataclass(frozen=True)
class _Signal:
    name: str
    body: dict[str, Any]


def _signal(metric_name: str, passing: tuple[str, float], query: str) -> _Signal | str:
    """The Pilotboat signal for a metric that passes ``value op X``, or why there is none."""
    op, x = passing
    ceiling = op in ("<", "<=")
    kind = signal_for(metric_name, ceiling)
    if kind is None:
        bound = "an upper" if ceiling else "a lower"
        return (f"{bound} bound on a metric whose name does not say which golden signal it is"
                " (name it after errors, latency or saturation for an upper bound, success or"
                " traffic for a lower one)")
    if kind == "success":
        if not 0.5 <= x <= 1:
            return (f"a success rate at least {x:g} is an error ratio at most 1 - {x:g} exactly"
                    " only for thresholds from 0.5 to 1")
        limit = threshold("<" if op == ">" else "<=", 1 - x)
        return _bounded("errors", {"maxRatio": limit, "query": f"1 - ({query})"}, 0, 1)
    limit = threshold(op, x)
    if kind == "errors":
        return _bounded(kind, {"maxRatio": limit, "query": query}, 0, 1)
    if kind == "latency":
        body: dict[str, Any] = {"maxSeconds": limit, "query": query}
        quantile = re.search(r"p(\d\d)", metric_name.lower())
        if quantile and int(quantile.group(1)) > 0:
            body = {"quantile": int(quantile.group(1)) / 100, **body}
        return _bounded(kind, body, math.ulp(0), math.inf)
    key = "minRate" if kind == "traffic" else "max"
    return _bounded(kind, {key: limit, "query": query}, 0, math.inf)


def _bounded(kind: str, body: dict[str, Any], low: float, high: float) -> _Signal | str:
    limit = next(v for k, v in body.items() if k not in ("query", "quantile"))
    if not low <= limit <= high:
        return f"{kind} threshold {limit!r} is outside what Pilotboat accepts for {kind}"
    return _Signal(kind, body)


# --- analysis templates --------------------------------------------------------------------


@dataclass(frozen=True)
class _Arg:
    """An argument's value for a query: a literal, a Pilotboat placeholder, or why not."""

    value: str | None = None
    why: str | None = None


@dataclass
class _Judgement:
    """What one analysis (the metrics of its templates) becomes in Pilotboat."""

    signals: dict[str, dict[str, Any]] = field(default_factory=dict)
    limits: dict[str, Any] = field(default_factory=dict)
    address: str | None = None
    count: int | None = None
    interval: str | None = None
    origin: str = ""
    origin_scope: _Scope | None = None
    origin_path: str = ""

    def template(self) -> dict[str, Any]:
        body: dict[str, Any] = {"interval": self.interval or "30s", **self.limits,
                                "minSampleSize": 0}
        if self.address:
            body["prometheus"] = {"address": self.address}
        body["signals"] = self.signals
        return body

    def same_template(self, other: _Judgement) -> bool:
        return (self.signals, self.limits, self.address) == (
            other.signals, other.limits, other.address)


@dataclass(frozen=True)
class _Template:
    kind: str
    namespace: str | None
    name: str
    spec: Mapping[str, Any]
    scope: _Scope


_ARG = re.compile(r"\{\{\s*args\.([A-Za-z0-9_.-]+)\s*\}\}")
_JINJA = re.compile(r"\{\{|\{%|\{#")
_METRIC_WHYS = {
    "initialDelay": "Pilotboat measures one interval after the analysis step starts",
    "consecutiveSuccessLimit": "Pilotboat counts passes, not passes in a row",
    "dryRun": "Pilotboat has no dry-run analysis",
}
_PROMETHEUS_WHYS = {
    "timeout": "Pilotboat's Prometheus queries time out after 5 seconds",
    "insecure": "Pilotboat verifies the TLS certificate of an https address",
    "headers": "Pilotboat sends no extra headers to Prometheus",
    "authentication": "Pilotboat asks Prometheus without authentication",
}
_LIMITS = (("failureLimit", 0), ("inconclusiveLimit", 0), ("consecutiveErrorLimit", 4))


def _substitute(text: str, args: Mapping[str, _Arg]) -> str | tuple[str, str]:
    """``text`` with ``{{args.x}}`` replaced, or (the argument, why) when one cannot be."""
    if _JINJA.search(_ARG.sub("", text)):
        return "", "it holds {{ }} that is not an argument; Pilotboat would read it as a template"
    missing = [m for m in _ARG.findall(text) if m not in args or args[m].value is None]
    if missing:
        arg = args.get(missing[0], _Arg(why="no value is given for it"))
        return missing[0], arg.why or "no value is given for it"
    for used in _ARG.findall(text):
        literal = str(args[used].value)
        if not literal.startswith("{{ ") and _JINJA.search(literal):
            return "", "an argument holds {{ }}; Pilotboat would read it as a template"
    return _ARG.sub(lambda m: str(args[m.group(1)].value), text)


def _template_args(template: _Template, given: Mapping[str, _Arg]) -> dict[str, _Arg]:
    args: dict[str, _Arg] = {}
    for i, arg in enumerate(template.scope.sequence(template.spec.get("args"), "spec.args")):
        arg = template.scope.mapping(arg, f"spec.args[{i}]")
        name = template.scope.text(arg.get("name"), f"spec.args[{i}].name")
        if "value" in arg:
            args[name] = _Arg(str(arg["value"]))
        elif "valueFrom" in arg:
            args[name] = _Arg(why=f"spec.args[{i}].valueFrom: Pilotboat's queries take no"
                                  " values from Secrets")
        else:
            args[name] = _Arg(why="no value is given for it")
    return args | dict(given)


def _metric_query(template: _Template, i: int, metric: Mapping[str, Any],
                  args: Mapping[str, _Arg]) -> tuple[str, str | None] | None:
    """The metric's PromQL and Prometheus address with arguments filled in, or None (dropped)."""
    scope, path = template.scope, f"spec.metrics[{i}]"
    provider = scope.mapping(metric.get("provider"), f"{path}.provider")
    if "prometheus" not in provider:
        kinds = ", ".join(provider) or "none"
        scope.drop(f"{path}.provider", f"Pilotboat reads Prometheus only, not {kinds}")
        return None
    prometheus = scope.mapping(provider["prometheus"], f"{path}.provider.prometheus")
    ppath = f"{path}.provider.prometheus"
    scope.rest(prometheus, ppath, ("query", "address"), _PROMETHEUS_WHYS)
    query = _substitute(scope.text(prometheus.get("query"), f"{ppath}.query"), args)
    address = _substitute(str(prometheus.get("address") or ""), args)
    for key, result in (("query", query), ("address", address)):
        if isinstance(result, tuple):
            arg, why = result
            about = f"args.{arg}: {why}" if arg else why
            scope.drop(f"{path}", f"its {key} cannot be written for Pilotboat: {about}")
            return None
    assert isinstance(query, str) and isinstance(address, str)
    return query.strip(), address or None


def _limits(template: _Template, i: int, metric: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, default in _LIMITS:
        value = metric.get(key, default)
        out[key] = template.scope.integer(value, f"spec.metrics[{i}].{key}")
        if out[key] < 0:
            template.scope.drop(f"spec.metrics[{i}].{key}",
                                f"Pilotboat's limits are never negative; {default} applies")
            out[key] = default
    return out


def _interval(scope: _Scope, value: Any, path: str) -> str | None:
    if value is None:
        return None
    text = f"{value}s" if isinstance(value, int) or str(value).isdigit() else str(value)
    if not re.fullmatch(DURATION_PATTERN, text):
        scope.fail(path, f"not a duration: {value!r} (e.g. 30s, 5m, 1h)")
    return format_duration(parse_duration(text))


def _merge_metric(judgement: _Judgement, template: _Template, i: int,
                  metric: Mapping[str, Any], signal: _Signal, address: str | None) -> None:
    """Add one converted metric; the first metric sets what Pilotboat has once per analysis."""
    scope, path = template.scope, f"spec.metrics[{i}]"
    limits = _limits(template, i, metric)
    count = None if metric.get("count") is None else scope.integer(metric["count"],
                                                                  f"{path}.count")
    interval = _interval(scope, metric.get("interval"), f"{path}.interval")
    if not judgement.signals:
        judgement.limits, judgement.count, judgement.interval = limits, count, interval
        judgement.address, judgement.origin = address, f"{path} of {scope.object}"
        judgement.origin_scope, judgement.origin_path = scope, path
    else:
        mine = {**limits, "count": count, "interval": interval, "address": address}
        first = {**judgement.limits, "count": judgement.count, "interval": judgement.interval,
                 "address": judgement.address}
        for key in mine:
            if mine[key] != first[key] or (key.endswith("Limit") and mine[key]
                                           and key != "consecutiveErrorLimit"):
                where = "provider.prometheus.address" if key == "address" else key
                scope.drop(f"{path}.{where}",
                           f"Pilotboat has one {key} for all the signals of an analysis, and"
                           f" counts it over all of them: {judgement.origin}'s applies")
    judgement.signals[signal.name] = signal.body


def _judge_template(template: _Template, args: Mapping[str, _Arg],
                    judgement: _Judgement) -> None:
    scope = template.scope
    scope.rest(template.spec, "spec", ("metrics", "args"), {
        "dryRun": "Pilotboat has no dry-run analysis",
        "measurementRetention": "Pilotboat keeps the last ten measurements of each signal",
    })
    metrics = scope.sequence(template.spec.get("metrics"), "spec.metrics")
    for i, metric in enumerate(metrics):
        metric = scope.mapping(metric, f"spec.metrics[{i}]")
        path = f"spec.metrics[{i}]"
        name = scope.text(metric.get("name"), f"{path}.name")
        scope.rest(metric, path, ("name", "provider", "successCondition", "failureCondition",
                                  "interval", "count", *(k for k, _ in _LIMITS)), _METRIC_WHYS)
        found = _metric_query(template, i, metric, args)
        if found is None:
            continue
        passing = _passing(metric)
        signal = _signal(name, passing, found[0]) if isinstance(passing, tuple) else passing
        if isinstance(signal, str):
            scope.drop(path, signal)
        elif signal.name in judgement.signals:
            scope.drop(path, f"Pilotboat judges one query per golden signal, and {signal.name}"
                             " is already taken by an earlier metric")
        else:
            _merge_metric(judgement, template, i, metric, signal, found[1])


# --- rollouts -----------------------------------------------------------------------------


_ROLLOUT_WHYS = {
    "minReadySeconds": _NO_FIELD,
    "revisionHistoryLimit": "Pilotboat keeps no old ReplicaSets: stable and canary only",
    "progressDeadlineAbort": "Pilotboat always rolls back a canary past its progress deadline",
    "paused": "a Microservice is never paused as a whole; use a pause step",
    "restartAt": "Pilotboat has no scheduled restarts",
    "rollbackWindow": "Pilotboat always releases a new revision through the canary steps",
}
_CANARY_WHYS = {
    "maxUnavailable": "Pilotboat's Deployments roll with Kubernetes' defaults",
    "canaryMetadata": "Pilotboat labels canary pods itself",
    "stableMetadata": "Pilotboat labels stable pods itself",
    "scaleDownDelaySeconds": "Pilotboat scales the canary down as soon as it is promoted",
    "abortScaleDownDelaySeconds": "Pilotboat scales the canary down as soon as it is aborted",
    "dynamicStableScale": "Pilotboat keeps the stable replicas when a gateway splits traffic",
    "antiAffinity": "Pilotboat sets no anti-affinity between tracks",
}
_STEP_WHYS = {
    "setCanaryScale": "Pilotboat sizes the canary from the weight; it has no separate scale",
    "setHeaderRoute": "Pilotboat routes by weight only, not by header",
    "setMirrorRoute": "Pilotboat's mirror step copies a share of all requests, without match"
                      " rules",
    "experiment": "Pilotboat has no experiments",
    "plugin": "Pilotboat has no step plugins",
}
_MESH = "Pilotboat routes by replica ratio or Gateway API only; it splits by replica ratio instead"
_POD_WHYS = {
    "initContainers": "Pilotboat runs one container per pod, without init containers",
    "volumes": "Pilotboat mounts no volumes of yours",
    "affinity": _NO_FIELD,
    "serviceAccountName": "Pilotboat's pods run as the namespace's default ServiceAccount",
    "securityContext": _NO_FIELD,
}
_CONTAINER_WHYS = {
    "command": "Pilotboat runs the image's own entrypoint",
    "args": "Pilotboat runs the image's own entrypoint",
    "livenessProbe": "Pilotboat sets a readiness probe only",
    "startupProbe": "Pilotboat sets a readiness probe only",
    "envFrom": "Pilotboat's env holds name and value pairs only",
    "volumeMounts": "Pilotboat mounts no volumes of yours",
}
_PROBE_DEFAULTS = {"timeoutSeconds": 1, "successThreshold": 1, "failureThreshold": 3,
                   "initialDelaySeconds": 0}
_SERVER_FIELDS = ("uid", "resourceVersion", "generation", "creationTimestamp", "managedFields",
                  "selfLink")


@dataclass
class _Context:
    templates: list[_Template]
    used: set[int]
    drops: list[Dropped]


def _find_template(ctx: _Context, ref: Mapping[str, Any], namespace: str | None
                   ) -> _Template | None:
    kind = "ClusterAnalysisTemplate" if ref.get("clusterScope") else "AnalysisTemplate"
    found = [t for t in ctx.templates if t.kind == kind and t.name == ref.get("templateName")]
    exact = [t for t in found if kind == "ClusterAnalysisTemplate" or t.namespace == namespace]
    loose = [t for t in found if t.namespace is None or namespace is None]
    pick = next(iter(exact or loose), None)
    if pick is not None:
        ctx.used.add(id(pick))
    return pick


def _rollout_args(scope: _Scope, node: Mapping[str, Any], path: str) -> dict[str, _Arg]:
    args: dict[str, _Arg] = {}
    for i, arg in enumerate(scope.sequence(node.get("args"), f"{path}.args")):
        arg = scope.mapping(arg, f"{path}.args[{i}]")
        key = scope.text(arg.get("name"), f"{path}.args[{i}].name")
        source = scope.mapping(arg.get("valueFrom"), f"{path}.args[{i}].valueFrom")
        field_ref = scope.mapping(source.get("fieldRef"), f"{path}.args[{i}].valueFrom.fieldRef")
        field_path = field_ref.get("fieldPath")
        if "value" in arg:
            args[key] = _Arg(str(arg["value"]))
        elif field_path == "metadata.name":
            args[key] = _Arg("{{ service }}")
        elif field_path == "metadata.namespace":
            args[key] = _Arg("{{ namespace }}")
        else:
            why = ("Argo's pod-template hash labels no Pilotboat pod; Pilotboat's queries"
                   " tell the canary by {{ revision }} (the pods' pilotboat.dev/revision)"
                   if "podTemplateHashValue" in source
                   else f"Pilotboat cannot fill in {field_path or 'this value'}")
            scope.drop(f"{path}.args[{i}].valueFrom", why)
            args[key] = _Arg(why=f"{path}.args[{i}] could not be carried over")
    return args


def _judge(ctx: _Context, scope: _Scope, node: Mapping[str, Any], path: str,
           namespace: str | None) -> _Judgement | None:
    """The analysis of a step (or the background one); None when nothing of it carries."""
    scope.rest(node, path, ("templates", "args", "startingStep"), {
        "dryRun": "Pilotboat has no dry-run analysis",
        "measurementRetention": "Pilotboat keeps the last ten measurements of each signal",
        "analysisRunMetadata": "Pilotboat creates no AnalysisRun objects",
    })
    args = _rollout_args(scope, node, path)
    judgement = _Judgement()
    for i, ref in enumerate(scope.sequence(node.get("templates"), f"{path}.templates")):
        ref = scope.mapping(ref, f"{path}.templates[{i}]")
        template = _find_template(ctx, ref, namespace)
        if template is None:
            kind = "ClusterAnalysisTemplate" if ref.get("clusterScope") else "AnalysisTemplate"
            scope.drop(f"{path}.templates[{i}]", f"{kind} {ref.get('templateName')} is not in"
                                                 " the input; give its file too")
            continue
        _judge_template(template, _template_args(template, args), judgement)
    return judgement if judgement.signals else None


def _intervals(judgement: _Judgement) -> tuple[int | None, str | None]:
    """Passes an analysis step waits for, from Argo's count and limits; or why none fits."""
    failures = judgement.limits.get("failureLimit", 0)
    inconclusive = judgement.limits.get("inconclusiveLimit", 0)
    if judgement.count is None:
        if judgement.interval is None:
            return 1, None
        return None, ("without count Argo measures until the analysis is stopped; a Pilotboat"
                      " analysis step ends after its intervals pass (3 by default)")
    if failures and inconclusive:
        return None, ("with both failureLimit and inconclusiveLimit set, no number of passes"
                      " gives Argo's verdicts; the step waits for 3 passes")
    if judgement.count - failures - inconclusive < 1:
        return None, ("a count no larger than the limit never fails in Argo; Pilotboat waits"
                      " for 3 passes")
    return judgement.count - failures - inconclusive, None


@dataclass
class _Steps:
    steps: list[dict[str, Any]] = field(default_factory=list)
    analysis: _Judgement | None = None
    weight: int = 0


def _pause(scope: _Scope, node: Any, path: str) -> dict[str, Any]:
    node = scope.mapping(node, path)
    scope.rest(node, path, ("duration",), {})
    if node.get("duration") is None:
        return {"untilPromoted": True}
    return {"duration": _interval(scope, node["duration"], f"{path}.duration")}


def _analysis_step(ctx: _Context, scope: _Scope, out: _Steps, node: Any, path: str,
                   namespace: str | None) -> None:
    judgement = _judge(ctx, scope, scope.mapping(node, path), path, namespace)
    if judgement is None:
        scope.drop(path, "none of its metrics could be carried over; the step is left out"
                         " rather than judged by Pilotboat's default signals")
        return
    step: dict[str, Any] = {}
    intervals, why = _intervals(judgement)
    if why and judgement.origin_scope is not None:
        field_name = "count" if judgement.count is not None else "interval"
        judgement.origin_scope.drop(f"{judgement.origin_path}.{field_name}", why)
    if intervals is not None:
        step["intervals"] = intervals
    if out.analysis is None:
        out.analysis = judgement
    elif not out.analysis.same_template(judgement):
        scope.drop(path, "Pilotboat judges every analysis step by one set of signals: those"
                         f" of {out.analysis.origin} apply here too")
    if judgement.interval and judgement.interval != (out.analysis.interval or "30s"):
        step["interval"] = judgement.interval
    out.steps.append({"analysis": step})


def _step(ctx: _Context, scope: _Scope, out: _Steps, node: Mapping[str, Any], path: str,
          namespace: str | None) -> None:
    if len(node) != 1:
        scope.fail(path, f"a step has exactly one field, found {', '.join(node) or 'none'}")
    kind, value = next(iter(node.items()))
    if kind == "setWeight":
        weight = scope.integer(value, f"{path}.setWeight")
        if not 0 <= weight <= 100:
            scope.fail(f"{path}.setWeight", f"a percentage from 0 to 100, not {weight}")
        if weight < out.weight:
            scope.drop(f"{path}.setWeight", f"Pilotboat's weights never decrease, and {weight}"
                                            f" follows {out.weight}")
            return
        out.weight = weight
        out.steps.append({"setWeight": weight})
    elif kind == "pause":
        out.steps.append({"pause": _pause(scope, value, f"{path}.pause")})
    elif kind == "analysis":
        _analysis_step(ctx, scope, out, value, f"{path}.analysis", namespace)
    else:
        scope.drop(f"{path}.{kind}", _STEP_WHYS.get(kind, "Pilotboat has no such step"))


def _gateway(scope: _Scope, config: Any, path: str, namespace: str | None,
             port: int) -> dict[str, Any] | None:
    config = scope.mapping(config, path)
    routes = [scope.mapping(r, f"{path}.httpRoutes[{i}]").get("name") for i, r in
              enumerate(scope.sequence(config.get("httpRoutes"), f"{path}.httpRoutes"))]
    route = config.get("httpRoute") or (routes[0] if routes else None)
    scope.rest(config, path, ("httpRoute", "httpRoutes", "namespace"), {},
               "Pilotboat splits one HTTPRoute by weight, and nothing else")
    for i in range(1, len(routes)):
        scope.drop(f"{path}.httpRoutes[{i}]", "Pilotboat splits one HTTPRoute per Microservice")
    if config.get("namespace") not in (None, namespace):
        scope.drop(f"{path}.namespace", "Pilotboat's HTTPRoute is in the Microservice's"
                                        " namespace")
    if route is None:
        scope.drop(path, "no HTTPRoute named; it splits by replica ratio instead")
        return None
    return {"gatewayAPI": {"httpRoute": scope.text(route, f"{path}.httpRoute"), "port": port}}


def _traffic(scope: _Scope, node: Any, path: str, namespace: str | None,
             port: int) -> dict[str, Any] | None:
    node = scope.mapping(node, path)
    routing = None
    plugins = scope.mapping(node.get("plugins"), f"{path}.plugins")
    for plugin, config in plugins.items():
        if plugin == _GATEWAY_PLUGIN:
            routing = _gateway(scope, config, _join(f"{path}.plugins", plugin), namespace, port)
        else:
            scope.drop(_join(f"{path}.plugins", plugin), _MESH)
    scope.rest(node, path, ("plugins",), {"managedRoutes": "Pilotboat sets no header routes"},
               _MESH)
    return routing


def _canary(ctx: _Context, scope: _Scope, node: Any, name: str, namespace: str | None,
            port: int) -> dict[str, Any] | None:
    path = "spec.strategy.canary"
    node = scope.mapping(node, path)
    scope.rest(node, path, ("steps", "analysis", "trafficRouting", "maxSurge", *_SERVICES),
               _CANARY_WHYS)
    out = _Steps()
    starts: list[int] = []  # where each Argo step begins among the converted steps
    for i, step in enumerate(scope.sequence(node.get("steps"), f"{path}.steps")):
        starts.append(len(out.steps))
        _step(ctx, scope, out, scope.mapping(step, f"{path}.steps[{i}]"), f"{path}.steps[{i}]",
              namespace)
    background = None
    if node.get("analysis") is not None:
        background = _background(ctx, scope, out, node["analysis"], f"{path}.analysis",
                                 namespace, starts)
    if not out.steps:
        scope.rest(node, path, ("steps", "analysis"), {}, "without steps a Microservice has no"
                   " canary release: a new version replaces the old one")
        return None
    canary: dict[str, Any] = {"steps": out.steps}
    if out.analysis is not None:
        canary["analysis"] = out.analysis.template()
    if background is not None:
        canary["backgroundAnalysis"] = background
    routing = _traffic(scope, node.get("trafficRouting"), f"{path}.trafficRouting", namespace,
                       port)
    canary["trafficRouting"] = routing or {"replicaRatio": _surge(scope, node, path)}
    if routing is not None and "maxSurge" in node:
        scope.drop(f"{path}.maxSurge", "with Gateway API routing Pilotboat's stable track keeps"
                   " all its pods and the canary's are extra already: there is no surge to set")
    _services(scope, node, path, name, gateway=routing is not None)
    return canary


def _background(ctx: _Context, scope: _Scope, out: _Steps, node: Any, path: str,
                namespace: str | None, starts: Sequence[int]) -> dict[str, Any] | None:
    """``backgroundAnalysis`` for Argo's ``strategy.canary.analysis``: its metrics judge the
    canary (as ``rollout.canary.analysis``, unless analysis steps set other signals) from the
    converted step its ``startingStep`` begins at. None when none of its metrics carry."""
    node = scope.mapping(node, path)
    judgement = _judge(ctx, scope, node, path, namespace)
    if judgement is None or not out.steps:
        scope.drop(path, "none of its metrics could be carried over: no background analysis")
        return None
    if out.analysis is None:
        out.analysis = judgement
    elif not out.analysis.same_template(judgement):
        scope.drop(path, "Pilotboat judges the background by the analysis steps' one set of"
                         f" signals: those of {out.analysis.origin} apply there too")
    first = scope.integer(node.get("startingStep", 0), f"{path}.startingStep")
    if first < 0:
        scope.fail(f"{path}.startingStep", f"expected 0 or more, found {first}")
    start = starts[first] if first < len(starts) else len(out.steps)
    return {"startingStep": min(start, len(out.steps) - 1)}


def _surge(scope: _Scope, node: Mapping[str, Any], path: str) -> dict[str, Any]:
    """``replicaRatio`` with Argo's ``maxSurge`` where the Rollout sets one (Argo's default of
    25 % is not written: Pilotboat adds no pods unless asked)."""
    if "maxSurge" not in node:
        return {}
    value = node["maxSurge"]
    if isinstance(value, str) and re.fullmatch(r"(100|[1-9]?[0-9])%", value):
        return {"maxSurge": value}
    return {"maxSurge": scope.integer(value, f"{path}.maxSurge")}


_SERVICES = {"stableService": "stable", "canaryService": "canary"}


def _services(scope: _Scope, node: Mapping[str, Any], path: str, name: str,
              gateway: bool) -> None:
    """Argo's Service names carry over where they are the ones Pilotboat creates."""
    for key, track in _SERVICES.items():
        if key not in node:
            continue
        if not gateway:
            scope.drop(f"{path}.{key}", f"with replica-ratio routing Pilotboat has one"
                                        f" Service, {name}, over both tracks")
        elif node[key] != f"{name}-{track}":
            scope.drop(f"{path}.{key}", f"Pilotboat's {track} Service is {name}-{track}"
                       + ("; the HTTPRoute's rules must send to it" if track == "stable" else
                          "; Pilotboat adds it to the rules that send to the stable one"))


def _env(scope: _Scope, items: Any, path: str) -> list[dict[str, str]]:
    env = []
    for i, item in enumerate(scope.sequence(items, path)):
        item = scope.mapping(item, f"{path}[{i}]")
        scope.rest(item, f"{path}[{i}]", ("name", "value"),
                   {"valueFrom": "Pilotboat's env holds literal values only"})
        if "valueFrom" in item:
            continue
        value = item.get("value", "")
        if not isinstance(value, str):
            scope.fail(f"{path}[{i}].value", f"expected a string, found {value!r}")
        env.append({"name": scope.text(item.get("name"), f"{path}[{i}].name"), "value": value})
    return env


def _ports(scope: _Scope, items: Any, path: str) -> list[dict[str, Any]]:
    ports = []
    for i, item in enumerate(scope.sequence(items, path)):
        item = scope.mapping(item, f"{path}[{i}]")
        scope.rest(item, f"{path}[{i}]", ("containerPort", "name", "protocol"),
                   {"hostPort": "Pilotboat's pods use no host ports",
                    "hostIP": "Pilotboat's pods use no host ports"})
        number = scope.integer(item.get("containerPort"), f"{path}[{i}].containerPort")
        protocol = item.get("protocol", "TCP")
        if protocol not in ("TCP", "UDP"):
            scope.drop(f"{path}[{i}]", f"Pilotboat's ports are TCP or UDP, not {protocol}")
            continue
        port = {"name": item.get("name") or f"port-{number}", "port": number}
        ports.append(port | ({"protocol": protocol} if protocol != "TCP" else {}))
    return ports


def _probe(scope: _Scope, node: Any, path: str) -> dict[str, Any] | None:
    node = scope.mapping(node, path)
    if "httpGet" not in node:
        kinds = ", ".join(k for k in node if k in ("exec", "tcpSocket", "grpc")) or "no httpGet"
        scope.drop(path, f"Pilotboat's readiness probe is an HTTP GET, not {kinds}")
        return None
    for key, default in _PROBE_DEFAULTS.items():
        if key in node and node[key] != default:
            scope.drop(f"{path}.{key}", f"Pilotboat keeps Kubernetes' default, {default}")
    scope.rest(node, path, ("httpGet", "periodSeconds", *_PROBE_DEFAULTS), {})
    get = scope.mapping(node["httpGet"], f"{path}.httpGet")
    scope.rest(get, f"{path}.httpGet", ("path", "port"), {}, "Pilotboat probes plain HTTP GET"
               " on the pod's address without headers")
    if get.get("port") is None:
        scope.fail(f"{path}.httpGet.port", "a probe needs a port")
    period = scope.integer(node.get("periodSeconds", 10), f"{path}.periodSeconds")
    return {"path": get.get("path") or "/", "port": get["port"], "periodSeconds": period}


def _tolerations(scope: _Scope, items: Any, path: str) -> list[dict[str, Any]]:
    out = []
    for i, item in enumerate(scope.sequence(items, path)):
        item = scope.mapping(item, f"{path}[{i}]")
        scope.rest(item, f"{path}[{i}]", ("key", "operator", "value", "effect"),
                   {"tolerationSeconds": "Pilotboat's tolerations last as long as the taint"})
        out.append({k: item[k] for k in ("key", "operator", "value", "effect") if k in item})
    return out


def _container(scope: _Scope, node: Mapping[str, Any], path: str) -> dict[str, Any]:
    scope.rest(node, path, ("name", "image", "imagePullPolicy", "env", "ports",
                            "readinessProbe", "resources"), _CONTAINER_WHYS)
    spec: dict[str, Any] = {"image": scope.text(node.get("image"), f"{path}.image")}
    if "imagePullPolicy" in node:
        spec["imagePullPolicy"] = node["imagePullPolicy"]
    if "ports" in node:
        spec["ports"] = _ports(scope, node["ports"], f"{path}.ports")
    if "env" in node:
        spec["env"] = _env(scope, node["env"], f"{path}.env")
    resources = scope.mapping(node.get("resources"), f"{path}.resources")
    scope.rest(resources, f"{path}.resources", ("requests", "limits"), {})
    if resources.get("requests") or resources.get("limits"):
        spec["resources"] = {k: dict(resources[k]) for k in ("requests", "limits")
                             if resources.get(k)}
    if "readinessProbe" in node:
        probe = _probe(scope, node["readinessProbe"], f"{path}.readinessProbe")
        if probe is not None:
            spec["readinessProbe"] = probe
    return spec


def _image_version(image: str) -> str | None:
    name, _, digest = image.partition("@")
    tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else None
    if tag and re.fullmatch(LABEL_VALUE_PATTERN, tag):
        return tag
    hexdigits = digest.partition(":")[2]
    return hexdigits[:12] if len(hexdigits) >= 12 else None


def _version(scope: _Scope, template_labels: Mapping[str, Any],
             labels: Mapping[str, Any], image: str) -> str:
    for where, found in (("spec.template.metadata.labels", template_labels),
                         ("metadata.labels", labels)):
        value = found.get(_VERSION_LABEL)
        if value is not None:
            if not re.fullmatch(LABEL_VALUE_PATTERN, str(value)):
                scope.fail(_join(where, _VERSION_LABEL), f"not a label value: {value!r}")
            return str(value)
    version = _image_version(image)
    if version is None:
        scope.fail("spec.template.spec.containers[0].image", f"no version: {image!r} has no"
                   f" tag or digest, and no {_VERSION_LABEL} label is set")
    return version


def _pod(scope: _Scope, template: Mapping[str, Any], selector: Mapping[str, Any]
         ) -> tuple[dict[str, Any], Mapping[str, Any]]:
    """The Microservice fields for a Rollout's pod template: the short fields where they say
    all of it; else the template itself, whole, as ``spec.template`` (volumes, sidecars,
    probes, securityContext and the rest carry over as written)."""
    meta = scope.mapping(template.get("metadata"), "spec.template.metadata")
    scope.rest(meta, "spec.template.metadata", ("labels", "annotations"), {})
    labels = scope.mapping(meta.get("labels"), "spec.template.metadata.labels")
    own = {*selector, _VERSION_LABEL, _NAME_LABEL}
    extra_labels = {str(k): str(v) for k, v in labels.items() if k not in own}
    annotations = {str(k): str(v) for k, v in scope.mapping(
        meta.get("annotations"), "spec.template.metadata.annotations").items()}
    trial = _Scope(scope.source, scope.object, [])
    spec = _short_fields(trial, template)
    pod_meta = {k: v for k, v in (("labels", extra_labels), ("annotations", annotations)) if v}
    if trial.drops:
        spec = _whole_template(scope, template)
    if pod_meta:
        spec.setdefault("template", {})["metadata"] = pod_meta
    return spec, labels


def _whole_template(scope: _Scope, template: Mapping[str, Any]) -> dict[str, Any]:
    """``spec.template`` with the Rollout's pod spec as written, and the Service's ports from
    the first container's."""
    pod = json.loads(json.dumps(template.get("spec") or {}))
    spec: dict[str, Any] = {"template": {"spec": pod}}
    path = "spec.template.spec.containers[0].ports"
    ports = []
    for i, item in enumerate((pod.get("containers") or [{}])[0].get("ports") or ()):
        protocol = item.get("protocol", "TCP")
        number = scope.integer(item.get("containerPort"), f"{path}[{i}].containerPort")
        if protocol not in ("TCP", "UDP"):
            scope.drop(f"{path}[{i}]", f"the Service Pilotboat renders carries TCP or UDP ports"
                       f" only, not {protocol} (the pod keeps the port)")
            continue
        port = {"name": item.get("name") or f"port-{number}", "port": number}
        ports.append(port | ({"protocol": protocol} if protocol != "TCP" else {}))
    if ports:
        spec["ports"] = ports
    return spec


def _short_fields(scope: _Scope, template: Mapping[str, Any]) -> dict[str, Any]:
    """The pod template in the Microservice's short fields, with what they cannot say
    dropped into ``scope``."""
    pod = scope.mapping(template.get("spec"), "spec.template.spec")
    scope.rest(pod, "spec.template.spec", ("containers", "nodeSelector", "tolerations"),
               _POD_WHYS)
    containers = scope.sequence(pod.get("containers"), "spec.template.spec.containers")
    if not containers:
        scope.fail("spec.template.spec.containers", "a pod template needs a container")
    for i in range(1, len(containers)):
        scope.drop(f"spec.template.spec.containers[{i}]", "Pilotboat runs one container per pod")
    spec = _container(scope, scope.mapping(containers[0], "spec.template.spec.containers[0]"),
                      "spec.template.spec.containers[0]")
    if pod.get("nodeSelector"):
        spec["nodeSelector"] = dict(scope.mapping(pod["nodeSelector"],
                                                  "spec.template.spec.nodeSelector"))
    if pod.get("tolerations"):
        spec["tolerations"] = _tolerations(scope, pod["tolerations"],
                                           "spec.template.spec.tolerations")
    return spec


def _metadata(scope: _Scope, meta: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"name": meta["name"]}
    if meta.get("namespace"):
        out["namespace"] = meta["namespace"]
    if meta.get("labels"):
        out["labels"] = dict(meta["labels"])
    annotations = {}
    for key, value in scope.mapping(meta.get("annotations"), "metadata.annotations").items():
        if key.startswith("rollout.argoproj.io/"):
            scope.drop(_join("metadata.annotations", key), "it is Argo Rollouts' own")
        elif key != "kubectl.kubernetes.io/last-applied-configuration":
            annotations[key] = value
    if annotations:
        out["annotations"] = annotations
    scope.rest(meta, "metadata", ("name", "namespace", "labels", "annotations", *_SERVER_FIELDS),
               {}, "Pilotboat's manifests carry name, namespace, labels and annotations")
    return out


def _selector(scope: _Scope, spec: Mapping[str, Any]) -> Mapping[str, Any]:
    selector = scope.mapping(spec.get("selector"), "spec.selector")
    scope.rest(selector, "spec.selector", ("matchLabels",),
               {"matchExpressions": "Pilotboat selects its pods by its own labels"})
    return scope.mapping(selector.get("matchLabels"), "spec.selector.matchLabels")


def _rollout(ctx: _Context, doc: SourceDocument) -> dict[str, Any] | None:
    """The Microservice for a Rollout, or None when it is refused (with why in drops)."""
    body = doc.body
    scope = _Scope(doc.source, _describe("Rollout", body), ctx.drops)
    meta = scope.mapping(body.get("metadata"), "metadata")
    name = scope.text(meta.get("name"), "metadata.name")
    namespace = meta.get("namespace") or None
    spec = scope.mapping(body.get("spec"), "spec")
    strategy = scope.mapping(spec.get("strategy"), "spec.strategy")
    if "blueGreen" in strategy:
        scope.drop("spec.strategy.blueGreen", "Pilotboat releases by canary only; it has no"
                   " preview Service to switch: the Rollout is not converted")
        return None
    scope.rest(spec, "spec", ("replicas", "selector", "template", "workloadRef", "strategy",
                              "progressDeadlineSeconds"), _ROLLOUT_WHYS)
    scope.rest(strategy, "spec.strategy", ("canary",), {})
    rollout_labels = scope.mapping(meta.get("labels"), "metadata.labels")
    if "workloadRef" in spec:
        ref = _workload_ref(scope, spec)
        if ref is None:
            return None
        _selector(scope, spec)  # the Deployment's own pod labels select Pilotboat's pods
        version = rollout_labels.get(_VERSION_LABEL, _ADOPTED_VERSION)
        if not re.fullmatch(LABEL_VALUE_PATTERN, str(version)):
            scope.fail(_join("metadata.labels", _VERSION_LABEL), f"not a label value: {version!r}")
        out: dict[str, Any] = {"workloadRef": ref, "version": str(version)}
    else:
        out, labels = _pod(scope, scope.mapping(spec.get("template"), "spec.template"),
                           _selector(scope, spec))
        image = out.get("image") or out["template"]["spec"]["containers"][0]["image"]
        out["version"] = _version(scope, labels, rollout_labels, image)
    out["replicas"] = scope.integer(spec.get("replicas", 1), "spec.replicas")
    if "progressDeadlineSeconds" in spec:
        out["progressDeadlineSeconds"] = scope.integer(
            spec["progressDeadlineSeconds"], "spec.progressDeadlineSeconds")
    port = out["ports"][0]["port"] if out.get("ports") else 8080
    if "canary" in strategy:
        canary = _canary(ctx, scope, strategy["canary"], name, namespace, port)
        if canary is not None:
            out["rollout"] = {"canary": canary}
    return {"apiVersion": API_VERSION, "kind": "Microservice",
            "metadata": _metadata(scope, meta), "spec": _validated(scope, out)}


_ADOPTED_VERSION = "v1"  # a Rollout with a workloadRef and no version label


def _workload_ref(scope: _Scope, spec: Mapping[str, Any]) -> dict[str, Any] | None:
    """The Microservice's ``workloadRef`` for a Rollout's, or None (refused, with why) when it
    names a workload a Microservice cannot adopt. Argo Rollouts leaves the Deployment running
    unless ``scaleDown`` says otherwise, and so does the converted Microservice."""
    ref = scope.mapping(spec["workloadRef"], "spec.workloadRef")
    scope.rest(ref, "spec.workloadRef", ("apiVersion", "kind", "name", "scaleDown"), {})
    kind, api_version = ref.get("kind"), ref.get("apiVersion", "apps/v1")
    if (api_version, kind) != ("apps/v1", "Deployment"):
        scope.drop("spec.workloadRef.kind", f"Pilotboat adopts an apps/v1 Deployment only, not"
                   f" {api_version} {kind}: the Rollout is not converted")
        return None
    out: dict[str, Any] = {"apiVersion": "apps/v1", "kind": "Deployment",
                           "name": scope.text(ref.get("name"), "spec.workloadRef.name")}
    scale_down = ref.get("scaleDown", "never")
    if scale_down == "onsuccess":
        scope.drop("spec.workloadRef.scaleDown", "Pilotboat has no onsuccess: it scales the"
                   " Deployment down one pod for each of its own that is ready (progressively),"
                   " which it uses instead")
        scale_down = "progressively"
    elif scale_down not in ("never", "progressively"):
        scope.fail("spec.workloadRef.scaleDown", f"expected never, onsuccess or progressively,"
                   f" found {scale_down!r}")
    out["scaleDown"] = scale_down
    return out


def _validated(scope: _Scope, spec: dict[str, Any],
               model: type[MicroserviceSpec] | type[RolloutPolicySpec] = MicroserviceSpec
               ) -> dict[str, Any]:
    try:
        parsed = model.model_validate(spec)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = "spec"
        for part in error["loc"]:
            if not str(part).startswith("function-"):
                where = _join(where, part)
        scope.fail(where, f"the converted value is refused: {error['msg']}")
    dumped: dict[str, Any] = parsed.model_dump(mode="json", by_alias=True, exclude_unset=True)
    return dumped


def _share_policies(manifests: list[dict[str, Any]], drops: list[Dropped]) -> list[dict[str, Any]]:
    """Move each distinct canary strategy into a RolloutPolicy, named after the first
    Microservice that has it, and refer to it from every Microservice of its namespace."""
    policies: dict[tuple[str | None, str], dict[str, Any]] = {}
    out = []
    for manifest in manifests:
        rollout = manifest["spec"].get("rollout")
        if rollout is None:
            out.append(manifest)
            continue
        namespace = manifest["metadata"].get("namespace")
        key = (namespace, json.dumps(rollout["canary"], sort_keys=True))
        if key not in policies:
            meta = {"name": manifest["metadata"]["name"]} | (
                {"namespace": namespace} if namespace else {})
            scope = _Scope("-", f"RolloutPolicy {meta['name']}", drops)
            policies[key] = {"apiVersion": API_VERSION, "kind": "RolloutPolicy",
                             "metadata": meta,
                             "spec": _validated(scope, rollout["canary"], RolloutPolicySpec)}
            out.append(policies[key])
        spec = manifest["spec"] | {"rollout": {"rolloutPolicyRef":
                                               policies[key]["metadata"]["name"]}}
        out.append(manifest | {"spec": spec})
    return out


def _index(doc: SourceDocument, ctx: _Context) -> None:
    body, kind = doc.body, doc.body.get("kind")
    scope = _Scope(doc.source, _describe(kind, body), ctx.drops)
    meta = scope.mapping(body.get("metadata"), "metadata")
    name = scope.text(meta.get("name"), "metadata.name")
    namespace = None if kind == "ClusterAnalysisTemplate" else meta.get("namespace") or None
    spec = scope.mapping(body.get("spec"), "spec")
    ctx.templates.append(_Template(kind, namespace, name, spec, scope))


def convert(documents: Sequence[SourceDocument], *, policies: bool = False) -> Conversion:
    """Convert every Argo Rollouts document; the others are named as not carried over.

    With ``policies`` each distinct canary strategy of a namespace becomes a RolloutPolicy
    that its Microservices refer to. Raises :class:`ConversionError` for a document that
    is not what it says (a step with two fields, a duration that is not one, ...).
    """
    ctx = _Context([], set(), [])
    rollouts = []
    numbers: dict[str, int] = {}
    for doc in documents:
        body = doc.body
        numbers[doc.source] = numbers.get(doc.source, 0) + 1
        if not isinstance(body, Mapping):
            raise ConversionError(doc.source, f"document {numbers[doc.source]}", "",
                                  "expected a mapping (an object)")
        kind = str(body.get("kind") or "?")
        if body.get("apiVersion") == ARGO_API_VERSION and kind in _TEMPLATE_KINDS:
            _index(doc, ctx)
        elif body.get("apiVersion") == ARGO_API_VERSION and kind == "Rollout":
            rollouts.append(doc)
        else:
            _Scope(doc.source, _describe(kind, body), ctx.drops).drop(
                "", "convert reads Argo Rollouts' Rollout, AnalysisTemplate and"
                    " ClusterAnalysisTemplate (argoproj.io/v1alpha1) only")
    manifests = [m for m in (_rollout(ctx, doc) for doc in rollouts) if m is not None]
    for template in ctx.templates:
        if id(template) not in ctx.used:
            template.scope.drop("", "no Rollout in the input uses it; Pilotboat keeps signals"
                                    " in the Microservice or RolloutPolicy that judges by them")
    if policies:
        manifests = _share_policies(manifests, ctx.drops)
    return Conversion(tuple(manifests), tuple(ctx.drops))
