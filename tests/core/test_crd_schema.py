"""The generated CRDs: structural schemas, the CEL rules, names and printer columns."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel

from pilotboat.api import KINDS, KindDescriptor
from pilotboat.api.crd import (
    UnsupportedSchemaError,
    crd_file_name,
    custom_resource_definition,
    schema_of,
)

pytestmark = pytest.mark.core

CRDS = {kind.kind: custom_resource_definition(kind) for kind in KINDS}


def _root(kind: str) -> dict[str, Any]:
    schema: dict[str, Any] = CRDS[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def _nodes(node: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node below ``node``, with a readable path."""
    if not isinstance(node, dict):
        return
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from _nodes(sub, f"{path}.{name}")
    if "items" in node:
        yield from _nodes(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _nodes(node["additionalProperties"], f"{path}.*")


def _keys_anywhere(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield key
            if key not in {"default", "enum"}:
                yield from _keys_anywhere(value)
    elif isinstance(node, list):
        for value in node:
            yield from _keys_anywhere(value)


def _rules(kind: str) -> dict[str, list[dict[str, str]]]:
    return {
        path: node["x-kubernetes-validations"]
        for path, node in _nodes(_root(kind))
        if "x-kubernetes-validations" in node
    }


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_schema_is_structural(kind: KindDescriptor) -> None:
    root = _root(kind.kind)
    forbidden = {"$ref", "$defs", "title", "anyOf", "oneOf", "allOf", "not", "const"}
    assert not forbidden & set(_keys_anywhere(root))
    for path, node in _nodes(root):
        typeless_ok = node.get("x-kubernetes-preserve-unknown-fields") or node.get(
            "x-kubernetes-int-or-string"
        )
        assert "type" in node or typeless_ok, f"{kind.kind}{path} has no type"
        assert node.get("type") != "null", path
        assert node.get("additionalProperties", {}) is not False, path
        if "properties" in node or "additionalProperties" in node:
            assert node["type"] == "object", path
        assert not ("properties" in node and "additionalProperties" in node), path
        assert "default" not in node or node["default"] is not None, path
        for bound in ("exclusiveMinimum", "exclusiveMaximum"):
            assert node.get(bound, True) is True, f"{path}: {bound} must be a boolean"


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_crd_envelope(kind: KindDescriptor) -> None:
    crd = CRDS[kind.kind]
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["metadata"]["name"] == f"{kind.plural}.pilotboat.dev"
    assert crd_file_name(kind) == f"{kind.plural}.pilotboat.dev.yaml"
    spec = crd["spec"]
    assert spec["group"] == "pilotboat.dev"
    # A DatabaseServer is the platform team's, for the whole cluster; the rest are tenants'.
    assert spec["scope"] == ("Cluster" if kind.kind == "DatabaseServer" else "Namespaced")
    assert spec["names"]["kind"] == kind.kind
    assert spec["names"]["shortNames"] == list(kind.short_names)
    assert spec["names"]["categories"] == ["pilotboat"]
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"]["status"] == {}
    assert set(version["subresources"]) <= {"status", "scale"}
    root = version["schema"]["openAPIV3Schema"]
    assert root["type"] == "object"
    assert root["required"] == ["spec"]
    assert set(root["properties"]) == {"apiVersion", "kind", "metadata", "spec", "status"}
    status = root["properties"]["status"]
    assert status["properties"]["observedGeneration"]["type"] == "integer"
    conditions = status["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert conditions["items"]["required"] == ["type", "status"]


COLUMNS = {
    "Microservice": ["Version", "Stable", "Phase", "Step", "Weight", "Ready", "Age"],
    "RolloutPolicy": ["Used-By", "Age"],
    "OwnedDatabase": ["Owner", "Database", "Phase", "Age"],
    "DatabaseServer": ["Host", "Port", "TLS", "Age"],
    "SchemaMigration": ["Database", "Phase", "Required", "Age"],
    "MigrationApproval": ["Migration", "Phase", "ApprovedBy", "Valid", "Age"],
    "FeatureFlag": ["State", "Default", "Age"],
}


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_printer_columns(kind: KindDescriptor) -> None:
    columns = CRDS[kind.kind]["spec"]["versions"][0]["additionalPrinterColumns"]
    assert [c["name"] for c in columns] == COLUMNS[kind.kind]
    assert columns[-1] == {
        "name": "Age",
        "type": "date",
        "jsonPath": ".metadata.creationTimestamp",
        "description": "How long ago the object was created.",
    }
    for column in columns:
        assert column["jsonPath"].startswith((".spec.", ".status.", ".metadata."))
        assert column["type"] in {"string", "integer", "number", "boolean", "date"}


def test_only_the_microservice_has_a_scale_subresource() -> None:
    scaled = {k for k, crd in CRDS.items() if "scale" in crd["spec"]["versions"][0]["subresources"]}
    assert scaled == {"Microservice"}
    version = CRDS["Microservice"]["spec"]["versions"][0]
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert status["replicas"]["type"] == "integer"
    assert status["selector"]["type"] == "string"


def test_the_progress_deadline_defaults_like_a_deployments() -> None:
    spec = _root("Microservice")["properties"]["spec"]["properties"]
    deadline = spec["progressDeadlineSeconds"]
    assert (deadline["type"], deadline["default"], deadline["minimum"]) == ("integer", 600, 1)


def test_microservice_columns_point_at_the_rollout() -> None:
    columns = CRDS["Microservice"]["spec"]["versions"][0]["additionalPrinterColumns"]
    paths = {c["name"]: c["jsonPath"] for c in columns}
    assert paths["Version"] == ".spec.version"
    assert paths["Stable"] == ".status.stableVersion"
    assert paths["Step"] == ".status.step"  # `2/4`, from 1, as `pilotboat get` shows it
    assert paths["Ready"] == ".status.ready"  # `3/4`
    assert paths["Weight"] == ".status.canaryWeight"


EXACTLY_ONE_STEP = (
    "[has(self.setWeight), has(self.pause), has(self.analysis), has(self.setFlag),"
    " has(self.mirror)].filter(x, x).size() == 1"
)
NEVER_DECREASE = "self.steps.filter(s, has(s.setWeight)).map(s, s.setWeight).isSorted()"
PAUSE = "has(self.duration) != (has(self.untilPromoted) && self.untilPromoted)"
SUM_100 = "self.variants.map(k, self.variants[k]).sum() == 100"
STARTING_STEP = (
    "!has(self.backgroundAnalysis) || !has(self.backgroundAnalysis.startingStep)"
    " || self.backgroundAnalysis.startingStep < size(self.steps)"
)


@pytest.mark.parametrize(
    ("kind", "path", "rule", "field_path"),
    [
        ("Microservice", ".spec.rollout", "has(self.canary) != has(self.rolloutPolicyRef)", None),
        ("Microservice", ".spec.rollout.canary", NEVER_DECREASE, ".steps"),
        ("Microservice", ".spec.rollout.canary.steps[]", EXACTLY_ONE_STEP, None),
        ("Microservice", ".spec.rollout.canary.steps[].pause", PAUSE, None),
        ("Microservice", ".spec.rollout.canary.steps[].setFlag", SUM_100, ".variants"),
        (
            "Microservice",
            ".spec.rollout.canary.trafficRouting",
            "has(self.replicaRatio) != has(self.gatewayAPI)",
            None,
        ),
        (
            "Microservice",
            ".spec.api.openapi",
            "has(self.inline) != has(self.configMapRef)",
            None,
        ),
        ("RolloutPolicy", ".spec", NEVER_DECREASE, ".steps"),
        ("RolloutPolicy", ".spec", STARTING_STEP, ".backgroundAnalysis.startingStep"),
        (
            "Microservice",
            ".spec.rollout.canary",
            STARTING_STEP,
            ".backgroundAnalysis.startingStep",
        ),
        ("RolloutPolicy", ".spec.steps[]", EXACTLY_ONE_STEP, None),
        ("RolloutPolicy", ".spec.steps[].pause", PAUSE, None),
        ("RolloutPolicy", ".spec.steps[].setFlag", SUM_100, ".variants"),
    ],
)
def test_cel_rules_are_where_they_belong(
    kind: str, path: str, rule: str, field_path: str | None
) -> None:
    (entry,) = [r for r in _rules(kind).get(path, []) if r["rule"] == rule]
    assert entry["message"]
    assert entry.get("fieldPath") == field_path


def test_cel_messages_name_the_fields() -> None:
    for kind in KINDS:
        for path, rules in _rules(kind.kind).items():
            for rule in rules:
                named = [
                    word
                    for word in (
                        "setWeight",
                        "pause",
                        "setFlag",
                        "rollout",
                        "trafficRouting",
                        "openapi",
                        "defaultVariant",
                        "judge",
                        "tls.mode",
                        "namespaceSelector",
                        "backgroundAnalysis",
                        "workloadRef",
                        "maxSurge",
                    )
                    if word in rule["message"]
                ]
                assert named, f"{kind.kind}{path}: {rule['message']!r} names no field"


def test_lists_and_strings_that_cel_walks_are_bounded() -> None:
    for kind in ("Microservice", "RolloutPolicy"):
        for path, node in _nodes(_root(kind)):
            if path.endswith(".steps"):
                assert node["maxItems"] == 50
            if path.endswith(".setFlag.variants"):
                assert node["maxProperties"] <= 64


def test_feature_flag_variants_take_any_json_value() -> None:
    spec = _root("FeatureFlag")["properties"]["spec"]
    assert spec["required"] == ["variants", "defaultVariant"]
    variants = spec["properties"]["variants"]
    assert variants["minProperties"] == 1
    assert variants["additionalProperties"] == {"x-kubernetes-preserve-unknown-fields": True}
    assert spec["properties"]["targeting"]["x-kubernetes-preserve-unknown-fields"] is True


def test_optional_fields_are_nullable_and_defaults_kept() -> None:
    spec = _root("Microservice")["properties"]["spec"]
    # image may come from spec.template instead; the model (and the admission webhook that
    # uses it) requires one of the two, as CEL cannot look into a free-form pod template.
    assert spec["required"] == ["version"]
    assert spec["properties"]["rollout"]["nullable"] is True
    assert spec["properties"]["replicas"] == {
        "description": spec["properties"]["replicas"]["description"],
        "type": "integer",
        "default": 1,
        "minimum": 0,
        "maximum": 1000,
    }
    assert spec["properties"]["ports"]["default"] == [
        {"name": "http", "port": 8080, "protocol": "TCP"}
    ]
    probe_port = spec["properties"]["readinessProbe"]["properties"]["port"]
    assert probe_port["x-kubernetes-int-or-string"] is True
    routing = spec["properties"]["rollout"]["properties"]["canary"]["properties"]["trafficRouting"]
    assert routing["default"] == {"replicaRatio": {}}


def test_every_spec_field_is_described() -> None:
    for kind in KINDS:
        for path, node in _nodes(_root(kind.kind)["properties"]["spec"], ".spec"):
            if path != ".spec" and not path.endswith(("[]", ".*")):
                assert node.get("description"), f"{kind.kind}{path} has no description"


def test_unions_that_are_not_structural_are_refused() -> None:
    class Ambiguous(BaseModel):
        value: int | list[int]

    with pytest.raises(UnsupportedSchemaError, match="Ambiguous.value"):
        schema_of(Ambiguous)
