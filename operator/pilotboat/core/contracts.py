"""API contract compatibility: an OpenAPI 3 document against the one deployed, and against
what the consumers of the service declare they use. Pure: documents in, violations out.

Breaking changes between the deployed document (``old``) and the new one:

=================================  ===========================================================
rule                               what breaks
=================================  ===========================================================
``path-removed``                   a path clients call is gone
``operation-removed``              a method of a path is gone
``request-body-required``          a request body became required
``request-field-required``         a request body field became required (or is new and required)
``request-parameter-required``     a parameter became required (or is new and required)
``request-field-removed``          a request field is gone where unknown fields are refused
``request-enum-narrowed``          a request field or parameter accepts fewer values
``type-changed``                   a field or parameter changed type (widening a request
                                   ``integer`` to ``number`` and narrowing a response
                                   ``number`` to ``integer`` are not breaks)
``response-field-removed``         a field of a success response is gone (removed or renamed)
``response-field-optional``        a field of a success response is no longer required
=================================  ===========================================================

Consumers (``spec.api.consumes`` of other Microservices) are checked against the new
document alone:

=================================  ===========================================================
``consumer-operation-missing``     an operationId the consumer calls is gone
``consumer-request-field-missing`` a request field (or parameter) the consumer sends is gone
``consumer-required-field-unsent`` the operation requires a field the consumer does not send
                                   (checked when the consumer lists what it sends)
``consumer-response-field-missing`` a response field the consumer reads is gone
=================================  ===========================================================

Field paths are dotted, with ``[]`` for array items: ``items[].sku``; consumers may write
``items.sku``. A consumer field may name its operation, ``createOrder:customer.email``;
unqualified, it must hold in at least one of the operations the consumer calls. Local
``$ref``s are resolved (``#/components/...``); ``allOf`` merges, ``oneOf``/``anyOf`` unite.
Protobuf descriptors are not checked.

Documents are tenants' input, held to the limits of :mod:`pilotboat.core.limits` when they
are read (:func:`load_document`): their size, YAML aliases, values and depth, and the work
of reading their operations. A schema that refers to itself (``$ref`` or ``allOf`` back to
one of its own ancestors) contributes nothing more the second time; a lattice of schemas
that would take more than ``MAX_SCHEMA_STEPS`` visits is refused.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

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
    return doc


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
class _Field:
    type: str | None
    required: bool
    enum: tuple[Any, ...] | None
    closed: bool = False  # additionalProperties: false on its object


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
        enum = sub_merged.get("enum")
        result[path] = _Field(
            _schema_type(sub_merged),
            name in required,
            tuple(enum) if isinstance(enum, list) else None,
            closed,
        )
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


def _json_schema(doc: Mapping[str, Any], holder: Any) -> Any:
    holder, _ = _deref(doc, holder)
    content = (holder or {}).get("content") if isinstance(holder, Mapping) else None
    if not isinstance(content, Mapping) or not content:
        return None
    media = next((m for m in content if "json" in str(m)), next(iter(content)))
    return (content.get(media) or {}).get("schema")


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
            for param in [*shared, *(raw.get("parameters") or [])]:
                param, _ = _deref(doc, param)
                schema = _merged(doc, param.get("schema") or {}, frozenset(), budget)
                enum = schema.get("enum")
                op.params[(str(param.get("in")), str(param.get("name")))] = _Field(
                    _schema_type(schema),
                    bool(param.get("required")) or param.get("in") == "path",
                    tuple(enum) if isinstance(enum, list) else None,
                )
            body, _ = _deref(doc, raw.get("requestBody"))
            if isinstance(body, Mapping):
                op.body_required = bool(body.get("required"))
                op.request = _fields(doc, _json_schema(doc, body) or {}, budget)
            for code, response in (raw.get("responses") or {}).items():
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


def _request_changes(old: _Operation, new: _Operation) -> Iterable[tuple[str, str, str]]:
    if new.body_required and not old.body_required:
        yield "request-body-required", "request", "a request body is now required"
    yield from _parameter_changes(old, new)
    yield from _body_changes(old, new)


def _parameter_changes(old: _Operation, new: _Operation) -> Iterable[tuple[str, str, str]]:
    for key, param in new.params.items():
        before = old.params.get(key)
        where = f"{key[0]} parameter {key[1]}"
        if param.required and key[0] != "path" and not (before and before.required):
            yield "request-parameter-required", where, "the parameter is now required"
        if before and _type_break(before.type, param.type, "request"):
            yield "type-changed", where, f"type changed from {before.type} to {param.type}"
        if before and (lost := _narrowed(before.enum, param.enum)):
            yield "request-enum-narrowed", where, f"no longer accepts {lost}"


def _body_changes(old: _Operation, new: _Operation) -> Iterable[tuple[str, str, str]]:
    for path, fld in new.request.items():
        before = old.request.get(path)
        parent = _parent(path)
        parent_known = parent == "" or parent.rstrip("[]") in {
            p.rstrip("[]") for p in old.request
        }
        if fld.required and not (before and before.required) and parent_known:
            yield "request-field-required", f"request.{path}", "the field is now required"
        if before and _type_break(before.type, fld.type, "request"):
            yield "type-changed", f"request.{path}", (
                f"type changed from {before.type} to {fld.type}"
            )
        if before and (lost := _narrowed(before.enum, fld.enum)):
            yield "request-enum-narrowed", f"request.{path}", f"no longer accepts {lost}"
    for path in old.request:
        if path not in new.request:
            siblings = [f for p, f in new.request.items() if _parent(p) == _parent(path)]
            if siblings and all(f.closed for f in siblings):
                yield "request-field-removed", f"request.{path}", (
                    "the field is gone and unknown fields are refused"
                )


def _parent(path: str) -> str:
    return path.rsplit(".", 1)[0] if "." in path else ""


def _response_changes(old: _Operation, new: _Operation) -> Iterable[tuple[str, str, str]]:
    for path, before in old.response.items():
        after = new.response.get(path)
        where = f"response.{path}"
        if after is None:
            yield "response-field-removed", where, "the field is gone (removed or renamed)"
            continue
        if _type_break(before.type, after.type, "response"):
            yield "type-changed", where, f"type changed from {before.type} to {after.type}"
        if before.required and not after.required:
            yield "response-field-optional", where, "the field may now be missing"


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
        for rule, where, message in [*_request_changes(op, after), *_response_changes(op, after)]:
            found.append(Violation(rule, message, method, path, where, callers))
    return found


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
