"""OwnedDatabase on a real PostgreSQL: database, role, credentials Secret, one owner, reclaim."""

from __future__ import annotations

import base64
from typing import Any

import psycopg
import pytest
from kubernetes.client.exceptions import ApiException

from pilotboat import API_VERSION
from pilotboat.handlers.databases import database_claim
from tests.fixtures.postgres import PostgresServer
from tests.manifests import microservice
from tests.story import Story

pytestmark = pytest.mark.usefixtures("operator")


def admin_secret(server: PostgresServer, name: str = "pg-admin") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "stringData": {"username": server.superuser, "password": server.password},
    }


def owned_database(
    name: str, server: PostgresServer, *, owner: str = "orders", reclaim: str = "Retain",
    secret: str = "pg-admin",
) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "OwnedDatabase",
        "metadata": {"name": name},
        "spec": {
            "owner": owner,
            "server": {"host": server.host, "port": server.port,
                       "adminSecretRef": {"name": secret}},
            "reclaimPolicy": reclaim,
        },
    }


def secret_values(story: Story, name: str) -> dict[str, str]:
    secret = story.get("Secret", name)
    assert secret is not None, f"no Secret {name}"
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def database_exists(server: PostgresServer, dbname: str) -> bool:
    with psycopg.connect(server.admin_dsn, autocommit=True) as conn:
        row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
        return row is not None


def role_exists(server: PostgresServer, role: str) -> bool:
    with psycopg.connect(server.admin_dsn, autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() \
            is not None


def test_an_owned_database_gets_a_role_a_database_and_a_credentials_secret(
    story: Story, postgres_server: PostgresServer
) -> None:
    story.given(admin_secret(postgres_server), owned_database("orders-db", postgres_server,
                                                              reclaim="Delete"))

    odb = story.wait_condition("OwnedDatabase", "orders-db", "Ready")

    status = odb["status"]
    assert status["phase"] == "Ready"
    assert status["secretName"] == "pilotboat-db-orders-db"
    assert "pilotboat.dev/database" in odb["metadata"]["finalizers"]
    values = secret_values(story, "pilotboat-db-orders-db")
    assert set(values) == {"host", "port", "dbname", "user", "password", "uri"}
    assert values["dbname"] == status["databaseName"]
    assert values["user"] == status["roleName"]
    secret = story.get("Secret", "pilotboat-db-orders-db")
    assert secret is not None
    assert secret["metadata"]["labels"]["pilotboat.dev/owner-service"] == "orders"
    ref = secret["metadata"]["ownerReferences"][0]
    assert (ref["kind"], ref["uid"]) == ("OwnedDatabase", odb["metadata"]["uid"])
    with psycopg.connect(values["uri"], autocommit=True) as conn:
        who = conn.execute("SELECT current_user, current_database()").fetchone()
        conn.execute("CREATE TABLE owned_here (id int)")  # the owner may create objects
    assert who == (values["user"], values["dbname"])

    # The password is generated once: a later pass keeps it.
    story.patch("OwnedDatabase", "orders-db", {"metadata": {"labels": {"touched": "yes"}}})
    story.wait_condition("OwnedDatabase", "orders-db", "Ready")
    assert secret_values(story, "pilotboat-db-orders-db")["password"] == values["password"]
    events = story.describe("OwnedDatabase", "orders-db")
    assert values["password"] not in events

    story.delete("OwnedDatabase", "orders-db").wait_gone("OwnedDatabase", "orders-db")
    assert not database_exists(postgres_server, values["dbname"])
    assert not role_exists(postgres_server, values["user"])


def test_retain_keeps_the_database_and_needs_no_finalizer(
    story: Story, postgres_server: PostgresServer
) -> None:
    story.given(admin_secret(postgres_server), owned_database("kept", postgres_server))
    odb = story.wait_condition("OwnedDatabase", "kept", "Ready")
    assert not odb["metadata"].get("finalizers")
    dbname = odb["status"]["databaseName"]

    story.delete("OwnedDatabase", "kept").wait_gone("OwnedDatabase", "kept")

    assert database_exists(postgres_server, dbname)
    with psycopg.connect(postgres_server.admin_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{dbname}" WITH (FORCE)')


def test_a_missing_admin_secret_is_named_until_it_appears(
    story: Story, postgres_server: PostgresServer
) -> None:
    story.given(owned_database("late", postgres_server, secret="pg-root"))

    odb = story.wait_condition("OwnedDatabase", "late", "Ready", "False")
    ready = next(c for c in odb["status"]["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "AdminSecretMissing"
    assert "pg-root" in ready["message"]

    story.given(admin_secret(postgres_server, "pg-root"))
    story.wait_condition("OwnedDatabase", "late", "Ready", timeout=60)


def test_an_unreachable_server_is_reported(story: Story, postgres_server: PostgresServer) -> None:
    manifest = owned_database("nowhere", postgres_server)
    manifest["spec"]["server"]["port"] = 1  # nothing listens there
    story.given(admin_secret(postgres_server), manifest)

    odb = story.wait_condition("OwnedDatabase", "nowhere", "Ready", "False")
    ready = next(c for c in odb["status"]["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "ServerUnreachable"
    assert "127.0.0.1:1" in ready["message"]


def test_only_the_owner_may_claim_the_database(
    story: Story, postgres_server: PostgresServer
) -> None:
    story.given(admin_secret(postgres_server), owned_database("orders-db", postgres_server))
    story.wait_condition("OwnedDatabase", "orders-db", "Ready")

    owner = database_claim(story.kube, story.namespace, "orders", "orders-db")
    other = database_claim(story.kube, story.namespace, "payments", "orders-db")
    missing = database_claim(story.kube, story.namespace, "orders", "nope")

    assert owner.allowed and owner.secret_name == "pilotboat-db-orders-db"
    assert not other.allowed and other.secret_name is None
    assert other.reason == "DatabaseOwnedByAnother"
    assert "owned by Microservice orders" in other.message
    assert not missing.allowed and missing.reason == "DatabaseNotFound"

    # The admission webhook refuses the second claimant when it is applied.
    story.given(microservice("orders", database={"ownedDatabase": "orders-db"}))
    with pytest.raises(ApiException) as refused:
        story.given(microservice("payments", database={"ownedDatabase": "orders-db"}))
    assert refused.value.status == 403
    assert "owned by Microservice orders" in str(refused.value.body)
    assert story.get("Microservice", "payments") is None


def _env_names(deployment: dict[str, Any] | None) -> dict[str, Any]:
    assert deployment is not None
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("valueFrom") for e in container.get("env", [])}


def test_only_the_owners_deployment_gets_the_credentials(
    story: Story, postgres_server: PostgresServer
) -> None:
    story.given(admin_secret(postgres_server), owned_database("orders-db", postgres_server))
    story.given(
        microservice("orders", replicas=1, database={"ownedDatabase": "orders-db"}),
        microservice("payments", replicas=1),
    )
    story.wait_condition("Microservice", "orders", "Ready", timeout=90)
    story.wait_condition("Microservice", "payments", "Ready", timeout=90)

    orders_env = _env_names(story.get("Deployment", "orders"))
    assert orders_env["DATABASE_URL"] == {
        "secretKeyRef": {"name": "pilotboat-db-orders-db", "key": "uri"}
    }
    assert {"PGHOST", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSWORD"} <= set(orders_env)
    payments_env = _env_names(story.get("Deployment", "payments"))
    assert not {"DATABASE_URL", "PGPASSWORD"} & set(payments_env)
    for deployment in story.kube.list("Deployment", story.namespace):
        text = str(deployment["spec"]["template"])
        assert secret_values(story, "pilotboat-db-orders-db")["password"] not in text


def test_a_service_claiming_anothers_database_is_left_unreconciled(
    story: Story, postgres_server: PostgresServer
) -> None:
    # The claim is made before the database names its owner, so admission cannot refuse
    # it; the reconciler is the second line of defence: no Deployment, a condition, an Event.
    story.given(microservice("reports", replicas=1, database={"ownedDatabase": "orders-db"}))
    ms = story.wait_condition("Microservice", "reports", "DatabaseClaimed", "False")
    assert "does not exist" in str(ms["status"]["conditions"])
    story.given(admin_secret(postgres_server), owned_database("orders-db", postgres_server))
    story.wait_condition("OwnedDatabase", "orders-db", "Ready")

    def refused(o: dict[str, Any] | None) -> bool:
        conds = ((o or {}).get("status") or {}).get("conditions") or []
        return any(c["type"] == "DatabaseClaimed" and c["reason"] == "DatabaseOwnedByAnother"
                   for c in conds)

    ms = story.wait_for("Microservice", "reports", refused, timeout=60, what="refused")
    assert ms is not None
    cond = next(c for c in ms["status"]["conditions"] if c["type"] == "DatabaseClaimed")
    assert "owned by Microservice orders" in cond["message"]
    assert story.get("Deployment", "reports") is None
    assert any(e["reason"] == "DatabaseOwnedByAnother" and e["type"] == "Warning"
               for e in story.events("reports"))
