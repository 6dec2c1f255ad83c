"""The API models: what they accept, what they refuse and how they say so."""

from __future__ import annotations

import doctest
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

import pilotboat.api
import pilotboat.api.common
from pilotboat.api import (
    KINDS,
    Condition,
    DatabaseServerSpec,
    FeatureFlagSpec,
    MicroserviceSpec,
    MicroserviceStatus,
    MigrationApprovalSpec,
    OwnedDatabaseSpec,
    RolloutPolicySpec,
    SchemaMigrationSpec,
    format_duration,
    kind_named,
    parse_duration,
)

pytestmark = pytest.mark.core

MICROSERVICE: dict[str, Any] = {
    "image": "shop/payments:2",
    "version": "v2.1.0",
    "replicas": 3,
    "ports": [{"name": "http", "port": 80, "targetPort": 8080}],
    "env": [{"name": "LOG_LEVEL", "value": "info"}],
    "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": 1}},
    "readinessProbe": {"path": "/ready", "port": "http"},
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "shop"}],
    "boundedContext": "payments",
    "database": {"ownedDatabase": "payments-db"},
    "api": {
        "openapi": {"configMapRef": {"name": "payments-openapi", "key": "openapi.yaml"}},
        "consumes": [{"service": "orders", "operations": ["getOrder"]}],
    },
    "dependencies": [
        {
            "service": "orders",
            "timeout": "2s",
            "retries": {"attempts": 3, "backoff": "200ms"},
            "circuitBreaker": {"consecutiveFailures": 5, "openFor": "30s"},
        }
    ],
    "flags": ["new-checkout"],
    "rollout": {
        "canary": {
            "steps": [
                {"setWeight": 10},
                {"pause": {"duration": "1m"}},
                {"analysis": {"intervals": 3}},
                {"setFlag": {"flag": "new-checkout", "variants": {"on": 25, "off": 75}}},
                {"mirror": {"percent": 50}},
                {"setWeight": 50},
                {"pause": {"untilPromoted": True}},
                {"setWeight": 100},
            ],
            "analysis": {
                "interval": "30s",
                "signals": {
                    "errors": {"maxRatio": 0.01, "maxIncreaseOverStable": 0.005},
                    "latency": {"quantile": 0.99, "maxSeconds": 0.5},
                    "traffic": {"minRate": 1},
                    "saturation": {"max": 0.8},
                },
            },
            "trafficRouting": {"gatewayAPI": {"httpRoute": "payments", "port": 80}},
        }
    },
}

VALID: list[tuple[type[BaseModel], dict[str, Any]]] = [
    (MicroserviceSpec, MICROSERVICE),
    (MicroserviceSpec, {"image": "shop/catalog:1", "version": "1"}),
    (
        MicroserviceSpec,
        {"image": "shop/catalog:1", "version": "1", "rollout": {"rolloutPolicyRef": "std"}},
    ),
    (RolloutPolicySpec, {"steps": [{"setWeight": 20}, {"pause": {"untilPromoted": True}}]}),
    (
        OwnedDatabaseSpec,
        {
            "owner": "payments",
            "serverRef": {"name": "shared-postgres"},
            "databaseName": "payments",
            "reclaimPolicy": "Delete",
        },
    ),
    (
        DatabaseServerSpec,
        {
            "host": "postgres.db",
            "port": 5433,
            "tls": {"mode": "verify-full", "caSecretRef": {"name": "pg-ca"}},
            "adminSecretRef": {"name": "pg-admin"},
            "allowedNamespaces": ["shop", "team-*"],
            "namespaceSelector": {
                "matchLabels": {"pilotboat.dev/postgres": "shared"},
                "matchExpressions": [{"key": "tier", "operator": "In", "values": ["prod"]}],
            },
        },
    ),
    (
        SchemaMigrationSpec,
        {
            "database": "orders-db",
            "requiredBy": {"service": "orders", "version": "v3"},
            "expand": {"sql": "ALTER TABLE orders ADD COLUMN total_cents bigint"},
            "backfill": {"sql": "UPDATE orders SET total_cents = total * 100 WHERE ..."},
            "verify": {"sql": "SELECT count(*) = 0 FROM orders WHERE total_cents IS NULL"},
            "contract": {"sql": "ALTER TABLE orders DROP COLUMN total", "soak": "10m"},
        },
    ),
    (MigrationApprovalSpec, {"migration": "orders-total-cents", "reason": "v2 is gone"}),
    (
        FeatureFlagSpec,
        {
            "variants": {"on": {"color": "blue"}, "off": {"color": "grey"}},
            "defaultVariant": "off",
            "targeting": {"if": [{"in": ["@shop", {"var": "email"}]}, "on", "off"]},
        },
    ),
]


@pytest.mark.parametrize(("model", "document"), VALID, ids=lambda v: getattr(v, "__name__", ""))
def test_valid_documents_parse_and_round_trip(
    model: type[BaseModel], document: dict[str, Any]
) -> None:
    parsed = model.model_validate(document)
    dumped = parsed.model_dump(by_alias=True, exclude_none=True, mode="json")
    assert model.model_validate(dumped) == parsed


def test_defaults_fill_what_the_outline_promises() -> None:
    spec = MicroserviceSpec.model_validate({"image": "shop/catalog:1", "version": "1"})
    assert spec.replicas == 1
    assert [(p.name, p.port, p.protocol) for p in spec.ports] == [("http", 8080, "TCP")]
    assert spec.rollout is None
    policy = RolloutPolicySpec.model_validate({"steps": [{"setWeight": 5}]})
    strategy = policy.as_strategy()
    assert strategy.traffic_routing.replica_ratio is not None
    assert strategy.traffic_routing.gateway_api is None
    step = strategy.steps[0]
    assert step.kind == "setWeight"


def test_snake_case_names_are_accepted_too() -> None:
    spec = MicroserviceSpec(image="x", version="1", bounded_context="shop")
    assert spec.model_dump(by_alias=True, exclude_none=True)["boundedContext"] == "shop"


def _with(document: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of ``document`` with the value at dotted ``path`` replaced (or removed)."""
    import copy

    result = copy.deepcopy(document)
    node: Any = result
    *parents, last = path.split(".")
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if value is _REMOVE:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return result


_REMOVE = object()
_STEPS = "rollout.canary.steps"

INVALID: list[tuple[str, type[BaseModel], dict[str, Any], str]] = [
    ("missing image", MicroserviceSpec, _with(MICROSERVICE, "image", _REMOVE), "image"),
    ("empty image", MicroserviceSpec, _with(MICROSERVICE, "image", ""), "image"),
    # The tag's \w is ASCII in the distribution grammar (Go), as the CRD's pattern says.
    ("non-ASCII tag", MicroserviceSpec, _with(MICROSERVICE, "image", "shop/payments:v\u00e9"),
     "image"),
    ("bad version", MicroserviceSpec, _with(MICROSERVICE, "version", "v2 beta"), "version"),
    ("negative replicas", MicroserviceSpec, _with(MICROSERVICE, "replicas", -1), "replicas"),
    ("too many replicas", MicroserviceSpec, _with(MICROSERVICE, "replicas", 1001), "replicas"),
    ("unknown field", MicroserviceSpec, _with(MICROSERVICE, "replica", 2), "replica"),
    ("port 0", MicroserviceSpec, _with(MICROSERVICE, "ports.0.port", 0), "port"),
    ("bad protocol", MicroserviceSpec, _with(MICROSERVICE, "ports.0.protocol", "SCTP"), "protocol"),
    (
        "weight over 100",
        MicroserviceSpec,
        _with(MICROSERVICE, f"{_STEPS}.0", {"setWeight": 101}),
        "setWeight",
    ),
    (
        "decreasing weights",
        MicroserviceSpec,
        _with(MICROSERVICE, f"{_STEPS}.7", {"setWeight": 40}),
        "setWeight values never decrease",
    ),
    (
        "step with two kinds",
        MicroserviceSpec,
        _with(MICROSERVICE, f"{_STEPS}.0", {"setWeight": 10, "mirror": {"percent": 5}}),
        "exactly one of setWeight, pause, analysis, setFlag, mirror",
    ),
    (
        "unknown step kind",
        MicroserviceSpec,
        _with(MICROSERVICE, f"{_STEPS}.0", {"rollback": {}}),
        "rollback",
    ),
    (
        "pause with both",
        MicroserviceSpec,
        _with(MICROSERVICE, f"{_STEPS}.1.pause.untilPromoted", True),
        "untilPromoted",
    ),
    (
        "bad duration",
        MicroserviceSpec,
        _with(MICROSERVICE, f"{_STEPS}.1.pause.duration", "1 minute"),
        "duration",
    ),
    (
        "setFlag not 100",
        MicroserviceSpec,
        _with(MICROSERVICE, f"{_STEPS}.3.setFlag.variants.off", 70),
        "setFlag.variants",
    ),
    (
        "canary and policy",
        MicroserviceSpec,
        _with(MICROSERVICE, "rollout.rolloutPolicyRef", "std"),
        "exactly one of canary, rolloutPolicyRef",
    ),
    (
        "empty rollout",
        MicroserviceSpec,
        _with(MICROSERVICE, "rollout", {}),
        "exactly one of canary, rolloutPolicyRef",
    ),
    (
        "two routers",
        MicroserviceSpec,
        _with(MICROSERVICE, "rollout.canary.trafficRouting.replicaRatio", {}),
        "exactly one of replicaRatio, gatewayAPI",
    ),
    (
        "quantile 1",
        MicroserviceSpec,
        _with(MICROSERVICE, "rollout.canary.analysis.signals.latency.quantile", 1),
        "quantile",
    ),
    ("no steps", RolloutPolicySpec, {"steps": []}, "steps"),
    ("51 steps", RolloutPolicySpec, {"steps": [{"setWeight": 1}] * 51}, "steps"),
    (
        "bad reclaimPolicy",
        OwnedDatabaseSpec,
        {
            "owner": "a",
            "serverRef": {"name": "s"},
            "reclaimPolicy": "Drop",
        },
        "reclaimPolicy",
    ),
    (
        "bad databaseName",
        OwnedDatabaseSpec,
        {
            "owner": "a",
            "serverRef": {"name": "s"},
            "databaseName": "Orders",
        },
        "databaseName",
    ),
    (
        "no expand sql",
        SchemaMigrationSpec,
        {
            "database": "d",
            "requiredBy": {"service": "s", "version": "v1"},
            "expand": {"sql": ""},
            "contract": {"sql": "DROP"},
        },
        "expand.sql",
    ),
    (
        "the old inline server",
        OwnedDatabaseSpec,
        {"owner": "a", "server": {"host": "h", "adminSecretRef": {"name": "s"}}},
        "server",
    ),
    ("no serverRef", OwnedDatabaseSpec, {"owner": "a"}, "serverRef"),
    (
        "bad tls mode",
        DatabaseServerSpec,
        {"host": "h", "adminSecretRef": {"name": "s"}, "tls": {"mode": "prefer"}},
        "tls.mode",
    ),
    (
        "verify-ca without a CA",
        DatabaseServerSpec,
        {"host": "h", "adminSecretRef": {"name": "s"}, "tls": {"mode": "verify-ca"}},
        "tls.caSecretRef",
    ),
    (
        "empty namespaceSelector",
        DatabaseServerSpec,
        {"host": "h", "adminSecretRef": {"name": "s"}, "namespaceSelector": {}},
        "namespaceSelector",
    ),
    (
        "bad namespace pattern",
        DatabaseServerSpec,
        {"host": "h", "adminSecretRef": {"name": "s"}, "allowedNamespaces": ["Shop/x"]},
        "allowedNamespaces",
    ),
    ("missing migration", MigrationApprovalSpec, {}, "migration"),
    ("approve down", MigrationApprovalSpec, {"migration": "m", "phase": "down"}, "phase"),
    (
        "defaultVariant not a variant",
        FeatureFlagSpec,
        {"variants": {"on": True}, "defaultVariant": "off"},
        "defaultVariant",
    ),
    ("no variants", FeatureFlagSpec, {"variants": {}, "defaultVariant": "off"}, "variants"),
]


@pytest.mark.parametrize(
    ("model", "document", "named"),
    [case[1:] for case in INVALID],
    ids=[case[0] for case in INVALID],
)
def test_invalid_documents_are_refused_naming_the_field(
    model: type[BaseModel], document: dict[str, Any], named: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(document)
    assert named in str(caught.value)


def test_status_ignores_fields_it_does_not_know() -> None:
    status = MicroserviceStatus.model_validate(
        {
            "phase": "Progressing",
            "currentStepIndex": None,
            "conditions": [{"type": "Ready", "status": "False", "reason": "CanaryRunning"}],
            "someFutureField": 1,
        }
    )
    assert status.conditions == [Condition(type="Ready", status="False", reason="CanaryRunning")]


def test_every_kind_has_names_and_models() -> None:
    assert {k.kind for k in KINDS} == {
        "Microservice",
        "RolloutPolicy",
        "OwnedDatabase",
        "DatabaseServer",
        "SchemaMigration",
        "MigrationApproval",
        "FeatureFlag",
    }
    for kind in KINDS:
        assert kind.plural == kind.plural.lower() and kind.short_names
        assert kind.spec_required
        assert kind_named(kind.short_names[0]) is kind
        assert kind_named(kind.kind.upper()) is kind
    with pytest.raises(KeyError):
        kind_named("deployment")


def test_public_names_are_exported() -> None:
    for name in pilotboat.api.__all__:
        assert hasattr(pilotboat.api, name), name


DURATIONS = [
    ("0s", 0.0),
    ("30s", 30.0),
    ("5m", 300.0),
    ("1h", 3600.0),
    ("1h30m", 5400.0),
    ("250ms", 0.25),
    ("1.5s", 1.5),
    ("2m30s", 150.0),
    ("1m1m", 120.0),
    ("1h2m3s4ms", 3723.004),
]


@pytest.mark.parametrize(("text", "seconds"), DURATIONS)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text", ["", "5", "s", "-1s", "1d", "1.s", "1 m", " 1m", "1m ", "1us", "1S"]
)
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_duration_docstrings_hold() -> None:
    result = doctest.testmod(pilotboat.api.common)
    assert result.attempted > 0 and result.failed == 0


@given(st.integers(min_value=0, max_value=10**9))
def test_format_then_parse_round_trips(milliseconds: int) -> None:
    text = format_duration(milliseconds / 1000)
    assert math.isclose(parse_duration(text), milliseconds / 1000, abs_tol=1e-6)
    assert format_duration(parse_duration(text)) == text


@given(
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=10**6), st.sampled_from(["ms", "s", "m", "h"])
        ),
        min_size=1,
        max_size=6,
    )
)
def test_parts_of_a_duration_add_up(parts: list[tuple[int, str]]) -> None:
    text = "".join(f"{n}{unit}" for n, unit in parts)
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    expected = sum(n * scale[unit] for n, unit in parts)
    assert math.isclose(parse_duration(text), expected, rel_tol=1e-9, abs_tol=1e-9)
