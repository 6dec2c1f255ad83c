"""OwnedDatabase on a real PostgreSQL: database, role, credentials Secret, one owner, reclaim."""

from __future__ import annotations

import base64
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from kubernetes.client.exceptions import ApiException

from pilotboat import API_VERSION
from pilotboat.adapters.kube import Kube
from pilotboat.adapters.postgres import role_names
from pilotboat.handlers.databases import database_claim, owner_secret_name
from tests.conftest import OPERATOR_NAMESPACE, SESSION
from tests.fixtures.fake_postgres import AUTH_CLEARTEXT, AUTH_MD5, FakePostgres
from tests.fixtures.postgres import PG_BIN, PostgresServer, running_server
from tests.manifests import microservice
from tests.story import Story

pytestmark = pytest.mark.usefixtures("operator")


# DatabaseServers and their Secrets (in the operator's namespace) are cluster-wide: each
# carries this session's label and prefix (conftest deletes them at the end of the session).
SESSION_LABELS = {"pilotboat.dev/test-session": SESSION}
SESSION_NAMESPACES = (f"t{SESSION}-*", f"x{SESSION}-*")


def admin_secret(server: PostgresServer, name: str = "pg-admin") -> dict[str, Any]:
    """The admin Secret of ``server`` in the operator's namespace (apply it with
    ``kube.apply``: ``story.given`` would put it in the test's namespace)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": f"t{SESSION}-{name}", "namespace": OPERATOR_NAMESPACE,
                     "labels": SESSION_LABELS},
        "stringData": {"username": server.superuser, "password": server.password},
    }


def server_name(server: PostgresServer, secret: str = "pg-admin") -> str:
    """The DatabaseServer of ``server`` whose admin Secret is ``secret``."""
    return f"t{SESSION}-pg{server.port}-{secret}"


def database_server(
    server: PostgresServer, *, secret: str = "pg-admin", name: str | None = None,
    namespaces: tuple[str, ...] = SESSION_NAMESPACES, **spec: Any,
) -> dict[str, Any]:
    """A DatabaseServer for ``server`` (no TLS: the test server has none), admitting
    ``namespaces`` (by default every namespace of this session); ``spec`` adds or replaces
    fields."""
    return {
        "apiVersion": API_VERSION,
        "kind": "DatabaseServer",
        "metadata": {"name": name or server_name(server, secret), "labels": SESSION_LABELS},
        "spec": {
            "host": server.host, "port": server.port, "tls": {"mode": "disable"},
            "adminSecretRef": {"name": f"t{SESSION}-{secret}"},
            "allowedNamespaces": list(namespaces), **spec,
        },
    }


def given_server(kube: Kube, server: PostgresServer, *, secret: str = "pg-admin",
                 with_secret: bool = True) -> str:
    """``server``'s DatabaseServer (and its admin Secret unless ``with_secret`` is false),
    admitting this session's namespaces; its name."""
    if with_secret:
        kube.apply(admin_secret(server, secret))
    manifest = database_server(server, secret=secret)
    kube.apply(manifest)
    return str(manifest["metadata"]["name"])


def owned_database(
    name: str, server: PostgresServer | str, *, owner: str = "orders", reclaim: str = "Retain",
    secret: str = "pg-admin",
) -> dict[str, Any]:
    """An OwnedDatabase on ``server`` (a DatabaseServer's name, or the test PostgreSQL's
    DatabaseServer with admin Secret ``secret``: see :func:`given_server`)."""
    ref = server if isinstance(server, str) else server_name(server, secret)
    return {
        "apiVersion": API_VERSION,
        "kind": "OwnedDatabase",
        "metadata": {"name": name},
        "spec": {"owner": owner, "serverRef": {"name": ref}, "reclaimPolicy": reclaim},
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
    given_server(story.kube, postgres_server)
    story.given(owned_database("orders-db", postgres_server, reclaim="Delete"))

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
        with pytest.raises(psycopg.errors.InsufficientPrivilege):  # the runtime role: no DDL
            conn.execute("CREATE TABLE owned_here (id int)")
    assert who == (values["user"], values["dbname"])

    # The password is generated once: a later pass keeps it.
    story.patch("OwnedDatabase", "orders-db", {"metadata": {"labels": {"touched": "yes"}}})
    story.wait_condition("OwnedDatabase", "orders-db", "Ready")
    assert secret_values(story, "pilotboat-db-orders-db")["password"] == values["password"]
    events = story.describe("OwnedDatabase", "orders-db")
    assert values["password"] not in events

    story.delete("OwnedDatabase", "orders-db").wait_gone("OwnedDatabase", "orders-db")
    assert not database_exists(postgres_server, values["dbname"])
    for role in role_names(values["user"].removesuffix("_rw")).all():
        assert not role_exists(postgres_server, role)
    owner_secret = owner_secret_name(story.namespace, "orders-db")
    assert story.kube.get("Secret", OPERATOR_NAMESPACE, owner_secret) is None


def test_retain_keeps_the_database_and_needs_no_finalizer(
    story: Story, postgres_server: PostgresServer
) -> None:
    given_server(story.kube, postgres_server)
    story.given(owned_database("kept", postgres_server))
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
    server = given_server(story.kube, postgres_server, secret="pg-root", with_secret=False)
    story.given(owned_database("late", server))

    odb = story.wait_condition("OwnedDatabase", "late", "Ready", "False")
    ready = next(c for c in odb["status"]["conditions"] if c["type"] == "Ready")
    assert (odb["status"]["phase"], ready["reason"]) == ("Refused", "AdminSecretMissing")
    # Named where it must be: in the operator's namespace, never the tenant's.
    assert f"admin Secret t{SESSION}-pg-root of DatabaseServer {server}" in ready["message"]
    assert f"namespace {OPERATOR_NAMESPACE}" in ready["message"]
    assert any(e["reason"] == "AdminSecretMissing" and e["type"] == "Warning"
               for e in story.events("late"))

    story.kube.apply(admin_secret(postgres_server, "pg-root"))
    story.wait_condition("OwnedDatabase", "late", "Ready", timeout=60)


def test_an_unreachable_server_is_reported(story: Story, postgres_server: PostgresServer) -> None:
    story.kube.apply(admin_secret(postgres_server))
    nowhere = database_server(postgres_server, name=f"t{SESSION}-nowhere", port=1)
    story.kube.apply(nowhere)  # nothing listens on port 1
    story.given(owned_database("nowhere", f"t{SESSION}-nowhere"))

    odb = story.wait_condition("OwnedDatabase", "nowhere", "Ready", "False")
    ready = next(c for c in odb["status"]["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "ServerUnreachable"
    assert f"DatabaseServer t{SESSION}-nowhere (127.0.0.1:1)" in ready["message"]


def test_only_the_owner_may_claim_the_database(
    story: Story, postgres_server: PostgresServer
) -> None:
    given_server(story.kube, postgres_server)
    story.given(owned_database("orders-db", postgres_server))
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
    given_server(story.kube, postgres_server)
    story.given(owned_database("orders-db", postgres_server))
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
    given_server(story.kube, postgres_server)
    story.given(owned_database("orders-db", postgres_server))
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
    given_server(shop.kube, postgres_server)
    shop.given(owned_database("order-db", postgres_server),
               owned_database("order.db", postgres_server))
    given_server(shop_order.kube, postgres_server)
    shop_order.given(owned_database("db", postgres_server))

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
        manifest["spec"]["runtimeSchemaChanges"] = True  # the test makes a table as the service
        return manifest

    given_server(shop.kube, postgres_server)
    shop.given(claiming("order-db"))
    first = shop.wait_condition("OwnedDatabase", "order-db", "Ready", timeout=60)
    owner_values = secret_values(shop, "pilotboat-db-order-db")
    with psycopg.connect(owner_values["uri"], autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (id int)")
        conn.execute("INSERT INTO orders VALUES (1), (2)")

    given_server(shop_order.kube, postgres_server)
    shop_order.given(claiming("db"))
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


# --- the DatabaseServer decides who may use it, and how the operator logs in -----------------

def _ready(odb: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in odb["status"]["conditions"] if c["type"] == "Ready")


def _with_reason(reason: str) -> Any:
    def check(o: dict[str, Any] | None) -> bool:
        conds = ((o or {}).get("status") or {}).get("conditions") or []
        return any(c["type"] == "Ready" and c["reason"] == reason for c in conds)
    return check


def test_an_owned_database_naming_no_server_is_refused(story: Story) -> None:
    story.given(owned_database("orphan", f"t{SESSION}-no-such-server"))

    odb = story.wait_for("OwnedDatabase", "orphan", _with_reason("DatabaseServerNotFound"),
                         timeout=60, what="refused")
    assert odb is not None and odb["status"]["phase"] == "Refused"
    assert f"DatabaseServer t{SESSION}-no-such-server" in _ready(odb)["message"]


def test_a_namespace_the_server_does_not_admit_is_refused_before_connecting(
    story: Story, postgres_server: PostgresServer
) -> None:
    name = f"t{SESSION}-guarded-{secrets.token_hex(2)}"
    tenant_label = {"pilotboat.dev/db-tenant": name}
    with FakePostgres() as listener:  # records every connection; answers nothing
        story.kube.apply(admin_secret(postgres_server))
        story.kube.apply(database_server(
            postgres_server, name=name, port=listener.port,
            namespaces=("elsewhere", f"{story.namespace}-not-this"),
            namespaceSelector={"matchLabels": tenant_label}))  # fmt: skip
        story.given(owned_database("orders-db", name, reclaim="Delete"))

        odb = story.wait_for("OwnedDatabase", "orders-db", _with_reason("NamespaceNotAllowed"),
                             timeout=60, what="refused")
        assert odb is not None and odb["status"]["phase"] == "Refused"
        message = _ready(odb)["message"]
        assert f"DatabaseServer {name}" in message and story.namespace in message
        assert not odb["metadata"].get("finalizers")  # a refused database holds nothing up
        assert any(e["reason"] == "NamespaceNotAllowed" and e["type"] == "Warning"
                   for e in story.events("orders-db"))
        assert listener.connections == 0 and listener.received == b""

        # The same server, once the namespace carries the label its selector wants: the
        # operator does connect (to a listener that never answers), so the refusal above
        # was what kept it away.
        story.kube.merge_patch("Namespace", None, story.namespace,
                               {"metadata": {"labels": tenant_label}})
        story.wait_for("OwnedDatabase", "orders-db", _with_reason("ServerUnreachable"),
                       timeout=90, what="tried to connect")
        assert listener.connections >= 1


@pytest.mark.parametrize(("auth", "method"), [(AUTH_CLEARTEXT, "a cleartext password"),
                                              (AUTH_MD5, "an MD5 password")],
                         ids=["cleartext", "md5"])
def test_a_server_asking_for_a_weaker_password_method_never_gets_the_password(
    story: Story, postgres_server: PostgresServer, auth: int, method: str
) -> None:
    name = f"t{SESSION}-weak-{secrets.token_hex(2)}"
    with FakePostgres(auth=auth) as fake:
        story.kube.apply(admin_secret(postgres_server))
        story.kube.apply(database_server(postgres_server, name=name, port=fake.port))
        story.given(owned_database("orders-db", name))

        odb = story.wait_for("OwnedDatabase", "orders-db", _with_reason("AuthenticationRefused"),
                             timeout=60, what="refused")
        assert odb is not None
        message = _ready(odb)["message"]
        assert f"DatabaseServer {name}" in message and method in message
        assert "scram-sha-256" in message
        # The operator reached the handshake (as the admin user), and sent no password.
        assert fake.startups and fake.startups[0]["user"] == postgres_server.superuser
        assert not fake.password_sent, fake.message_types
        assert postgres_server.password.encode() not in fake.received
        assert postgres_server.password not in story.describe("OwnedDatabase", "orders-db")


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _ca(folder: Path, name: str) -> tuple[Path, Path]:
    key, crt = folder / f"{name}.key", folder / f"{name}.crt"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
             "-subj", f"/CN=pilotboat test {name}", "-keyout", str(key), "-out", str(crt))
    return key, crt


@dataclass(frozen=True)
class TlsPostgres:
    server: PostgresServer
    ca: str  # PEM of the CA that signed the server's certificate (for 127.0.0.1)
    other_ca: str  # PEM of a CA that did not


@pytest.fixture(scope="module")
def tls_postgres() -> Iterator[TlsPostgres]:
    """A second real PostgreSQL with ``ssl=on``, a certificate for 127.0.0.1 signed by a
    throwaway CA, and ``hostssl`` lines only: a login without TLS is refused."""
    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"PostgreSQL binaries not found in {PG_BIN}")
    folder = Path(tempfile.mkdtemp(prefix="pilotboat-tls-"))
    try:
        ca_key, ca_crt = _ca(folder, "ca")
        _, other_crt = _ca(folder, "other-ca")
        key, csr, crt, ext = (folder / n for n in ("server.key", "server.csr", "server.crt",
                                                   "san.ext"))  # fmt: skip
        ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
                 "-keyout", str(key), "-out", str(csr))
        _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key),
                 "-CAcreateserial", "-days", "1", "-out", str(crt), "-extfile", str(ext))
        folder.chmod(0o711)
        key.chmod(0o600)
        if os.geteuid() == 0:  # the server runs as the postgres user and reads its key
            user = pwd.getpwnam("postgres")
            for path in (key, crt):
                os.chown(path, user.pw_uid, user.pw_gid)
        settings = {"ssl": "on", "ssl_cert_file": str(crt), "ssl_key_file": str(key)}
        with running_server(settings=settings) as server:
            (server.datadir / "pg_hba.conf").write_text(
                "local all all scram-sha-256\n"
                "hostssl all all 127.0.0.1/32 scram-sha-256\n")
            with psycopg.connect(server.dsn(), autocommit=True) as conn:  # TLS: prefer
                conn.execute("SELECT pg_reload_conf()")
            yield TlsPostgres(server, ca_crt.read_text(), other_crt.read_text())
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _ca_secret(name: str, pem: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": OPERATOR_NAMESPACE,
                         "labels": SESSION_LABELS},
            "stringData": {"ca.crt": pem}}  # fmt: skip


def _verify_full_server(story: Story, tls_postgres: TlsPostgres, label: str, ca: str) -> str:
    """A DatabaseServer for the TLS-only PostgreSQL that verifies it against ``ca``."""
    name = f"t{SESSION}-tls-{label}-{secrets.token_hex(2)}"
    story.kube.apply(admin_secret(tls_postgres.server, "pg-tls-admin"))
    story.kube.apply(_ca_secret(name, ca))
    story.kube.apply(database_server(
        tls_postgres.server, name=name, secret="pg-tls-admin",
        tls={"mode": "verify-full", "caSecretRef": {"name": name}}))  # fmt: skip
    return name


def test_verify_full_with_the_servers_ca_connects_over_tls(
    story: Story, tls_postgres: TlsPostgres
) -> None:
    name = _verify_full_server(story, tls_postgres, "ok", tls_postgres.ca)
    story.given(owned_database("orders-db", name, reclaim="Delete"))

    odb = story.wait_condition("OwnedDatabase", "orders-db", "Ready", timeout=60)
    assert odb["status"]["databaseName"]  # made over TLS: the server takes nothing else
    story.delete("OwnedDatabase", "orders-db").wait_gone("OwnedDatabase", "orders-db")


def test_verify_full_refuses_a_certificate_from_another_ca(
    story: Story, tls_postgres: TlsPostgres
) -> None:
    name = _verify_full_server(story, tls_postgres, "other", tls_postgres.other_ca)
    story.given(owned_database("orders-db", name))

    odb = story.wait_for("OwnedDatabase", "orders-db", _with_reason("ServerUnreachable"),
                         timeout=60, what="refused")
    assert odb is not None
    assert "certificate verify failed" in _ready(odb)["message"]


def test_verify_full_refuses_a_server_without_tls(
    story: Story, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    # The default mode insists on TLS, with the CA from a Secret in the operator's namespace.
    _, crt = _ca(tmp_path, "ca")
    name = f"t{SESSION}-tls-{secrets.token_hex(2)}"
    with FakePostgres(auth=AUTH_CLEARTEXT) as fake:
        story.kube.apply(admin_secret(postgres_server))
        story.kube.apply(_ca_secret(name, crt.read_text()))
        story.kube.apply(database_server(
            postgres_server, name=name, port=fake.port,
            tls={"mode": "verify-full", "caSecretRef": {"name": name}}))  # fmt: skip
        story.given(owned_database("orders-db", name))

        odb = story.wait_for("OwnedDatabase", "orders-db", _with_reason("ServerUnreachable"),
                             timeout=60, what="refused")
        assert odb is not None
        assert "server does not support SSL, but SSL was required" in _ready(odb)["message"]
        assert fake.encryption_requests and set(fake.encryption_requests) == {"ssl"}
        assert not fake.startups and not fake.password_sent  # nothing past the SSL request


# --- three roles: the service never holds the owner's password (issue 13) ------------------

def _migration(name: str, expand: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION, "kind": "SchemaMigration", "metadata": {"name": name},
        "spec": {"database": "orders-db", "requiredBy": {"service": "orders", "version": "v2"},
                 "expand": {"sql": expand},
                 "contract": {"sql": "ALTER TABLE orders DROP COLUMN IF EXISTS note"}},
    }


def _denied(dsn: str, text: str) -> str:
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as caught, \
            psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(text)
    return str(caught.value)


def _superuser(server: PostgresServer, dbname: str, text: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(server.dsn(dbname), autocommit=True) as conn:
        cursor = conn.execute(text)
        return cursor.fetchall() if cursor.description else []


def _owner_secret(story: Story, name: str) -> dict[str, str]:
    secret = story.kube.get("Secret", OPERATOR_NAMESPACE, owner_secret_name(story.namespace, name))
    assert secret is not None, f"no owner Secret for {name} in {OPERATOR_NAMESPACE}"
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def _tenant_secret_texts(story: Story) -> str:
    return "\n".join(base64.b64decode(v).decode(errors="replace")
                     for secret in story.kube.list("Secret", story.namespace)
                     for v in (secret.get("data") or {}).values())


def test_the_service_gets_the_runtime_role_and_migrations_run_as_the_owner(
    story: Story, postgres_server: PostgresServer
) -> None:
    given_server(story.kube, postgres_server)
    story.given(owned_database("orders-db", postgres_server, reclaim="Delete"))
    odb = story.wait_condition("OwnedDatabase", "orders-db", "Ready")
    runtime = secret_values(story, "pilotboat-db-orders-db")
    readonly = secret_values(story, "pilotboat-readonly-db-orders-db")
    owner = _owner_secret(story, "orders-db")
    names = role_names(owner["user"])

    # The tenant's namespace holds the runtime and read-only logins, never the owner's.
    assert (runtime["user"], readonly["user"]) == (names.runtime, names.readonly)
    assert odb["status"]["roleName"] == names.runtime
    assert set(readonly) == set(runtime) == {"host", "port", "dbname", "user", "password", "uri"}
    assert owner["dbname"] == runtime["dbname"] == odb["status"]["databaseName"]
    assert owner["password"] not in _tenant_secret_texts(story)
    owner_labels = story.kube.get("Secret", OPERATOR_NAMESPACE,
                                  owner_secret_name(story.namespace, "orders-db"))
    assert owner_labels is not None
    assert owner_labels["metadata"]["labels"]["pilotboat.dev/owned-database"] == "orders-db"
    assert owner_labels["metadata"]["labels"][
        "pilotboat.dev/owned-database-namespace"] == story.namespace

    # A migration runs as the owner (its Secret in the operator's namespace), once.
    expand = ("CREATE TABLE IF NOT EXISTS orders (id bigint GENERATED ALWAYS AS IDENTITY "
              "PRIMARY KEY, customer_name text NOT NULL)")
    story.given(_migration("create-orders", expand))
    story.wait_condition("SchemaMigration", "create-orders", "ExpandApplied", timeout=90)
    dbname = runtime["dbname"]
    assert _superuser(postgres_server, dbname,
                      "SELECT tableowner FROM pg_tables WHERE tablename = 'orders'") == [
        (names.owner,)]
    assert _superuser(postgres_server, dbname,
                      "SELECT count(*) FROM pilotboat.pilotboat_schema_history "
                      "WHERE migration = 'create-orders'") == [(1,)]

    # The service: DML yes; DDL on the migration's table, new tables, the history: no.
    with psycopg.connect(runtime["uri"], autocommit=True) as conn:
        conn.execute("INSERT INTO orders (customer_name) VALUES ('Ada'), ('Alan')")
        conn.execute("UPDATE orders SET customer_name = 'Ada L' WHERE customer_name = 'Ada'")
        conn.execute("DELETE FROM orders WHERE customer_name = 'Alan'")
        assert conn.execute("SELECT customer_name FROM orders").fetchall() == [("Ada L",)]
    assert "must be owner of table orders" in _denied(
        runtime["uri"], "ALTER TABLE orders ADD COLUMN note text")
    assert "permission denied for schema public" in _denied(
        runtime["uri"], "CREATE TABLE mine (id int)")
    for text in ("SELECT * FROM pilotboat.pilotboat_schema_history",
                 "DELETE FROM pilotboat.pilotboat_schema_history",
                 "INSERT INTO pilotboat.pilotboat_schema_history (migration, phase, checksum, "
                 "applied_by, statements, duration_ms) VALUES ('x', 'expand', 'c', 'me', 1, 1)"):
        assert "permission denied for schema pilotboat" in _denied(runtime["uri"], text)
    # Read-only: SELECT, nothing else.
    with psycopg.connect(readonly["uri"], autocommit=True) as conn:
        assert conn.execute("SELECT customer_name FROM orders").fetchall() == [("Ada L",)]
    _denied(readonly["uri"], "INSERT INTO orders (customer_name) VALUES ('Grace')")

    story.delete("OwnedDatabase", "orders-db").wait_gone("OwnedDatabase", "orders-db")
    assert not database_exists(postgres_server, dbname)
    assert not any(role_exists(postgres_server, role) for role in names.all())
    assert story.kube.get("Secret", OPERATOR_NAMESPACE,
                          owner_secret_name(story.namespace, "orders-db")) is None


def test_runtime_schema_changes_lets_the_service_create_tables_a_migration_then_alters(
    story: Story, postgres_server: PostgresServer
) -> None:
    # The shop's way: the service creates its table at start, a migration alters it later.
    given_server(story.kube, postgres_server)
    manifest = owned_database("orders-db", postgres_server, reclaim="Delete")
    manifest["spec"]["runtimeSchemaChanges"] = True
    story.given(manifest)
    story.wait_condition("OwnedDatabase", "orders-db", "Ready")
    runtime = secret_values(story, "pilotboat-db-orders-db")
    with psycopg.connect(runtime["uri"], autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS orders (id bigint PRIMARY KEY, "
                     "customer_name text)")
        conn.execute("INSERT INTO orders VALUES (1, 'Ada Lovelace')")

    story.given(_migration("add-note", "ALTER TABLE orders ADD COLUMN IF NOT EXISTS note text;"
                                       "\nCREATE TABLE IF NOT EXISTS audit (id int)"))
    story.wait_condition("SchemaMigration", "add-note", "ExpandApplied", timeout=90)
    with psycopg.connect(runtime["uri"], autocommit=True) as conn:
        conn.execute("UPDATE orders SET note = 'gift'")
        conn.execute("INSERT INTO audit VALUES (1)")
    assert "must be owner of table audit" in _denied(runtime["uri"],
                                                     "ALTER TABLE audit ADD COLUMN x int")
    assert "permission denied for schema pilotboat" in _denied(
        runtime["uri"], "DELETE FROM pilotboat.pilotboat_schema_history")
    readonly = secret_values(story, "pilotboat-readonly-db-orders-db")
    with psycopg.connect(readonly["uri"], autocommit=True) as conn:
        assert conn.execute("SELECT note FROM orders").fetchall() == [("gift",)]
    story.delete("OwnedDatabase", "orders-db").wait_gone("OwnedDatabase", "orders-db")


def test_an_older_operators_tenant_secret_with_the_owners_password_is_replaced(
    story: Story, postgres_server: PostgresServer
) -> None:
    given_server(story.kube, postgres_server)
    story.given(owned_database("orders-db", postgres_server, reclaim="Delete"))
    story.wait_condition("OwnedDatabase", "orders-db", "Ready")
    owner = _owner_secret(story, "orders-db")
    dbname = owner["dbname"]
    # What an older operator left: the owner's login in the tenant's Secret, no owner Secret.
    for attempt in range(10):  # the operator's own pass may be altering the role right now
        try:
            _superuser(postgres_server, "postgres",
                       f"ALTER ROLE \"{owner['user']}\" PASSWORD 'legacy-owner-pw'")
            break
        except psycopg.errors.InternalError_:  # tuple concurrently updated
            if attempt == 9:
                raise
            time.sleep(0.5)
    story.kube.delete("Secret", OPERATOR_NAMESPACE,
                      owner_secret_name(story.namespace, "orders-db"))
    legacy_uri = (f"postgresql://{owner['user']}:legacy-owner-pw@{postgres_server.host}:"
                  f"{postgres_server.port}/{dbname}")
    story.kube.merge_patch("Secret", story.namespace, "pilotboat-db-orders-db", {"stringData": {
        "user": owner["user"], "password": "legacy-owner-pw", "uri": legacy_uri}})

    story.patch("OwnedDatabase", "orders-db", {"metadata": {"labels": {"upgraded": "yes"}}})
    story.wait_for("Secret", "pilotboat-db-orders-db",
                   lambda s: base64.b64decode(((s or {}).get("data") or {}).get("user", ""))
                   .decode().endswith("_rw"), timeout=60, what="the runtime login")
    story.wait_condition("OwnedDatabase", "orders-db", "Ready")
    runtime = secret_values(story, "pilotboat-db-orders-db")
    new_owner = _owner_secret(story, "orders-db")
    assert runtime["user"] == role_names(owner["user"]).runtime
    assert runtime["password"] != "legacy-owner-pw"
    assert new_owner["password"] not in ("legacy-owner-pw", owner["password"])
    assert new_owner["password"] not in _tenant_secret_texts(story)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the owner's new password is set after the Secrets
        try:
            psycopg.connect(legacy_uri).close()
        except psycopg.OperationalError as error:
            assert "password authentication failed" in str(error)
            break
        time.sleep(0.5)
    else:
        raise AssertionError("the password the tenant held still logs in as the owner")
    # The Secret is written before the role's password is set (so a crash between the two
    # loses no password): the runtime login works once the pass that wrote it has finished.
    deadline = time.monotonic() + 60
    while True:
        try:
            with psycopg.connect(runtime["uri"], autocommit=True) as conn:
                assert conn.execute("SELECT current_user").fetchone() == (runtime["user"],)
            break
        except psycopg.OperationalError as error:
            assert "password authentication failed" in str(error)
            assert time.monotonic() < deadline, f"the runtime login never worked: {error}"
            time.sleep(0.5)
    story.delete("OwnedDatabase", "orders-db").wait_gone("OwnedDatabase", "orders-db")


def test_deleting_when_the_server_no_longer_admits_the_namespace_leaves_the_database(
    story: Story, postgres_server: PostgresServer
) -> None:
    name = f"t{SESSION}-revoked-{secrets.token_hex(2)}"
    story.kube.apply(admin_secret(postgres_server))
    story.kube.apply(database_server(postgres_server, name=name))
    story.given(owned_database("orders-db", name, reclaim="Delete"))
    odb = story.wait_condition("OwnedDatabase", "orders-db", "Ready", timeout=60)
    dbname = odb["status"]["databaseName"]

    # The platform team takes the namespace off the server: the operator may no longer act
    # for it there, so deleting the OwnedDatabase drops nothing and does not hang.
    story.kube.apply(database_server(postgres_server, name=name, namespaces=("elsewhere",)))
    story.delete("OwnedDatabase", "orders-db").wait_gone("OwnedDatabase", "orders-db",
                                                         timeout=60)
    try:
        assert database_exists(postgres_server, dbname)
        assert any(e["reason"] == "DatabaseNotDropped" and "does not allow namespace"
                   in e["message"] for e in story.events("orders-db"))
    finally:
        _drop(postgres_server, dbname)
