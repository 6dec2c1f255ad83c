"""CustomResourceDefinitions from the API models: structural OpenAPI v3 schemas, as data.

Kubernetes accepts only *structural* schemas: every node has a ``type`` (or says it keeps
unknown fields), there is no ``$ref``, no ``anyOf`` of alternative types, no ``title``. So
the pydantic JSON schema is rewritten here:

- ``$ref`` / ``$defs`` are inlined; a field's own ``description`` and ``default`` win over
  the referenced model's;
- ``anyOf: [X, {type: null}]`` becomes ``X`` with ``nullable: true``;
- ``anyOf: [string, integer]`` becomes ``x-kubernetes-int-or-string: true``;
- ``const: v`` becomes ``enum: [v]``; numeric ``exclusiveMinimum: n`` becomes
  ``minimum: n, exclusiveMinimum: true`` (OpenAPI v3.0 form), likewise for the maximum;
- ``additionalProperties: true`` (free-form JSON) becomes
  ``x-kubernetes-preserve-unknown-fields: true``; ``additionalProperties: false`` is dropped
  (the API server prunes unknown fields);
- ``null`` defaults and ``null`` members of defaults are dropped.

Cross-field rules travel in the models' ``json_schema_extra`` as ``x-kubernetes-validations``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel

from pilotboat.api.catalog import KINDS
from pilotboat.api.kind import KindDescriptor

__all__ = [
    "UnsupportedSchemaError",
    "crd_file_name",
    "custom_resource_definition",
    "custom_resource_definitions",
    "schema_of",
]

_KEY_ORDER = (
    "description",
    "type",
    "format",
    "nullable",
    "enum",
    "default",
    "minimum",
    "exclusiveMinimum",
    "maximum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "required",
    "properties",
    "items",
    "additionalProperties",
)

_DROPPED = frozenset({"title", "$defs", "discriminator"})


class UnsupportedSchemaError(ValueError):
    """A model uses a construct a structural schema cannot express."""


def crd_file_name(kind: KindDescriptor) -> str:
    """``<plural>.pilotboat.dev.yaml``, the file the CRD of ``kind`` is committed as."""
    return f"{kind.crd_name}.yaml"


def custom_resource_definitions(
    kinds: Iterable[KindDescriptor] = KINDS,
) -> list[dict[str, Any]]:
    """The CRD of every kind, in the order given."""
    return [custom_resource_definition(kind) for kind in kinds]


def custom_resource_definition(kind: KindDescriptor) -> dict[str, Any]:
    """The ``apiextensions.k8s.io/v1`` CustomResourceDefinition of one kind."""
    spec_schema = schema_of(kind.spec_model)
    status_schema = schema_of(kind.status_model)
    root: dict[str, Any] = {
        "description": kind.description,
        "type": "object",
    }
    if kind.spec_required:
        root["required"] = ["spec"]
    root["properties"] = {
        "apiVersion": {
            "description": "The versioned schema of this object: pilotboat.dev/v1alpha1.",
            "type": "string",
        },
        "kind": {"description": f"The kind of this object: {kind.kind}.", "type": "string"},
        "metadata": {"type": "object"},
        "spec": spec_schema,
        "status": status_schema,
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": kind.crd_name,
            "labels": {"app.kubernetes.io/part-of": "pilotboat"},
        },
        "spec": {
            "group": kind.group,
            "names": {
                "kind": kind.kind,
                "listKind": kind.list_kind,
                "plural": kind.plural,
                "singular": kind.singular,
                "shortNames": list(kind.short_names),
                "categories": list(kind.categories),
            },
            "scope": "Namespaced" if kind.namespaced else "Cluster",
            "versions": [
                {
                    "name": kind.version,
                    "served": True,
                    "storage": True,
                    "subresources": _subresources(kind),
                    "additionalPrinterColumns": [
                        _printer_column(c) for c in kind.all_printer_columns
                    ],
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


def schema_of(model: type[BaseModel]) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of ``model`` (wire names, inlined, Kubernetes forms)."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs: Mapping[str, Any] = raw.get("$defs", {})
    return _structural(raw, defs, path=model.__name__)


def _subresources(kind: KindDescriptor) -> dict[str, Any]:
    subresources: dict[str, Any] = {"status": {}}
    if kind.scale is not None:
        scale = {
            "specReplicasPath": kind.scale.spec_replicas_path,
            "statusReplicasPath": kind.scale.status_replicas_path,
        }
        if kind.scale.label_selector_path is not None:
            scale["labelSelectorPath"] = kind.scale.label_selector_path
        subresources["scale"] = scale
    return subresources


def _printer_column(column: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": column.name,
        "type": column.type,
        "jsonPath": column.json_path,
    }
    if column.description:
        entry["description"] = column.description
    if column.priority:
        entry["priority"] = column.priority
    return entry


def _resolve(node: Mapping[str, Any], defs: Mapping[str, Any]) -> dict[str, Any]:
    """Inline ``$ref`` and single-member ``allOf``; the node's own keys win."""
    result = dict(node)
    ref = result.pop("$ref", None)
    if ref is None and len(result.get("allOf", ())) == 1:
        (only,) = result.pop("allOf")
        return {**_resolve(only, defs), **result}
    if ref is None:
        return result
    name = ref.rsplit("/", 1)[-1]
    return {**_resolve(defs[name], defs), **result}


def _collapse_any_of(node: dict[str, Any], defs: Mapping[str, Any], path: str) -> dict[str, Any]:
    members = [_resolve(m, defs) for m in node.pop("anyOf")]
    non_null = [m for m in members if m.get("type") != "null"]
    nullable = len(non_null) < len(members)
    if len(non_null) == 1:
        merged = {**non_null[0], **node}
    elif sorted(m.get("type", "") for m in non_null) == ["integer", "string"]:
        merged = {**node, "x-kubernetes-int-or-string": True}
    else:
        raise UnsupportedSchemaError(f"{path}: a union of {non_null} is not structural")
    if nullable:
        merged["nullable"] = True
    return merged


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def _structural(node: Mapping[str, Any], defs: Mapping[str, Any], path: str) -> dict[str, Any]:
    result = _resolve(node, defs)
    if "anyOf" in result:
        result = _collapse_any_of(result, defs, path)
    if "oneOf" in result or "allOf" in result or "not" in result:
        raise UnsupportedSchemaError(f"{path}: oneOf/allOf/not are not structural")
    _rewrite_keywords(result)
    _rewrite_children(result, defs, path)
    return _ordered(result)


def _rewrite_keywords(result: dict[str, Any]) -> None:
    """JSON Schema 2020-12 keywords to their OpenAPI v3.0 / Kubernetes forms, in place."""
    for key in _DROPPED:
        result.pop(key, None)
    if "const" in result:
        result["enum"] = [result.pop("const")]
    for bound, exclusive in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        value = result.get(exclusive)
        if isinstance(value, int | float) and not isinstance(value, bool):
            result[bound] = value
            result[exclusive] = True
    if "default" in result:
        if result["default"] is None:
            del result["default"]
        else:
            result["default"] = _without_nulls(result["default"])
    if "x-kubernetes-validations" in result:
        result["x-kubernetes-validations"] = [
            {k: rule[k] for k in ("rule", "message", "fieldPath", "reason") if k in rule}
            for rule in result["x-kubernetes-validations"]
        ]


def _rewrite_children(result: dict[str, Any], defs: Mapping[str, Any], path: str) -> None:
    """Properties, items and additionalProperties made structural, in place."""
    properties = result.pop("properties", None)
    if properties:
        result["properties"] = {
            name: _structural(sub, defs, f"{path}.{name}") for name, sub in properties.items()
        }
    if "items" in result:
        result["items"] = _structural(result["items"], defs, f"{path}[]")
    extra = result.pop("additionalProperties", None)
    if extra is True or extra == {}:
        result["x-kubernetes-preserve-unknown-fields"] = True
    elif isinstance(extra, Mapping):
        result["additionalProperties"] = _structural(extra, defs, f"{path}.*")


def _ordered(node: dict[str, Any]) -> dict[str, Any]:
    known = [k for k in _KEY_ORDER if k in node]
    rest = sorted(k for k in node if k not in _KEY_ORDER)
    return {k: node[k] for k in (*known, *rest)}
