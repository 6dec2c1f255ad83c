"""The API server refuses malformed objects, naming the field, before the operator sees them."""

from __future__ import annotations

import copy
import json
from typing import Any

import kubernetes
import pytest
from kubernetes.client import CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from pilotboat.api import KINDS, KindDescriptor, kind_named

pytestmark = pytest.mark.cluster

STEPS: list[dict[str, Any]] = [
    {"setWeight": 10},
    {"pause": {"duration": "1m"}},
    {"analysis": {"intervals": 2}},
    {"setFlag": {"flag": "new-checkout", "variants": {"on": 25, "off": 75}}},
    {"mirror": {"percent": 50}},
    {"setWeight": 50},
    {"pause": {"untilPromoted": True}},
]

VALID: dict[str, dict[str, Any]] = {
    "Microservice": {
        "image": "shop/payments:2",
        "version": "v2",
        "replicas": 2,
        "readinessProbe": {"port": 8080},
        "resources": {"limits": {"cpu": 1, "memory": "128Mi"}},
        "rollout": {
            "canary": {"steps": STEPS, "analysis": {"signals": {"errors": {"maxRatio": 0.01}}}}
        },
    },
    "RolloutPolicy": {"steps": STEPS},
    "OwnedDatabase": {
        "owner": "payments",
        "serverRef": {"name": "shared-postgres"},
        "reclaimPolicy": "Delete",
    },
    "DatabaseServer": {
        "host": "postgres.db",
        "tls": {"mode": "verify-full", "caSecretRef": {"name": "pg-ca"}},
        "adminSecretRef": {"name": "pg-admin"},
        "allowedNamespaces": ["shop", "team-*"],
        "namespaceSelector": {"matchLabels": {"pilotboat.dev/postgres": "shared"}},
    },
    "SchemaMigration": {
        "database": "orders-db",
        "requiredBy": {"service": "orders", "version": "v3"},
        "expand": {"sql": "ALTER TABLE orders ADD COLUMN total_cents bigint"},
        "backfill": {"sql": "UPDATE orders SET total_cents = total * 100", "batchSize": 500},
        "contract": {"sql": "ALTER TABLE orders DROP COLUMN total"},
    },
    "MigrationApproval": {"migration": "orders-total-cents"},
    "FeatureFlag": {
        "variants": {"on": {"color": "#00f"}, "off": {"color": "#888"}},
        "defaultVariant": "off",
        "targeting": {"if": [{"in": ["@shop", {"var": "email"}]}, "on", "off"]},
    },
}


def _spec(kind: str, path: str = "", value: Any = None, *, remove: bool = False) -> dict[str, Any]:
    """The valid spec of ``kind`` with the value at dotted ``path`` replaced or removed."""
    spec = copy.deepcopy(VALID[kind])
    if not path:
        return spec
    node: Any = spec
    *parents, last = path.split(".")
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if remove:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return spec


_CANARY = "rollout.canary"

# (case, kind, spec or None for no spec at all, a field path the API server's message names)
MALFORMED: list[tuple[str, str, dict[str, Any] | None, str]] = [
    (
        "replicas-a-string",
        "Microservice",
        _spec("Microservice", "replicas", "three"),
        "spec.replicas",
    ),
    ("negative-replicas", "Microservice", _spec("Microservice", "replicas", -1), "spec.replicas"),
    # (image may come from the pod template, so its absence is the admission webhook's to
    # refuse: tests/cluster/test_child_rejected.py)
    ("template-a-string", "Microservice", _spec("Microservice", "template", "pod"),
     "spec.template"),
    (
        "bad-version-label",
        "Microservice",
        _spec("Microservice", "version", "v2 beta!"),
        "spec.version",
    ),
    (
        "weight-over-100",
        "Microservice",
        _spec("Microservice", f"{_CANARY}.steps.0", {"setWeight": 150}),
        "spec.rollout.canary.steps[0].setWeight",
    ),
    (
        "canary-and-policy-ref",
        "Microservice",
        _spec("Microservice", "rollout.rolloutPolicyRef", "standard"),
        "spec.rollout",
    ),
    (
        "decreasing-weights",
        "RolloutPolicy",
        _spec("RolloutPolicy", "steps.5", {"setWeight": 5}),
        "spec.steps",
    ),
    (
        "step-with-two-kinds",
        "RolloutPolicy",
        _spec("RolloutPolicy", "steps.1", {"setWeight": 20, "mirror": {"percent": 5}}),
        "spec.steps[1]",
    ),
    (
        "unknown-step-kind",
        "RolloutPolicy",
        _spec("RolloutPolicy", "steps.1", {"rollback": {"to": "stable"}}),
        "spec.steps[1]",
    ),
    (
        "pause-with-duration-and-until-promoted",
        "RolloutPolicy",
        _spec("RolloutPolicy", "steps.1.pause.untilPromoted", True),
        "spec.steps[1].pause",
    ),
    (
        "background-analysis-past-the-steps",
        "RolloutPolicy",
        _spec("RolloutPolicy", "backgroundAnalysis", {"startingStep": 9}),
        "spec.backgroundAnalysis.startingStep",
    ),
    (
        "background-analysis-past-the-steps-inline",
        "Microservice",
        _spec("Microservice", f"{_CANARY}.backgroundAnalysis", {"startingStep": 9}),
        "spec.rollout.canary.backgroundAnalysis.startingStep",
    ),
    (
        "max-surge-over-100-percent",
        "RolloutPolicy",
        _spec("RolloutPolicy", "trafficRouting", {"replicaRatio": {"maxSurge": "150%"}}),
        "spec.trafficRouting.replicaRatio.maxSurge",
    ),
    (
        "max-surge-negative",
        "Microservice",
        _spec("Microservice", f"{_CANARY}.trafficRouting", {"replicaRatio": {"maxSurge": -1}}),
        "spec.rollout.canary.trafficRouting.replicaRatio.maxSurge",
    ),
    (
        "bad-duration",
        "RolloutPolicy",
        _spec("RolloutPolicy", "steps.1.pause.duration", "1 minute"),
        "spec.steps[1].pause.duration",
    ),
    (
        "set-flag-not-summing-to-100",
        "RolloutPolicy",
        _spec("RolloutPolicy", "steps.3.setFlag.variants.off", 70),
        "spec.steps[3].setFlag.variants",
    ),
    ("no-steps", "RolloutPolicy", {"steps": []}, "spec.steps"),
    (
        "bad-reclaim-policy",
        "OwnedDatabase",
        _spec("OwnedDatabase", "reclaimPolicy", "Destroy"),
        "spec.reclaimPolicy",
    ),
    ("no-server-ref", "OwnedDatabase", _spec("OwnedDatabase", "serverRef", remove=True),
     "spec.serverRef"),
    (
        "port-out-of-range",
        "DatabaseServer",
        _spec("DatabaseServer", "port", 70000),
        "spec.port",
    ),
    ("tls-mode-prefer", "DatabaseServer", _spec("DatabaseServer", "tls.mode", "prefer"),
     "spec.tls.mode"),
    (
        "verify-ca-without-ca",
        "DatabaseServer",
        _spec("DatabaseServer", "tls", {"mode": "verify-ca"}),
        "spec.tls",
    ),
    (
        "empty-namespace-selector",
        "DatabaseServer",
        _spec("DatabaseServer", "namespaceSelector", {}),
        "spec.namespaceSelector",
    ),
    (
        "bad-namespace-pattern",
        "DatabaseServer",
        _spec("DatabaseServer", "allowedNamespaces", ["Shop/x"]),
        "spec.allowedNamespaces[0]",
    ),
    (
        "bad-database-name",
        "OwnedDatabase",
        _spec("OwnedDatabase", "databaseName", "Orders-DB"),
        "spec.databaseName",
    ),
    (
        "missing-expand",
        "SchemaMigration",
        _spec("SchemaMigration", "expand", remove=True),
        "spec.expand",
    ),
    (
        "zero-batch-size",
        "SchemaMigration",
        _spec("SchemaMigration", "backfill.batchSize", 0),
        "spec.backfill.batchSize",
    ),
    ("missing-spec-migration", "MigrationApproval", {}, "spec.migration"),
    (
        "approve-down",
        "MigrationApproval",
        _spec("MigrationApproval", "phase", "down"),
        "spec.phase",
    ),
    ("no-spec-at-all", "MigrationApproval", None, "spec"),
    ("unknown-state", "FeatureFlag", _spec("FeatureFlag", "state", "ON"), "spec.state"),
    ("no-variants", "FeatureFlag", _spec("FeatureFlag", "variants", {}), "spec.variants"),
]


def _body(kind: KindDescriptor, name: str, spec: dict[str, Any] | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": kind.api_version,
        "kind": kind.kind,
        "metadata": {"name": name},
    }
    if spec is not None:
        body["spec"] = spec
    return body


def _create(api: kubernetes.client.ApiClient, namespace: str, body: dict[str, Any],
            **options: Any) -> Any:
    """Create ``body`` in ``namespace``; a cluster-scoped kind's object is named after the
    namespace (``<namespace>-<name>``) so that no two tests share one."""
    kind = kind_named(body["kind"])
    custom = CustomObjectsApi(api)
    if not kind.namespaced:
        body = {**body, "metadata": {"name": f"{namespace}-{body['metadata']['name']}"}}
        return custom.create_cluster_custom_object(
            kind.group, kind.version, kind.plural, body, **options)  # fmt: skip
    return custom.create_namespaced_custom_object(
        kind.group, kind.version, namespace, kind.plural, body, **options
    )


def _listed(api: kubernetes.client.ApiClient, namespace: str, kind: KindDescriptor) -> list[Any]:
    """The objects of ``kind`` this test made (for a cluster-scoped kind, those named after
    the namespace)."""
    custom = CustomObjectsApi(api)
    if not kind.namespaced:
        items = custom.list_cluster_custom_object(kind.group, kind.version, kind.plural)["items"]
        return [{**o, "metadata": {**o["metadata"],
                                   "name": o["metadata"]["name"].removeprefix(f"{namespace}-")}}
                for o in items if o["metadata"]["name"].startswith(f"{namespace}-")]  # fmt: skip
    items_: list[Any] = custom.list_namespaced_custom_object(
        kind.group, kind.version, namespace, kind.plural
    )["items"]
    return items_


@pytest.fixture
def cluster_objects_removed(kube_api: kubernetes.client.ApiClient, namespace: str) -> Any:
    """After the test, the cluster-scoped objects it made (they outlive its namespace)."""
    yield
    custom = CustomObjectsApi(kube_api)
    for kind in KINDS:
        if not kind.namespaced:
            for obj in _listed(kube_api, namespace, kind):
                custom.delete_cluster_custom_object(
                    kind.group, kind.version, kind.plural, f"{namespace}-{obj['metadata']['name']}")


@pytest.mark.usefixtures("cluster_objects_removed")
def test_malformed_objects_are_refused_naming_the_field(
    kube_api: kubernetes.client.ApiClient, namespace: str
) -> None:
    unrefused, unnamed = [], []
    for case, kind_name, spec, field in MALFORMED:
        kind = kind_named(kind_name)
        try:
            _create(kube_api, namespace, _body(kind, case, spec))
        except ApiException as refused:
            if refused.status != 422 or field not in str(refused.body):
                unnamed.append(f"{case}: {refused.status} {refused.body}")
        else:
            unrefused.append(case)
    assert not unrefused, f"accepted: {unrefused}"
    assert not unnamed, "\n".join(unnamed)
    for kind in KINDS:
        assert _listed(kube_api, namespace, kind) == [], kind.kind


# defaultVariant, variant types and targeting are beyond CEL (free-form JSON); the admission
# webhook refuses them: tests/cluster/test_feature_flags.py.


# The shared operator's webhooks fill in an approval's approver, migration UID and checksum.
@pytest.mark.usefixtures("cluster_objects_removed", "operator")
@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_a_valid_object_of_each_kind_is_accepted(
    kube_api: kubernetes.client.ApiClient, namespace: str, kind: KindDescriptor
) -> None:
    if kind.kind == "MigrationApproval":  # an approval must name a migration that exists
        migration = kind_named("SchemaMigration")
        _create(kube_api, namespace,
                _body(migration, "orders-total-cents", VALID["SchemaMigration"]))
    created = _create(kube_api, namespace, _body(kind, "valid", VALID[kind.kind]))
    assert created["metadata"]["name"] == ("valid" if kind.namespaced else f"{namespace}-valid")
    parsed = kind.spec_model.model_validate(created["spec"])
    if kind.kind == "MigrationApproval":  # admission fills in who, which UID, which SQL
        assert {"approver", "migrationUID", "checksum"} <= set(created["spec"])
        parsed = parsed.model_copy(update={"approver": None, "migration_uid": None,
                                           "checksum": None})
    assert parsed == kind.spec_model.model_validate(VALID[kind.kind])
    assert [o["metadata"]["name"] for o in _listed(kube_api, namespace, kind)] == ["valid"]


def test_the_api_server_fills_in_defaults(
    kube_api: kubernetes.client.ApiClient, namespace: str
) -> None:
    created = _create(
        kube_api,
        namespace,
        _body(kind_named("Microservice"), "defaults", {"image": "shop/catalog:1", "version": "1"}),
    )
    spec = created["spec"]
    assert spec["replicas"] == 1
    assert spec["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]


def test_an_owned_database_with_the_old_inline_server_is_refused(
    kube_api: kubernetes.client.ApiClient, namespace: str
) -> None:
    """v1alpha1 dropped spec.server (host, port, adminSecretRef) for spec.serverRef: an old
    manifest is refused as kubectl apply sends it (strict field validation), not pruned."""
    old = {"owner": "payments", "reclaimPolicy": "Delete",
           "server": {"host": "postgres.db", "port": 5432, "adminSecretRef": {"name": "pg-admin"}},
           "serverRef": {"name": "shared-postgres"}}  # fmt: skip
    with pytest.raises(ApiException) as refused:
        _create(kube_api, namespace, _body(kind_named("OwnedDatabase"), "old", old),
                field_validation="Strict")
    assert refused.value.status == 400
    message = json.loads(refused.value.body)["message"]
    assert 'unknown field "spec.server"' in message, message
