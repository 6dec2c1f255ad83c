"""OwnedDatabase on a real PostgreSQL: database, role, credentials Secret, one owner, reclaim."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from kubernetes.client.exceptions import ApiException

from pilotboat import API_VERSION
from pilotboat.adapters.kube import Kube
from pilotboat.handlers.databases import database_claim
from tests.conftest import SESSION
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


# --- names that look alike never share a database ------------------------------------------

@pytest.fixture
def lookalike_namespaces(kube: Kube) -> Iterator[tuple[Story, Story]]:
    """Namespaces ``X`` and ``X-order`` (both watched): ``X/order-db``, ``X-order/db`` and
    ``X/order.db`` read alike once ``-`` and ``.`` become ``_``."""
    base = f"t{SESSION}-trio-{secrets.token_hex(2)}"
    stories = []
    for name in (base, f"{base}-order"):
        kube.apply({"apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": name, "labels": {"pilotboat.dev/test": "true"}}})
        stories.append(Story(kube, name))
    yield stories[0], stories[1]
    for story in stories:
        for odb in story.kube.list("OwnedDatabase", story.namespace):
            story.kube.merge_patch("OwnedDatabase", story.namespace, odb["metadata"]["name"],
                                   {"metadata": {"finalizers": None}})
        kube.delete("Namespace", None, story.namespace)


def _ready_reason(odb: dict[str, Any]) -> tuple[str, str]:
    ready = next(c for c in odb["status"]["conditions"] if c["type"] == "Ready")
    return ready["reason"], ready["message"]


def _drop(server: PostgresServer, *dbnames: str) -> None:
    with psycopg.connect(server.admin_dsn, autocommit=True) as conn:
        for dbname in dbnames:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


def test_lookalike_names_get_databases_and_roles_of_their_own(
    lookalike_namespaces: tuple[Story, Story], postgres_server: PostgresServer
) -> None:
    shop, shop_order = lookalike_namespaces
    shop.given(admin_secret(postgres_server), owned_database("order-db", postgres_server),
               owned_database("order.db", postgres_server))
    shop_order.given(admin_secret(postgres_server), owned_database("db", postgres_server))

    objs = [shop.wait_condition("OwnedDatabase", "order-db", "Ready", timeout=60),
            shop.wait_condition("OwnedDatabase", "order.db", "Ready", timeout=60),
            shop_order.wait_condition("OwnedDatabase", "db", "Ready", timeout=60)]
    names = [(o["status"]["databaseName"], o["status"]["roleName"]) for o in objs]
    try:
        assert len({db for db, _ in names}) == 3, names
        assert len({role for _, role in names}) == 3, names
        # Each owner's credentials reach its own database, and only that one.
        for story, name in ((shop, "order-db"), (shop, "order.db"), (shop_order, "db")):
            values = secret_values(story, f"pilotboat-db-{name}")
            with psycopg.connect(values["uri"], autocommit=True) as conn:
                assert conn.execute("SELECT current_database()").fetchone() == (values["dbname"],)
    finally:
        _drop(postgres_server, *(db for db, _ in names))


def test_a_database_named_by_another_owner_is_refused_and_never_dropped(
    lookalike_namespaces: tuple[Story, Story], postgres_server: PostgresServer
) -> None:
    shop, shop_order = lookalike_namespaces
    dbname = f"shop_order_db_{secrets.token_hex(3)}"

    def claiming(name: str) -> dict[str, Any]:
        manifest = owned_database(name, postgres_server, reclaim="Delete")
        manifest["spec"]["databaseName"] = dbname
        return manifest

    shop.given(admin_secret(postgres_server), claiming("order-db"))
    first = shop.wait_condition("OwnedDatabase", "order-db", "Ready", timeout=60)
    owner_values = secret_values(shop, "pilotboat-db-order-db")
    with psycopg.connect(owner_values["uri"], autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (id int)")
        conn.execute("INSERT INTO orders VALUES (1), (2)")

    shop_order.given(admin_secret(postgres_server), claiming("db"))
    shop.given(claiming("order.db"))
    for story, name in ((shop_order, "db"), (shop, "order.db")):
        refused = story.wait_condition("OwnedDatabase", name, "Ready", "False", timeout=60)
        reason, message = _ready_reason(refused)
        assert (refused["status"]["phase"], reason) == ("Refused", "DatabaseOwnedByAnother")
        assert f"belongs to OwnedDatabase {shop.namespace}/order-db" in message
        assert first["metadata"]["uid"] in message

    # Deleting the colliders (reclaimPolicy Delete) drops nothing of the owner's.
    shop_order.delete("OwnedDatabase", "db").wait_gone("OwnedDatabase", "db")
    shop.delete("OwnedDatabase", "order.db").wait_gone("OwnedDatabase", "order.db")
    assert any(e["reason"] == "DatabaseNotDropped" for e in shop_order.events("db"))
    try:
        assert database_exists(postgres_server, dbname)
        with psycopg.connect(owner_values["uri"], autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM orders").fetchone() == (2,)
    finally:
        shop.delete("OwnedDatabase", "order-db").wait_gone("OwnedDatabase", "order-db")
    assert not database_exists(postgres_server, dbname)
