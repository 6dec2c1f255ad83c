"""API contract compatibility: an OpenAPI 3 document against the one deployed, and against
what the consumers of the service declare they use. Pure: documents in, violations out.

Breaking changes between the deployed document (``old``) and the new one, by family. A
request may accept more and a response may promise more; the reverse breaks a client built
against ``old``:

====================================  ========================================================
rule                                  what breaks
====================================  ========================================================
*paths and operations*
``path-removed``                      a path clients call is gone
``operation-removed``                 a method of a path is gone
*requests*
``request-body-required``             a request body became required
``request-media-type-removed``        a request body media type is no longer accepted
``request-field-required``            a request body field became required (or is new and
                                      required)
``request-parameter-required``        a parameter became required (or is new and required)
``request-parameter-moved``           a parameter moved (``query`` to ``header``, ...)
``request-field-removed``             a request field is gone where unknown fields are refused
``request-enum-narrowed``             a request field or parameter accepts fewer values
``request-nullable-removed``          a request field or parameter no longer accepts null
``request-maximum-tightened``         ``maximum`` (or ``exclusiveMaximum``) is new or lower
``request-minimum-tightened``         ``minimum`` (or ``exclusiveMinimum``) is new or higher
``request-max-length-tightened``      ``maxLength`` is new or lower
``request-min-length-tightened``      ``minLength`` is higher
``request-max-items-tightened``       ``maxItems`` is new or lower
``request-min-items-tightened``       ``minItems`` is higher
``request-pattern-changed``           ``pattern`` is new or different (regular expressions are
                                      not compared: any change may refuse a value)
*responses*
``response-status-removed``           a success status (2xx) is no longer answered
``response-media-type-removed``       a success response's media type is gone
``response-field-removed``            a field of a success response is gone (removed or renamed)
``response-field-optional``           a field of a success response is no longer required
``response-enum-widened``             a response field may hold a value it could not before
``response-nullable-added``           a response field may now be null
*both*
``type-changed``                      a field or parameter changed type (widening a request
                                      ``integer`` to ``number`` and narrowing a response
                                      ``number`` to ``integer`` are not breaks)
``format-changed``                    a ``format`` changed (a request's new one included)
*security*
``security-requirement-added``        a client that authenticated one accepted way no longer
                                      satisfies any requirement (a scheme is needed that was not)
``security-scope-added``              the same schemes, but more OAuth2 or OpenID scopes
``security-scheme-changed``           a security scheme in use changed how it is presented
                                      (``type``, ``in``, ``name``, ``scheme``)
====================================  ========================================================

Not breaking, so not reported: new paths, operations, optional parameters and fields, new
statuses and media types, response fields added or made required, relaxed constraints,
security removed, and changes of ``operationId``, summaries, descriptions, tags and examples
(an ``operationId`` a consumer calls is covered by ``consumer-operation-missing`` below).
Removing a parameter or an error status (4xx, 5xx) is not a break either: a server ignores a
parameter it no longer reads, and a client never sees an error it is no longer sent.

Consumers (``spec.api.consumes`` of other Microservices) are checked against the new
document alone:

====================================  ========================================================
``consumer-operation-missing``        an operationId the consumer calls is gone
``consumer-request-field-missing``    a request field (or parameter) the consumer sends is gone
``consumer-required-field-unsent``    the operation requires a field the consumer does not send
                                      (checked when the consumer lists what it sends)
``consumer-response-field-missing``   a response field the consumer reads is gone
====================================  ========================================================

Field paths are dotted, with ``[]`` for array items: ``items[].sku``; consumers may write
``items.sku``. A consumer field may name its operation, ``createOrder:customer.email``;
unqualified, it must hold in at least one of the operations the consumer calls. Local
``$ref``s are resolved (``#/components/...``); ``allOf`` merges, ``oneOf``/``anyOf`` unite.
Protobuf descriptors are not checked.

Documents are tenants' input, held to the limits of :mod:`pilotboat.core.limits` when they
are read (:func:`load_document`): their size, YAML aliases, values and depth, and the work
of reading their operations. A schema that refers to itself (``$ref`` or ``allOf`` back to
one of its own ancestors) contributes nothing more the second time; a lattice of schemas
that would take more than ``MAX_SCHEMA_STEPS`` visits is refused. A document is then
validated against the OpenAPI specification of its version (3.0, 3.1, 3.2) by
``openapi-spec-validator``; the first problem is refused naming its JSON path
(``$.paths['/orders'].get.responses['200']: 'description' is a required property``). Only
local ``$ref``s are followed, nothing is fetched; the validator's own walk of the schemas is
run only when it is bounded (at most ``MAX_SCHEMA_STEPS`` mappings, no ``allOf``/``items``
cycle, at most ``MAX_SCHEMA_STEPS`` schemas to expand, ``MAX_SCHEMA_DEPTH`` deep), otherwise
the document is held to the specification's JSON Schema alone. A verdict is kept for the
last documents seen (by digest), so the gate validates a contract once, not on every pass.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import yaml

from pilotboat.api import MicroserviceSpec
from pilotboat.core.limits import (
    MAX_SCHEMA_DEPTH,
    MAX_SCHEMA_STEPS,
    LimitExceeded,
    check_document,
    load_yaml,
)

__all__ = [
    "ConsumerExpectation",
    "ContractError",
    "Violation",
    "breaking_changes",
    "check_contract",
    "consumer_violations",
    "digest",
    "expectations_for",
    "load_document",
]

if TYPE_CHECKING:
    # openapi_spec_validator and jsonschema are loaded by the first document validated
    # (:func:`_validators`), not by importing this module: an operator whose services declare
    # no contract never pays for them.
    from jsonschema.exceptions import ValidationError as SchemaValidationError
    from jsonschema.protocols import Validator as SchemaValidator
    from openapi_spec_validator.validation.validators import SpecValidator

METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")


class ContractError(ValueError):
    """A document that is not an OpenAPI 3 document we can read, or one over a limit."""


@dataclass(frozen=True)
class Violation:
    """One break: which rule, where, why, and which consumers it breaks (if known)."""

    rule: str
    message: str
    method: str | None = None
    path: str | None = None
    field: str | None = None
    consumers: tuple[str, ...] = ()

    def location(self) -> str:
        """``POST /orders request.customer.email``: where the break is."""
        parts = [p for p in (self.method, self.path, self.field) if p]
        return " ".join(parts) or "(document)"

    def describe(self) -> str:
        text = f"{self.rule} at {self.location()}: {self.message}"
        if self.consumers:
            text += f" (breaks {', '.join(self.consumers)})"
        return text


@dataclass(frozen=True)
class ConsumerExpectation:
    """What one consumer uses of the provider (a ``ConsumedAPI`` of its spec)."""

    consumer: str
    operations: tuple[str, ...] = ()
    request_fields: tuple[str, ...] = ()
    response_fields: tuple[str, ...] = ()


def load_document(text: str | bytes | Mapping[str, Any]) -> dict[str, Any]:
    """Parse an OpenAPI 3 document from YAML or JSON text (or take a parsed one), within
    the limits on untrusted input, and read its operations once.

    Raises :class:`ContractError` when it is not one, or is over a limit (the message names
    the limit).
    """
    try:
        if isinstance(text, Mapping):
            check_document(text)
            doc: Any = dict(text)
        else:
            doc = load_yaml(text)
    except LimitExceeded as exc:
        raise ContractError(str(exc)) from None
    except yaml.YAMLError as exc:
        raise ContractError(f"not YAML or JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ContractError("an OpenAPI document is a mapping")
    version = str(doc.get("openapi") or "")
    if not version.startswith("3."):
        raise ContractError(f"not an OpenAPI 3 document (openapi: {version or 'missing'})")
    if not isinstance(doc.get("paths") or {}, dict):
        raise ContractError("paths must be a mapping")
    _operations(doc)  # over MAX_SCHEMA_STEPS or MAX_SCHEMA_DEPTH, refused here
    _validate(doc, version)
    return doc


# --- against the OpenAPI specification -----------------------------------------------------


class _NoRetrieval(dict[str, Any]):
    """Resolver handlers that fetch nothing, whatever the scheme: a ``$ref`` (or an ``$id``
    that moves the base) pointing outside the document fails instead of reaching a URL or a
    file."""

    def __contains__(self, scheme: object) -> bool:
        return True

    def __getitem__(self, scheme: str) -> Any:
        def refuse(uri: str) -> Any:
            raise ContractError(f"only local $refs are supported, not {uri!r}")

        return refuse


def _no_retrieval(cls: type[SpecValidator]) -> type[SpecValidator]:
    return type(cls.__name__, (cls,), {"resolver_handlers": _NoRetrieval()})


@functools.cache
def _validators() -> dict[str, type[SpecValidator]]:
    """The specification's validator per OpenAPI minor version, loaded on first use."""
    from openapi_spec_validator import (
        OpenAPIV30SpecValidator,
        OpenAPIV31SpecValidator,
        OpenAPIV32SpecValidator,
    )

    return {
        "3.0": _no_retrieval(OpenAPIV30SpecValidator),
        "3.1": _no_retrieval(OpenAPIV31SpecValidator),
        "3.2": _no_retrieval(OpenAPIV32SpecValidator),
    }


_EXPANDED = ("allOf", "anyOf", "oneOf", "not", "items")


def _clearest(error: SchemaValidationError) -> SchemaValidationError:
    """Of a ``oneOf``/``anyOf`` refusal, the alternative's own complaint (a response's
    missing ``description`` rather than "not valid under any of the given schemas"),
    skipping the alternative that is a ``$ref``."""
    context = [e for e in error.context or () if "'$ref' is a required property" not in e.message]
    if not context:
        return error
    return _clearest(max(context, key=lambda e: len(e.absolute_path)))


def _external_ref(node: Any) -> str | None:
    stack = [node]
    while stack:
        node = stack.pop()
        if isinstance(node, Mapping):
            ref = node.get("$ref")
            if isinstance(ref, str) and not ref.startswith("#"):
                return ref
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return None


def _bounded_expansion(doc: Mapping[str, Any]) -> bool:
    """Whether the validator's own walk is bounded: the document has at most
    :data:`MAX_SCHEMA_STEPS` mappings, and expanding every schema through ``allOf``/``anyOf``/
    ``oneOf``/``not``/``items`` (``$ref``s followed, nothing memoised, as the validator does)
    ends within as many schemas."""
    sizes: dict[int, int] = {}
    visiting: set[int] = set()

    def size(node: Any, depth: int = 0) -> int:
        node, _ = _deref(doc, node)
        if not isinstance(node, Mapping):
            return 1
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in visiting or depth > MAX_SCHEMA_DEPTH:
            return MAX_SCHEMA_STEPS + 1  # a cycle, or deeper than the validator's stack
        visiting.add(key)
        total = 1
        for kw in _EXPANDED:
            sub = node.get(kw)
            for child in sub if isinstance(sub, list) else [sub] if sub is not None else []:
                total += size(child, depth + 1)
                if total > MAX_SCHEMA_STEPS:
                    break
        visiting.discard(key)
        sizes[key] = min(total, MAX_SCHEMA_STEPS + 1)
        return sizes[key]

    total = mappings = 0
    stack: list[Any] = [doc]
    while stack and total <= MAX_SCHEMA_STEPS and mappings <= MAX_SCHEMA_STEPS:
        node = stack.pop()
        if isinstance(node, Mapping):
            mappings += 1
            if any(kw in node for kw in _EXPANDED):
                total += size(node)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return total <= MAX_SCHEMA_STEPS and mappings <= MAX_SCHEMA_STEPS


_VALIDATED: dict[str, str | None] = {}
"""The verdicts on the documents validated last (by :func:`digest`): a release's contract is
read again on every pass of its gate, and validating a large one takes seconds."""
_VALIDATED_KEPT = 64


def _validate(doc: dict[str, Any], version: str) -> None:
    """Refuse a document the OpenAPI specification of its version refuses, naming the JSON
    path of the first problem."""
    key = digest(doc)
    if key not in _VALIDATED:
        try:
            _check_specification(doc, version)
            _VALIDATED[key] = None
        except ContractError as exc:
            _VALIDATED[key] = str(exc)
        while len(_VALIDATED) > _VALIDATED_KEPT:
            _VALIDATED.pop(next(iter(_VALIDATED)), None)
    if (problem := _VALIDATED.get(key)) is not None:
        raise ContractError(problem)


def _check_specification(doc: dict[str, Any], version: str) -> None:
    from referencing.exceptions import Unresolvable

    minor = ".".join(version.split(".")[:2])
    validators = _validators()
    cls = validators.get(minor)
    if cls is None:
        raise ContractError(
            f"OpenAPI {version} is not supported (supported: {', '.join(validators)})"
        )
    if (ref := _external_ref(doc)) is not None:
        raise ContractError(f"only local $refs are supported, not {ref!r}")
    meta: SchemaValidator = cls.schema_validator
    first = next(iter(sorted(meta.iter_errors(doc), key=lambda e: list(map(str, e.path)))), None)
    if first is None and _bounded_expansion(doc):
        try:
            first = next(iter(cls(doc).iter_errors()), None)
        except Unresolvable as exc:
            raise ContractError(f"$ref {exc.ref!r} points nowhere") from None
        except RecursionError:
            first = None  # the specification's JSON Schema passed; the walk is ours to bound
    if first is not None:
        error = _clearest(first)
        raise ContractError(
            f"not a valid OpenAPI {minor} document: {error.json_path}: {error.message}"
        )


# --- reading a document --------------------------------------------------------------------


def _pointer(doc: Mapping[str, Any], ref: str) -> Any:
    if not ref.startswith("#/"):
        raise ContractError(f"only local $refs are supported, not {ref!r}")
    node: Any = doc
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, Mapping) or part not in node:
            raise ContractError(f"$ref {ref!r} points nowhere")
        node = node[part]
    return node


def _deref(
    doc: Mapping[str, Any], node: Any, seen: frozenset[str] = frozenset()
) -> tuple[Any, frozenset[str]]:
    """The node a chain of ``$ref``s leads to, and ``seen`` with the refs followed; a ref
    already seen (a cycle) leads to ``{}``."""
    while isinstance(node, Mapping) and "$ref" in node:
        ref = str(node["$ref"])
        if ref in seen:
            return {}, seen
        seen = seen | {ref}
        node = _pointer(doc, ref)
    return node, seen


@dataclass
class _Budget:
    """The work of reading one document's operations, held to :data:`MAX_SCHEMA_STEPS`
    (a field walked or a schema merged is a step) and :data:`MAX_SCHEMA_DEPTH`; and the
    schemas merged so far, each merged once per set of refs followed to it."""

    steps: int = 0
    # (id(schema), seen) -> (schema, merged); the schema is held so its id is not reused
    merged: dict[tuple[int, frozenset[str]], tuple[Any, dict[str, Any]]] = field(
        default_factory=dict
    )
    # (id(merged schema), required, closed) -> (merged schema, field), the schema held likewise
    fields: dict[tuple[int, bool, bool], tuple[Any, _Field]] = field(default_factory=dict)

    def spend(self, depth: int) -> None:
        self.steps += 1
        if self.steps > MAX_SCHEMA_STEPS:
            raise ContractError(
                f"its schemas take more than {MAX_SCHEMA_STEPS} steps to resolve "
                f"(limit MAX_SCHEMA_STEPS = {MAX_SCHEMA_STEPS})"
            )
        if depth > MAX_SCHEMA_DEPTH:
            raise ContractError(
                f"its schemas nest more than {MAX_SCHEMA_DEPTH} deep, $refs included "
                f"(limit MAX_SCHEMA_DEPTH = {MAX_SCHEMA_DEPTH})"
            )


@dataclass(frozen=True)
class _Bounds:
    """What values a schema accepts beyond its type: each ``None`` when unconstrained. A
    numeric bound is ``(value, exclusive)``."""

    minimum: tuple[float, bool] | None = None
    maximum: tuple[float, bool] | None = None
    min_length: int | None = None
    max_length: int | None = None
    min_items: int | None = None
    max_items: int | None = None
    pattern: str | None = None


_UNBOUNDED = _Bounds()


@dataclass(frozen=True)
class _Field:
    type: str | None
    required: bool
    enum: tuple[Any, ...] | None
    closed: bool = False  # additionalProperties: false on its object
    nullable: bool = False
    format: str | None = None
    bounds: _Bounds = _UNBOUNDED


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _bound(schema: Mapping[str, Any], inclusive: str, exclusive: str) -> tuple[float, bool] | None:
    """A numeric bound, from OpenAPI 3.0's boolean ``exclusiveX`` or 3.1's numeric one."""
    flag = schema.get(exclusive)
    if (value := _number(flag)) is not None:  # 3.1: exclusiveMaximum: 10
        inner = _number(schema.get(inclusive))
        if inner is None or (value <= inner if inclusive == "maximum" else value >= inner):
            return value, True
    value = _number(schema.get(inclusive))
    return (value, flag is True) if value is not None else None


def _count(schema: Mapping[str, Any], key: str) -> int | None:
    value = schema.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


_CONSTRAINTS = frozenset(("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
                          "minLength", "maxLength", "minItems", "maxItems", "pattern"))  # fmt: skip


def _bounds(schema: Mapping[str, Any]) -> _Bounds:
    if _CONSTRAINTS.isdisjoint(schema):
        return _UNBOUNDED
    pattern = schema.get("pattern")
    bounds = _Bounds(
        _bound(schema, "minimum", "exclusiveMinimum"),
        _bound(schema, "maximum", "exclusiveMaximum"),
        _count(schema, "minLength"),
        _count(schema, "maxLength"),
        _count(schema, "minItems"),
        _count(schema, "maxItems"),
        pattern if isinstance(pattern, str) else None,
    )
    return _UNBOUNDED if bounds == _UNBOUNDED else bounds


def _field(schema: Mapping[str, Any], required: bool, closed: bool = False) -> _Field:
    enum = schema.get("enum")
    kind = schema.get("type")
    fmt = schema.get("format")
    return _Field(
        _schema_type(schema),
        required,
        tuple(enum) if isinstance(enum, list) else None,
        closed,
        schema.get("nullable") is True or (isinstance(kind, list) and "null" in kind),
        fmt if isinstance(fmt, str) else None,
        _bounds(schema),
    )


def _schema_type(schema: Mapping[str, Any]) -> str | None:
    kind = schema.get("type")
    if isinstance(kind, list):  # OpenAPI 3.1: ["string", "null"]
        kinds = [k for k in kind if k != "null"]
        kind = kinds[0] if len(kinds) == 1 else ",".join(sorted(kinds))
    if kind is None and "properties" in schema:
        kind = "object"
    return str(kind) if kind is not None else None


def _merged(
    doc: Mapping[str, Any], schema: Any, seen: frozenset[str], budget: _Budget, depth: int = 0
) -> dict[str, Any]:
    """A schema with allOf merged and oneOf/anyOf united (properties, required, type)."""
    schema, seen = _deref(doc, schema, seen)
    if not isinstance(schema, Mapping):
        return {}
    memo = (id(schema), seen)
    if memo in budget.merged:
        return budget.merged[memo][1]
    budget.spend(depth)
    out: dict[str, Any] = {k: v for k, v in schema.items() if k not in ("allOf", "oneOf", "anyOf")}
    props = dict(out.get("properties") or {})
    required = set(out.get("required") or [])
    for key in ("allOf", "oneOf", "anyOf"):
        parts = [_merged(doc, s, seen, budget, depth + 1) for s in schema.get(key) or []]
        for part in parts:
            props.update(part.get("properties") or {})
            if key == "allOf":
                required |= set(part.get("required") or [])
                out.setdefault("type", part.get("type"))
        if key != "allOf" and parts:  # required in every alternative
            common = set.intersection(*(set(p.get("required") or []) for p in parts))
            required |= common
            out.setdefault("type", parts[0].get("type"))
    if props:
        out["properties"] = props
    out["required"] = sorted(required)
    budget.merged[memo] = (schema, out)
    return out


def _fields(doc: Mapping[str, Any], schema: Any, budget: _Budget) -> dict[str, _Field]:
    """Every field of a schema by dotted path (``[]`` for array items)."""
    result: dict[str, _Field] = {}
    _add_fields(doc, schema, budget, result, "", frozenset(), 0)
    return result


def _add_fields(
    doc: Mapping[str, Any],
    schema: Any,
    budget: _Budget,
    result: dict[str, _Field],
    prefix: str,
    seen: frozenset[str],
    depth: int,
) -> None:
    if depth > 12:
        return
    budget.spend(depth)
    merged = _merged(doc, schema, seen, budget, depth)
    if isinstance(schema, Mapping) and "$ref" in schema:
        ref = str(schema["$ref"])
        if ref in seen:
            return
        seen = seen | {ref}
    if _schema_type(merged) == "array" or "items" in merged:
        items = merged.get("items") or {}
        _add_fields(doc, items, budget, result, f"{prefix}[]", seen, depth + 1)
        return
    required = set(merged.get("required") or [])
    closed = merged.get("additionalProperties") is False
    for name, sub in (merged.get("properties") or {}).items():
        path = f"{prefix}.{name}" if prefix else str(name)
        sub_merged = _merged(doc, sub, seen, budget, depth + 1)
        key = (id(sub_merged), name in required, closed)
        if key not in budget.fields:
            budget.fields[key] = (sub_merged, _field(sub_merged, name in required, closed))
        result[path] = budget.fields[key][1]
        _add_fields(doc, sub, budget, result, path, seen, depth + 1)


@dataclass
class _Operation:
    method: str
    path: str
    operation_id: str | None
    params: dict[tuple[str, str], _Field] = field(default_factory=dict)
    body_required: bool = False
    request: dict[str, _Field] = field(default_factory=dict)
    response: dict[str, _Field] = field(default_factory=dict)
    request_media: frozenset[str] = frozenset()
    responses: dict[str, frozenset[str]] = field(default_factory=dict)
    """Each status (``200``, ``2XX``, ``default``) and its media types."""
    security: tuple[Mapping[str, frozenset[str]], ...] = ({},)
    """The requirements a client may meet, any one of them: scheme to scopes; ``{}`` is
    anonymous access."""


def _json_schema(doc: Mapping[str, Any], holder: Any) -> Any:
    holder, _ = _deref(doc, holder)
    content = (holder or {}).get("content") if isinstance(holder, Mapping) else None
    if not isinstance(content, Mapping) or not content:
        return None
    media = next((m for m in content if "json" in str(m)), next(iter(content)))
    return (content.get(media) or {}).get("schema")


def _media_types(doc: Mapping[str, Any], holder: Any) -> frozenset[str]:
    holder, _ = _deref(doc, holder)
    content = holder.get("content") if isinstance(holder, Mapping) else None
    return frozenset(str(m) for m in content) if isinstance(content, Mapping) else frozenset()


def _security(requirements: Any) -> tuple[Mapping[str, frozenset[str]], ...]:
    """A ``security`` list as alternatives (none listed: anonymous access)."""
    if not isinstance(requirements, list) or not requirements:
        return ({},)
    return tuple(
        {str(s): frozenset(map(str, scopes if isinstance(scopes, list) else ()))
         for s, scopes in r.items()}
        for r in requirements
        if isinstance(r, Mapping)
    ) or ({},)


def _operations(doc: Mapping[str, Any]) -> dict[tuple[str, str], _Operation]:
    ops: dict[tuple[str, str], _Operation] = {}
    budget = _Budget()
    for path, item in (doc.get("paths") or {}).items():
        item, _ = _deref(doc, item)
        if not isinstance(item, Mapping):
            continue
        shared = list(item.get("parameters") or [])
        for method in METHODS:
            raw = item.get(method)
            if not isinstance(raw, Mapping):
                continue
            op = _Operation(method.upper(), str(path), raw.get("operationId"))
            op.security = _security(raw["security"] if "security" in raw else doc.get("security"))
            for param in [*shared, *(raw.get("parameters") or [])]:
                param, _ = _deref(doc, param)
                schema = _merged(doc, param.get("schema") or {}, frozenset(), budget)
                required = bool(param.get("required")) or param.get("in") == "path"
                op.params[(str(param.get("in")), str(param.get("name")))] = _field(
                    schema, required
                )
            body, _ = _deref(doc, raw.get("requestBody"))
            if isinstance(body, Mapping):
                op.body_required = bool(body.get("required"))
                op.request = _fields(doc, _json_schema(doc, body) or {}, budget)
                op.request_media = _media_types(doc, body)
            for code, response in (raw.get("responses") or {}).items():
                op.responses[str(code)] = _media_types(doc, response)
                if str(code).startswith("2"):
                    op.response.update(_fields(doc, _json_schema(doc, response) or {}, budget))
            ops[(op.method, op.path)] = op
    return ops


# --- old against new -----------------------------------------------------------------------


def _type_break(old: str | None, new: str | None, side: str) -> bool:
    if old == new or old is None or new is None:
        return False
    if side == "request" and (old, new) == ("integer", "number"):
        return False
    return not (side == "response" and (old, new) == ("number", "integer"))


def _narrowed(old: tuple[Any, ...] | None, new: tuple[Any, ...] | None) -> list[Any]:
    if new is None:
        return []
    if old is None:
        return ["(any value)"]
    return [v for v in old if v not in new]


def _widened(old: tuple[Any, ...] | None, new: tuple[Any, ...] | None) -> list[Any]:
    return _narrowed(new, old)


_Change = tuple[str, str, str]


def _request_changes(old: _Operation, new: _Operation) -> Iterable[_Change]:
    if new.body_required and not old.body_required:
        yield "request-body-required", "request", "a request body is now required"
    if new.request_media and (gone := sorted(old.request_media - new.request_media)):
        yield "request-media-type-removed", "request", f"no longer accepts {', '.join(gone)}"
    yield from _parameter_changes(old, new)
    yield from _body_changes(old, new)


def _tighter_upper(old: tuple[float, bool] | None, new: tuple[float, bool] | None) -> bool:
    if new is None:
        return False
    if old is None:
        return True
    return new[0] < old[0] or (new[0] == old[0] and new[1] and not old[1])


def _flip(bound: tuple[float, bool] | None) -> tuple[float, bool] | None:
    return None if bound is None else (-bound[0], bound[1])


def _tighter_lower(old: tuple[float, bool] | None, new: tuple[float, bool] | None) -> bool:
    return _tighter_upper(_flip(old), _flip(new))


def _shown(bound: tuple[float, bool] | None) -> str:
    if bound is None:
        return "none"
    return f"{bound[0]:g}{' (exclusive)' if bound[1] else ''}"


def _bound_changes(old: _Bounds, new: _Bounds) -> Iterable[tuple[str, str]]:
    """What the request accepts less of, as (rule, message)."""
    if _tighter_upper(old.maximum, new.maximum):
        yield "request-maximum-tightened", (
            f"maximum {_shown(old.maximum)} became {_shown(new.maximum)}"
        )
    if _tighter_lower(old.minimum, new.minimum):
        yield "request-minimum-tightened", (
            f"minimum {_shown(old.minimum)} became {_shown(new.minimum)}"
        )
    for rule, key, upper in (
        ("request-max-length-tightened", "max_length", True),
        ("request-min-length-tightened", "min_length", False),
        ("request-max-items-tightened", "max_items", True),
        ("request-min-items-tightened", "min_items", False),
    ):
        before, after = getattr(old, key), getattr(new, key)
        if after is None:
            continue
        if (before is None or after < before) if upper else after > (before or 0):
            name = "".join(w.capitalize() if i else w for i, w in enumerate(key.split("_")))
            yield rule, f"{name} {'none' if before is None else before} became {after}"
    if new.pattern is not None and new.pattern != old.pattern:
        yield "request-pattern-changed", (
            f"pattern {old.pattern!r} became {new.pattern!r}" if old.pattern
            else f"must now match {new.pattern!r}"
        )


def _request_field_changes(before: _Field, after: _Field, where: str) -> Iterable[_Change]:
    """What a field or parameter sent by a client no longer accepts."""
    if _type_break(before.type, after.type, "request"):
        yield "type-changed", where, f"type changed from {before.type} to {after.type}"
    if lost := _narrowed(before.enum, after.enum):
        yield "request-enum-narrowed", where, f"no longer accepts {lost}"
    if before.nullable and not after.nullable:
        yield "request-nullable-removed", where, "no longer accepts null"
    if after.format is not None and after.format != before.format:
        yield "format-changed", where, (
            f"format {before.format} became {after.format}" if before.format
            else f"must now have the format {after.format}"
        )
    for rule, message in _bound_changes(before.bounds, after.bounds):
        yield rule, where, message


def _response_field_changes(before: _Field, after: _Field, where: str) -> Iterable[_Change]:
    """What a field read by a client may now hold that it could not before."""
    if _type_break(before.type, after.type, "response"):
        yield "type-changed", where, f"type changed from {before.type} to {after.type}"
    if added := _widened(before.enum, after.enum):
        shown = "any value" if after.enum is None else str(added)
        yield "response-enum-widened", where, (
            f"may now hold {shown}, not only {list(before.enum or ())}"
        )
    if after.nullable and not before.nullable:
        yield "response-nullable-added", where, "may now be null"
    if before.format is not None and after.format != before.format:
        yield "format-changed", where, f"format {before.format} became {after.format}"


def _parameter_changes(old: _Operation, new: _Operation) -> Iterable[_Change]:
    old_places = {name: place for place, name in old.params}
    for key, param in new.params.items():
        before = old.params.get(key)
        place, name = key
        where = f"{place} parameter {name}"
        if before is None and (was := old_places.get(name)) and (was, name) not in new.params:
            yield "request-parameter-moved", where, f"the parameter moved from {was} to {place}"
            continue
        if param.required and place != "path" and not (before and before.required):
            yield "request-parameter-required", where, "the parameter is now required"
        if before:
            yield from _request_field_changes(before, param, where)


def _body_changes(old: _Operation, new: _Operation) -> Iterable[_Change]:
    for path, fld in new.request.items():
        before = old.request.get(path)
        parent = _parent(path)
        parent_known = parent == "" or parent.rstrip("[]") in {
            p.rstrip("[]") for p in old.request
        }
        if fld.required and not (before and before.required) and parent_known:
            yield "request-field-required", f"request.{path}", "the field is now required"
        if before:
            yield from _request_field_changes(before, fld, f"request.{path}")
    for path in old.request:
        if path not in new.request:
            siblings = [f for p, f in new.request.items() if _parent(p) == _parent(path)]
            if siblings and all(f.closed for f in siblings):
                yield "request-field-removed", f"request.{path}", (
                    "the field is gone and unknown fields are refused"
                )


def _parent(path: str) -> str:
    return path.rsplit(".", 1)[0] if "." in path else ""


def _answered(status: str, statuses: Iterable[str]) -> bool:
    """Whether ``status`` is still answered: itself, or its range (``2XX``)."""
    return any(s == status or s.upper() == f"{status[0]}XX" for s in statuses)


def _response_changes(old: _Operation, new: _Operation) -> Iterable[_Change]:
    for status, media in old.responses.items():
        if not status.startswith("2"):
            continue
        if not _answered(status, new.responses):
            yield "response-status-removed", f"response {status}", "the status is gone"
        elif new.responses.get(status) and (gone := sorted(media - new.responses[status])):
            yield "response-media-type-removed", f"response {status}", (
                f"no longer answers {', '.join(gone)}"
            )
    for path, before in old.response.items():
        after = new.response.get(path)
        where = f"response.{path}"
        if after is None:
            yield "response-field-removed", where, "the field is gone (removed or renamed)"
            continue
        yield from _response_field_changes(before, after, where)
        if before.required and not after.required:
            yield "response-field-optional", where, "the field may now be missing"


def _satisfies(old: Mapping[str, frozenset[str]], new: Mapping[str, frozenset[str]]) -> bool:
    """Whether a client meeting requirement ``old`` meets ``new``."""
    return all(s in old and scopes <= old[s] for s, scopes in new.items())


def _security_changes(old: _Operation, new: _Operation) -> Iterable[_Change]:
    for accepted in old.security:
        if any(_satisfies(accepted, r) for r in new.security):
            continue
        way = " and ".join(sorted(accepted)) or "anonymous access"
        if any(set(r) <= set(accepted) for r in new.security):
            more = sorted({f"{s}:{scope}" for r in new.security if set(r) <= set(accepted)
                           for s, scopes in r.items() for scope in scopes - accepted[s]})
            yield "security-scope-added", "security", (
                f"{way} now needs the scopes {', '.join(more)}"
            )
        else:
            needed = " or ".join(" and ".join(sorted(r)) for r in new.security)
            yield "security-requirement-added", "security", (
                f"{way} is no longer accepted; it needs {needed}"
            )
        return


_SCHEME_KEYS = ("type", "in", "name", "scheme")


def _scheme_changes(
    old: Mapping[str, Any], new: Mapping[str, Any], used: set[str]
) -> list[Violation]:
    """Security schemes in ``used`` that ``old`` and ``new`` both declare and whose
    presentation changed."""
    def schemes(doc: Mapping[str, Any]) -> Mapping[str, Any]:
        found = (doc.get("components") or {}).get("securitySchemes") or {}
        return found if isinstance(found, Mapping) else {}

    found = []
    before_all, after_all = schemes(old), schemes(new)
    for name in sorted(set(before_all) & set(after_all) & used):
        before, _ = _deref(old, before_all[name])
        after, _ = _deref(new, after_all[name])
        if not (isinstance(before, Mapping) and isinstance(after, Mapping)):
            continue
        changed = [f"{k} {before.get(k)} became {after.get(k)}" for k in _SCHEME_KEYS
                   if before.get(k) != after.get(k)]  # fmt: skip
        if changed:
            found.append(Violation("security-scheme-changed", "; ".join(changed), None, None,
                                   f"components.securitySchemes.{name}"))  # fmt: skip
    return found


def _callers(op_id: str | None, consumers: Sequence[ConsumerExpectation]) -> tuple[str, ...]:
    if not op_id:
        return ()
    return tuple(sorted({c.consumer for c in consumers if op_id in c.operations}))


def breaking_changes(
    old: Mapping[str, Any],
    new: Mapping[str, Any],
    consumers: Sequence[ConsumerExpectation] = (),
) -> list[Violation]:
    """The breaking changes from ``old`` to ``new``; each names the consumers that call the
    operation concerned (by operationId), when they declared it."""
    old_ops, new_ops = _operations(old), _operations(new)
    new_paths = {path for _, path in new_ops}
    found: list[Violation] = []
    reported_paths: set[str] = set()
    for (method, path), op in sorted(old_ops.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        callers = _callers(op.operation_id, consumers)
        if path not in new_paths:
            if path not in reported_paths:
                reported_paths.add(path)
                gone = sorted({m for m, p in old_ops if p == path})
                callers = tuple(sorted({
                    c for (m, p), o in old_ops.items() if p == path
                    for c in _callers(o.operation_id, consumers)
                }))  # fmt: skip
                found.append(Violation("path-removed", f"the path is gone ({', '.join(gone)})",
                                       None, path, None, callers))  # fmt: skip
            continue
        after = new_ops.get((method, path))
        if after is None:
            found.append(Violation("operation-removed", "the operation is gone",
                                   method, path, None, callers))  # fmt: skip
            continue
        changes = [*_request_changes(op, after), *_response_changes(op, after),
                   *_security_changes(op, after)]  # fmt: skip
        for rule, where, message in changes:
            found.append(Violation(rule, message, method, path, where, callers))
    used = {scheme for op in old_ops.values() for r in op.security for scheme in r}
    return found + _scheme_changes(old, new, used)


# --- consumers against new -----------------------------------------------------------------


def _norm(path: str) -> str:
    return path.replace("[]", "")


def _split(qualified: str) -> tuple[str | None, str]:
    if ":" in qualified:
        op_id, path = qualified.split(":", 1)
        return op_id, path
    return None, qualified


def consumer_violations(
    new: Mapping[str, Any], consumers: Sequence[ConsumerExpectation]
) -> list[Violation]:
    """What each consumer's declared use of the provider finds broken in ``new``."""
    by_id = {op.operation_id: op for op in _operations(new).values() if op.operation_id}
    found: list[Violation] = []
    for c in consumers:
        who = (c.consumer,)
        calls = [by_id[o] for o in c.operations if o in by_id]
        for op_id in c.operations:
            if op_id not in by_id:
                found.append(Violation("consumer-operation-missing",
                                       f"{c.consumer} calls operation {op_id}, which is gone",
                                       None, None, op_id, who))  # fmt: skip
        found += _consumer_fields(c, calls, by_id, "request")
        found += _consumer_fields(c, calls, by_id, "response")
        found += _unsent(c, calls)
    return found


def _consumer_fields(
    c: ConsumerExpectation,
    calls: Sequence[_Operation],
    by_id: Mapping[str, _Operation],
    side: str,
) -> list[Violation]:
    found = []
    for qualified in c.request_fields if side == "request" else c.response_fields:
        op_id, path = _split(qualified)
        if op_id is not None and op_id not in by_id:
            continue  # reported as consumer-operation-missing when the consumer calls it
        ops = [by_id[op_id]] if op_id is not None else list(calls)
        def has(op: _Operation, path: str = path) -> bool:
            fields = op.request if side == "request" else op.response
            names = {_norm(p) for p in fields}
            if side == "request":
                names |= {name for (_, name) in op.params}
            return _norm(path) in names
        if ops and not any(has(op) for op in ops):
            where = ops[0]
            verb = "sends" if side == "request" else "reads"
            found.append(Violation(
                f"consumer-{side}-field-missing",
                f"{c.consumer} {verb} {path}, which is no longer in the {side}",
                where.method, where.path, f"{side}.{path}", (c.consumer,),
            ))  # fmt: skip
    return found


def _unsent(c: ConsumerExpectation, calls: Sequence[_Operation]) -> list[Violation]:
    found = []
    for op in calls:
        sent = {
            _norm(path)
            for f in c.request_fields
            if _split(f)[0] in (None, op.operation_id)
            for path in (_split(f)[1], *_ancestors(_split(f)[1]))
        }
        if not sent:
            continue  # the consumer did not say what it sends to this operation
        required = [
            p for p, f in op.request.items()
            if f.required and all(
                op.request.get(a) is None or op.request[a].required
                for a in _ancestors(p)
            )
        ]  # fmt: skip
        required += [name for (where, name), f in op.params.items()
                     if f.required and where != "path"]  # fmt: skip
        for path in required:
            if _norm(path) not in sent:
                found.append(Violation(
                    "consumer-required-field-unsent",
                    f"{op.operation_id} requires {path}, which {c.consumer} does not send",
                    op.method, op.path, f"request.{path}", (c.consumer,),
                ))  # fmt: skip
    return found


def _ancestors(path: str) -> list[str]:
    parts = path.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def check_contract(
    old: Mapping[str, Any] | None,
    new: Mapping[str, Any],
    consumers: Sequence[ConsumerExpectation] = (),
) -> list[Violation]:
    """Everything that breaks if ``new`` replaces ``old`` (None: nothing deployed yet)."""
    found = breaking_changes(old, new, consumers) if old is not None else []
    return found + consumer_violations(new, consumers)


def digest(doc: Mapping[str, Any]) -> str:
    """A short digest of a parsed document, the same for the same content."""
    blob = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def expectations_for(
    provider: str, services: Iterable[tuple[str, MicroserviceSpec]]
) -> list[ConsumerExpectation]:
    """What the ``services`` (name, spec) declare they use of ``provider``, one expectation
    per declaration (a service may declare several)."""
    found = []
    for name, spec in services:
        for used in spec.api.consumes if spec.api else ():
            if used.service == provider and name != provider:
                found.append(ConsumerExpectation(
                    name, tuple(used.operations), tuple(used.request_fields),
                    tuple(used.response_fields),
                ))  # fmt: skip
    return found
