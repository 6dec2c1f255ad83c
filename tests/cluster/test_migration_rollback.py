"""Migrations and the releases around them: a release rolled back before the contract takes
its expand back only when asked (and never contracts), and two migrations of one database
never run at the same time."""

from __future__ import annotations

import datetime as _dt
import time
from typing import Any

import psycopg
import pytest

from pilotboat import API_VERSION
from tests.cluster.test_databases import given_server, owned_database, secret_values
from tests.cluster.test_migrations import (
    SUPERUSER_DSN,
    condition,
    history,
    remember_superuser,
)
from tests.fixtures.postgres import PostgresServer
from tests.manifests import microservice
from tests.story import Story

pytestmark = pytest.mark.usefixtures("operator")

STEPS = [{"setWeight": 50}, {"pause": {"untilPromoted": True}}]


def orders(version: str) -> dict[str, Any]:
    return microservice("orders", version=version, replicas=2,
                        database={"ownedDatabase": "orders-db"},
                        rollout={"canary": {"steps": STEPS}})


def migration(name: str, expand: str, *, down: str | None = None, run_down: bool = False,
              contract: str = "ALTER TABLE orders DROP COLUMN legacy_note") -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "SchemaMigration",
        "metadata": {"name": name},
        "spec": {
            "database": "orders-db",
            "requiredBy": {"service": "orders", "version": "v2"},
            "expand": {"sql": expand, **({"down": down} if down else {})},
            "contract": {"sql": contract, "soak": "0s"},
            "runDownOnRollback": run_down,
        },
    }


def given_orders_database(story: Story, server: PostgresServer) -> str:
    """The OwnedDatabase of `orders`, with its old table (created by the service, so
    ``runtimeSchemaChanges``); the service's DSN."""
    given_server(story.kube, server)
    database = owned_database("orders-db", server)
    database["spec"]["runtimeSchemaChanges"] = True
    story.given(database)
    story.wait_condition("OwnedDatabase", "orders-db", "Ready")
    dsn = remember_superuser(server, secret_values(story, "pilotboat-db-orders-db")["uri"])
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (id bigint PRIMARY KEY, legacy_note text)")
        conn.execute("INSERT INTO orders SELECT i, 'n' || i FROM generate_series(1, 20) i")
    return dsn


def columns(dsn: str) -> set[str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return {r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'orders'")}


def status_of(obj: dict[str, Any] | None) -> dict[str, Any]:
    return (obj or {}).get("status") or {}


def phase_is(phase: str):  # type: ignore[no-untyped-def]
    return lambda obj: status_of(obj).get("phase") == phase


@pytest.mark.parametrize("run_down", [True, False], ids=["runDownOnRollback", "keepExpand"])
def test_a_release_rolled_back_before_contract_never_contracts(
    story: Story, postgres_server: PostgresServer, run_down: bool
) -> None:
    dsn = given_orders_database(story, postgres_server)
    story.given(orders("v1"))
    story.wait_for("Microservice", "orders", phase_is("Healthy"), timeout=90, what="Healthy")

    story.given(migration("add-customer", "ALTER TABLE orders ADD COLUMN customer text",
                          down="ALTER TABLE orders DROP COLUMN customer", run_down=run_down))
    # An approval already there: nothing but the rollback stands between it and a contract.
    story.given({"apiVersion": API_VERSION, "kind": "MigrationApproval",
                 "metadata": {"name": "go"}, "spec": {"migration": "add-customer"}})
    story.apply(orders("v2"))

    # The release runs on the expanded schema, then someone aborts it.
    ms = story.wait_for("Microservice", "orders",
                        lambda o: phase_is("Paused")(o) and status_of(o)["currentStepIndex"] == 1,
                        timeout=120, what="paused for promotion at v2")
    assert ms is not None and status_of(ms)["canaryVersion"] == "v2"
    assert [p for p, _ in history(dsn, "add-customer")] == ["expand"]
    assert "customer" in columns(dsn)
    story.patch_status_command("orders", "abort")
    ms = story.wait_for("Microservice", "orders", phase_is("Degraded"), timeout=60,
                        what="rolled back")
    assert ms is not None and status_of(ms)["canaryVersion"] == "v2"

    mig = story.wait_for("SchemaMigration", "add-customer", phase_is("RolledBack"),
                         timeout=60, what="RolledBack")
    time.sleep(4)  # several passes later: nothing more ran
    mig = story.get("SchemaMigration", "add-customer")
    ready = condition(mig, "Ready")
    if run_down:
        assert [p for p, _ in history(dsn, "add-customer")] == ["expand", "down"]
        assert "customer" not in columns(dsn)
        assert [p["phase"] for p in status_of(mig)["appliedPhases"]] == ["expand", "down"]
        assert "the rollout was rolled back" in status_of(mig)["appliedPhases"][1]["appliedBy"]
        reasons = [e["reason"] for e in story.events("add-customer")]
        assert reasons.count("DownApplied") == 1, reasons
    else:
        assert [p for p, _ in history(dsn, "add-customer")] == ["expand"]
        assert "customer" in columns(dsn)
        assert ready["reason"] == "RolloutRolledBack"
        assert "expand stays" in ready["message"]
    assert "legacy_note" in columns(dsn), "the contract ran"
    assert "ContractApplied" not in [e["reason"] for e in story.events("add-customer")]

    # The Microservice stays rolled back; the old version's data is all there.
    ms = story.get("Microservice", "orders")
    assert status_of(ms)["phase"] == "Degraded" and status_of(ms)["stableVersion"] == "v1"
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM orders").fetchone() == (20,)


def test_a_retry_waits_for_an_expand_its_down_took_back(
    story: Story, postgres_server: PostgresServer
) -> None:
    dsn = given_orders_database(story, postgres_server)
    story.given(orders("v1"))
    story.wait_for("Microservice", "orders", phase_is("Healthy"), timeout=90, what="Healthy")
    story.given(migration("add-customer", "ALTER TABLE orders ADD COLUMN customer text",
                          down="ALTER TABLE orders DROP COLUMN customer", run_down=True))
    story.apply(orders("v2"))
    story.wait_for("Microservice", "orders", phase_is("Paused"), timeout=120, what="paused")
    story.patch_status_command("orders", "abort")
    story.wait_for("SchemaMigration", "add-customer", phase_is("RolledBack"), timeout=60)
    story.wait_for("SchemaMigration", "add-customer",
                   lambda o: "down" in [p["phase"] for p in status_of(o).get("appliedPhases", [])],
                   timeout=30, what="down applied")
    assert "customer" not in columns(dsn)

    story.patch_status_command("orders", "retry")
    ms = story.wait_condition("Microservice", "orders", "MigrationsReady", "False", timeout=30)
    cond = condition(ms, "MigrationsReady")
    assert "add-customer" in cond["message"] and "down" in cond["message"], cond
    time.sleep(3)
    ms = story.get("Microservice", "orders")
    assert status_of(ms)["canaryWeight"] == 0
    canary = story.get("Deployment", "orders-canary")
    assert canary is None or canary["spec"]["replicas"] == 0, "v2 runs without its expand"


def test_two_migrations_of_one_database_never_run_at_the_same_time(
    story: Story, postgres_server: PostgresServer
) -> None:
    dsn = given_orders_database(story, postgres_server)
    # Each expand holds the database for 3 s; run together they would overlap.
    slow = "SELECT pg_sleep(3);\nALTER TABLE orders ADD COLUMN {0} text;"
    story.given(migration("add-customer", slow.format("customer")),
                migration("add-channel", slow.format("channel")))

    for name in ("add-customer", "add-channel"):
        story.wait_condition("SchemaMigration", name, "ExpandApplied", timeout=90)
    with psycopg.connect(SUPERUSER_DSN[dsn], autocommit=True) as conn:
        rows = conn.execute(
            "SELECT migration, applied_at - duration_ms * interval '1 millisecond', applied_at "
            "FROM pilotboat.pilotboat_schema_history WHERE phase = 'expand' "
            "ORDER BY applied_at").fetchall()
    spans: list[tuple[str, _dt.datetime, _dt.datetime]] = [(r[0], r[1], r[2]) for r in rows]
    assert sorted(s[0] for s in spans) == ["add-channel", "add-customer"]
    (_, _, first_end), (_, second_start, _) = spans
    assert all(end - start >= _dt.timedelta(seconds=3) for _, start, end in spans), spans
    assert second_start >= first_end, f"the two expands overlapped: {spans}"
    assert {"customer", "channel"} <= columns(dsn)
