"""SchemaMigrations on a real PostgreSQL: phases in order, gates that block until they hold,
approvals that RBAC controls, crashes that repeat nothing."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import psycopg
import pytest
import yaml
from kubernetes.client.exceptions import ApiException
from psycopg.conninfo import conninfo_to_dict

from pilotboat import API_VERSION
from pilotboat.adapters.kube import Kube
from pilotboat.handlers.migrations import migrations_blocking
from pilotboat.handlers.webhooks import webhook_configuration_name
from pilotboat.testing import OperatorProcess
from tests.cluster.test_databases import given_server, owned_database, secret_values
from tests.fixtures.postgres import PostgresServer
from tests.manifests import FAKE_NODE_PLACEMENT
from tests.story import Story

REPO = Path(__file__).resolve().parents[2]

EXPAND = """
ALTER TABLE orders ADD COLUMN customer text;
CREATE FUNCTION orders_sync_customer() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.customer := COALESCE(NEW.customer, NEW.customer_name);
  RETURN NEW;
END $$;
CREATE TRIGGER orders_sync_customer BEFORE INSERT OR UPDATE ON orders
  FOR EACH ROW EXECUTE FUNCTION orders_sync_customer();
"""
BACKFILL = (
    "UPDATE orders SET customer = customer_name WHERE id IN (SELECT id FROM orders "
    "WHERE customer IS NULL AND customer_name IS NOT NULL LIMIT :batch_size)"
)
VERIFY = "SELECT count(*) = 0 FROM orders WHERE customer IS DISTINCT FROM customer_name"
CONTRACT = """
DROP TRIGGER orders_sync_customer ON orders;
DROP FUNCTION orders_sync_customer();
ALTER TABLE orders DROP COLUMN customer_name;
"""


def schema_migration(name: str = "customer-column", **overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "database": "orders-db",
        "requiredBy": {"service": "orders", "version": "v2"},
        "expand": {"sql": EXPAND},
        "backfill": {"sql": BACKFILL, "batchSize": 10},
        "verify": {"sql": VERIFY},
        "contract": {"sql": CONTRACT, "soak": "2s"},
        **overrides,
    }
    return {"apiVersion": API_VERSION, "kind": "SchemaMigration", "metadata": {"name": name},
            "spec": spec}


def workload(version: str, replicas: int) -> dict[str, Any]:
    """Pods of one version of `orders`, as any Deployment would run them (on KWOK nodes)."""
    labels = {"app.kubernetes.io/name": "orders", "app.kubernetes.io/version": version}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": f"orders-{version}", "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": f"orders:{version}"}],
                         **FAKE_NODE_PLACEMENT},
            },
        },
    }


def running(story: Story, version: str) -> int:
    pods = story.kube.list("Pod", story.namespace, labels={"app.kubernetes.io/version": version})
    return len([p for p in pods if not p["metadata"].get("deletionTimestamp")])


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for cond in (obj or {}).get("status", {}).get("conditions", []) or []:
        if cond["type"] == type_:
            return dict(cond)
    return {}


# The service's (runtime role's) DSN -> the superuser's DSN of the same database: the
# history is in schema pilotboat, which the service cannot read.
SUPERUSER_DSN: dict[str, str] = {}


def remember_superuser(server: PostgresServer, dsn: str) -> str:
    SUPERUSER_DSN[dsn] = server.dsn(str(conninfo_to_dict(dsn)["dbname"]))
    return dsn


def history(dsn: str, migration: str = "customer-column") -> list[tuple[str, str]]:
    with psycopg.connect(SUPERUSER_DSN.get(dsn, dsn), autocommit=True) as conn:
        if conn.execute("SELECT to_regclass('pilotboat.pilotboat_schema_history')"
                        ).fetchone() == (None,):
            return []
        return [(r[0], r[1]) for r in conn.execute(
            "SELECT phase, checksum FROM pilotboat.pilotboat_schema_history "
            "WHERE migration = %s ORDER BY id", (migration,)).fetchall()]


def write_rows_as_old_version(dsn: str, first: int, count: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for i in range(first, first + count):
            conn.execute("INSERT INTO orders (id, customer_name) VALUES (%s, %s)",
                         (i, f"customer-{i}"))


def given_database_with_orders(story: Story, server: PostgresServer) -> str:
    """An OwnedDatabase for `orders` with the old schema and 25 rows, the table created by
    the service (as the shop's do: ``runtimeSchemaChanges``); the service's DSN."""
    given_server(story.kube, server)
    database = owned_database("orders-db", server)
    database["spec"]["runtimeSchemaChanges"] = True
    story.given(database)
    story.wait_condition("OwnedDatabase", "orders-db", "Ready")
    dsn = remember_superuser(server, secret_values(story, "pilotboat-db-orders-db")["uri"])
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (id bigint PRIMARY KEY, customer_name text)")
    write_rows_as_old_version(dsn, 1, 25)
    return dsn


def impersonating(kubeconfig: Path, user: str) -> Kube:
    api = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
    api.set_default_header("Impersonate-User", user)
    return Kube(api, field_manager="pilotboat-tests")


def given_approver(kube: Kube, namespace: str, kubeconfig: Path) -> tuple[Kube, str]:
    """A ServiceAccount bound to the migration-approver ClusterRole, and a client acting as it."""
    kube.apply(yaml.safe_load((REPO / "manifests/rbac/migration-approver.yaml").read_text()))
    kube.apply({"apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": "dba", "namespace": namespace}})
    kube.apply({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "dba-approves", "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "pilotboat-migration-approver"},
        "subjects": [{"kind": "ServiceAccount", "name": "dba", "namespace": namespace}],
    })
    user = f"system:serviceaccount:{namespace}:dba"
    return impersonating(kubeconfig, user), user


def approval(name: str, migration: str = "customer-column", **meta: Any) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "MigrationApproval",
            "metadata": {"name": name, **meta}, "spec": {"migration": migration}}


def create_in(kube: Kube, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
    obj = {**obj, "metadata": {**obj["metadata"], "namespace": namespace}}
    return kube.create(obj)


@pytest.mark.usefixtures("operator")
def test_expand_backfill_verify_approval_contract_in_order(
    story: Story, postgres_server: PostgresServer, kubeconfig: Path
) -> None:
    dsn = given_database_with_orders(story, postgres_server)
    story.given(workload("v1", 2))
    story.wait_for("Deployment", "orders-v1", lambda _: running(story, "v1") == 2)

    story.given(schema_migration())

    # Expand and backfill run at once; the contract waits for the old version to go.
    mig = story.wait_condition("SchemaMigration", "customer-column", "ExpandApplied")
    assert [p for p, _ in history(dsn)] == ["expand", "backfill"]
    assert mig["status"]["backfill"]["rowsProcessed"] == 25
    assert mig["status"]["backfill"]["done"] is True
    assert migrations_blocking(story.kube, story.namespace, "orders", "v2") == []
    gone = condition(mig, "OldVersionsGone")
    assert gone["status"] == "False" and gone["reason"] == "OldVersionsRunning"
    assert "version v1 still runs in 2 pods" in gone["message"]
    assert mig["status"]["phase"] == "Expanded"

    # The old version keeps writing; one row disagrees, which verify must catch.
    write_rows_as_old_version(dsn, 26, 10)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO orders (id, customer_name, customer) VALUES (99, 'a', 'b')")

    # The new version takes over: old pods gone, soak passes, verify fails.
    story.given(workload("v2", 2), workload("v1", 0))
    mig = story.wait_condition("SchemaMigration", "customer-column", "SoakElapsed", timeout=60)
    mig = story.wait_for("SchemaMigration", "customer-column",
                         lambda o: condition(o, "VerifyHolds").get("reason") == "VerifyFailed",
                         what="verify failing")
    assert condition(mig, "OldVersionsGone")["status"] == "True"
    assert "contract" not in [p for p, _ in history(dsn)]

    # Fixed data: verify holds, but nobody approved yet.
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE orders SET customer = customer_name WHERE id = 99")
    mig = story.wait_condition("SchemaMigration", "customer-column", "VerifyHolds", timeout=30)
    approved = condition(mig, "Approved")
    assert approved["status"] == "False" and approved["reason"] == "NotApproved"
    assert mig["status"]["phase"] == "AwaitingContract"
    time.sleep(1)
    assert "contract" not in [p for p, _ in history(dsn)]

    # A DBA approves: the contract runs, once.
    as_dba, user = given_approver(story.kube, story.namespace, kubeconfig)
    create_in(as_dba, story.namespace, approval("dba-says-yes"))
    mig = story.wait_for("SchemaMigration", "customer-column",
                         lambda o: (o or {}).get("status", {}).get("phase") == "Contracted",
                         what="Contracted")
    assert [p for p, _ in history(dsn)] == ["expand", "backfill", "contract"]
    assert [p["phase"] for p in mig["status"]["appliedPhases"]] == \
        ["expand", "backfill", "contract"]
    assert user in mig["status"]["appliedPhases"][2]["appliedBy"]
    recorded = story.wait_for("MigrationApproval", "dba-says-yes",
                              lambda o: (o or {}).get("status", {}).get("valid") is True)
    assert recorded is not None
    assert recorded["status"]["approvedBy"]["username"] == user

    # Every row the old version wrote is there, in the new column.
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT id, customer FROM orders ORDER BY id").fetchall()
        columns = [r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'orders'")]
    assert "customer_name" not in columns
    assert [r[0] for r in rows] == [*range(1, 36), 99]
    assert all(r[1] == f"customer-{r[0]}" for r in rows if r[0] != 99)

    reasons = [e["reason"] for e in story.events("customer-column")]
    for applied in ("ExpandApplied", "BackfillApplied", "ContractApplied"):
        assert reasons.count(applied) == 1, reasons
    assert "OldVersionsRunning" in reasons and "NotApproved" in reasons


@pytest.mark.usefixtures("operator")
def test_unsafe_expand_sql_is_refused_with_the_statement_and_rule(
    story: Story, postgres_server: PostgresServer
) -> None:
    dsn = given_database_with_orders(story, postgres_server)
    story.given(schema_migration(expand={"sql": "ALTER TABLE orders DROP COLUMN customer_name;"}))

    mig = story.wait_for("SchemaMigration", "customer-column",
                         lambda o: (o or {}).get("status", {}).get("phase") == "Failed")

    safe = condition(mig, "SqlSafe")
    assert safe["status"] == "False" and safe["reason"] == "UnsafeSql"
    assert "PB001 drop-column" in safe["message"]
    assert "ALTER TABLE orders DROP COLUMN customer_name" in safe["message"]
    assert condition(mig, "Ready")["reason"] == "UnsafeSql"
    assert history(dsn) == []
    warnings = [e for e in story.events("customer-column") if e["type"] == "Warning"]
    assert any("PB001" in e["message"] for e in warnings)


@pytest.mark.usefixtures("operator")
def test_kubectl_apply_warns_of_what_the_linter_finds_naming_the_field(
    story: Story, kubeconfig: Path
) -> None:
    """The linter answers at admission, as warnings: the object is stored (the reconciler
    refuses it, as above), and the author sees why at once, field by field."""

    def apply(obj: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(REPO / ".state" / "bin" / "kubectl"), "--kubeconfig", str(kubeconfig), "apply",
             "-n", story.namespace, "-f", "-"],
            input=yaml.safe_dump(obj), capture_output=True, text=True, check=True)

    unsafe = apply(schema_migration("unsafe", expand={
        "sql": "ALTER TABLE orders DROP COLUMN customer_name;\n"
               "ALTER TABLE orders ALTER COLUMN id SET NOT NULL;"}))
    warnings = [line for line in unsafe.stderr.splitlines() if line.startswith("Warning: ")]
    assert any(w.startswith("Warning: spec.expand.sql: PB001 drop-column (refused):")
               and "ALTER TABLE orders DROP COLUMN customer_name" in w for w in warnings), warnings
    assert len(warnings) >= 2, warnings
    assert story.get("SchemaMigration", "unsafe") is not None

    clean = apply(schema_migration("clean"))
    assert "Warning:" not in clean.stderr, clean.stderr


@pytest.mark.usefixtures("operator")
def test_changing_applied_sql_is_refused_as_a_checksum_mismatch(
    story: Story, postgres_server: PostgresServer
) -> None:
    dsn = given_database_with_orders(story, postgres_server)
    story.given(schema_migration(backfill=None, verify=None))
    story.wait_condition("SchemaMigration", "customer-column", "ExpandApplied")
    before = history(dsn)

    changed = EXPAND.replace("ADD COLUMN customer text", "ADD COLUMN customer varchar(80)")
    story.patch("SchemaMigration", "customer-column", {"spec": {"expand": {"sql": changed}}})

    mig = story.wait_for("SchemaMigration", "customer-column",
                         lambda o: condition(o, "Ready").get("reason") == "ChecksumMismatch")
    message = condition(mig, "Ready")["message"]
    assert mig["status"]["phase"] == "Failed"
    assert "expand was applied with checksum" in message
    assert before[0][1] in message
    assert history(dsn) == before


@pytest.mark.usefixtures("operator")
def test_approvals_are_rbac_controlled_stamped_and_voided_by_a_changed_contract(
    story: Story, postgres_server: PostgresServer, kubeconfig: Path
) -> None:
    given_database_with_orders(story, postgres_server)
    story.given(schema_migration())
    story.wait_condition("SchemaMigration", "customer-column", "ExpandApplied")
    as_dba, user = given_approver(story.kube, story.namespace, kubeconfig)
    story.kube.apply({"apiVersion": "v1", "kind": "ServiceAccount",
                      "metadata": {"name": "intruder", "namespace": story.namespace}})
    as_intruder = impersonating(kubeconfig, f"system:serviceaccount:{story.namespace}:intruder")

    with pytest.raises(ApiException) as refused:
        create_in(as_intruder, story.namespace, approval("sneaky"))
    assert refused.value.status == 403

    # A name typed into the object is replaced by the one the API server authenticated.
    forged = approval("dba-ok", annotations={
        "pilotboat.dev/approver": '{"username": "the-cto", "contractChecksum": "x"}'})
    create_in(as_dba, story.namespace, forged)
    ok = story.wait_for("MigrationApproval", "dba-ok",
                        lambda o: (o or {}).get("status", {}).get("valid") is True)
    assert ok is not None
    assert ok["status"]["approvedBy"]["username"] == user
    assert "system:serviceaccounts" in ok["status"]["approvedBy"]["groups"]
    assert "the-cto" not in ok["metadata"]["annotations"]["pilotboat.dev/approver"]

    # Nobody, not even an admin, rewrites who approved.
    with pytest.raises(ApiException) as rewrite:
        story.patch("MigrationApproval", "dba-ok", {"metadata": {"annotations": {
            "pilotboat.dev/approver": '{"username": "the-cto"}'}}})
    assert rewrite.value.status == 403

    # The contract SQL changes after approval: the approval is void.
    story.patch("SchemaMigration", "customer-column",
                {"spec": {"contract": {"sql": CONTRACT + "ANALYZE orders;\n"}}})
    void = story.wait_for("MigrationApproval", "dba-ok",
                          lambda o: (o or {}).get("status", {}).get("valid") is False)
    assert condition(void, "Valid")["reason"] == "ApprovalVoid"
    mig = story.wait_for("SchemaMigration", "customer-column",
                         lambda o: condition(o, "Approved").get("reason") == "ApprovalVoid")
    assert "void" in condition(mig, "Approved")["message"]


@pytest.fixture
def own_operator(kubeconfig: Path, private_namespace: str, kube: Kube,
                 tmp_path: Path) -> Iterator[OperatorProcess]:
    proc = OperatorProcess(kubeconfig, tmp_path, ["--namespace", private_namespace])
    yield proc
    proc.stop()
    name = webhook_configuration_name([private_namespace], None)
    kube.delete("MutatingWebhookConfiguration", None, name)
    kube.delete("ValidatingWebhookConfiguration", None, name)


def _approve_when_served(kube: Kube, namespace: str, proc: OperatorProcess) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            create_in(kube, namespace, approval("go"))
            return
        except ApiException as exc:
            if exc.status == 409:
                return
            if time.monotonic() > deadline:
                raise
        if proc.proc is not None and proc.proc.poll() is not None:
            # it crashed where the test wanted; the approval needs its webhook
            assert proc.proc.returncode == 86, proc.log_text()[-3000:]
            proc.start()
        time.sleep(0.5)


@pytest.mark.parametrize(
    "crash_at",
    ["migration.after-expand", "migration.after-backfill-batch", "migration.after-contract",
     "migration.before-status"],
)
def test_a_crash_in_any_phase_resumes_without_applying_anything_twice(
    kube: Kube, private_namespace: str, postgres_server: PostgresServer,
    own_operator: OperatorProcess, crash_at: str,
) -> None:
    story = Story(kube, private_namespace)
    own_operator.start()
    dsn = given_database_with_orders(story, postgres_server)
    story.given(workload("v2", 1))
    story.wait_for("Deployment", "orders-v2", lambda _: running(story, "v2") == 1)
    own_operator.stop()

    own_operator.start(env={"PILOTBOAT_CRASH_AT": crash_at})
    story.given(schema_migration(contract={"sql": CONTRACT, "soak": "1s"}))
    _approve_when_served(kube, private_namespace, own_operator)
    if own_operator.starts == 2:  # the approval got in before the crash: wait for it
        assert own_operator.wait_exit(timeout=60) == 86, own_operator.log_text()[-3000:]
        own_operator.start()
    assert own_operator.starts == 3

    mig = story.wait_for("SchemaMigration", "customer-column",
                         lambda o: (o or {}).get("status", {}).get("phase") == "Contracted",
                         timeout=90, what="Contracted")
    time.sleep(2)  # room for any duplicate work to show

    assert [p for p, _ in history(dsn)] == ["expand", "backfill", "contract"]
    assert [p["phase"] for p in mig["status"]["appliedPhases"]] == \
        ["expand", "backfill", "contract"]
    assert mig["status"]["backfill"]["rowsProcessed"] == 25
    reasons = [e["reason"] for e in story.events("customer-column")]
    for applied in ("ExpandApplied", "BackfillApplied", "ContractApplied"):
        assert reasons.count(applied) == 1, reasons
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM orders WHERE customer IS NOT NULL"
                            ).fetchone() == (25,)
