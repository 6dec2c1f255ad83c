"""The PostgreSQL engine against a real server (``tests.fixtures.postgres``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta

import psycopg
import pytest

from pilotboat.adapters.database import (
    ChecksumMismatch,
    DatabaseOwnedByAnother,
    DatabaseOwner,
    DatabaseUnavailable,
    MigrationLocked,
    PhaseFailed,
    PhaseOrderError,
    Timeouts,
)
from pilotboat.adapters.postgres import PostgresEngine, redact_dsn, role_names
from pilotboat.core.migration import Phase, checksum
from tests.fixtures.postgres import PostgresServer

pytestmark = pytest.mark.cluster

EXPAND = """
ALTER TABLE users ADD COLUMN full_name text;
CREATE OR REPLACE FUNCTION users_sync_full_name() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.full_name IS NULL THEN NEW.full_name := NEW.name; END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER users_sync_full_name BEFORE INSERT OR UPDATE ON users
  FOR EACH ROW EXECUTE FUNCTION users_sync_full_name();
"""
BACKFILL = ("UPDATE users SET full_name = name WHERE id IN "
            "(SELECT id FROM users WHERE full_name IS NULL ORDER BY id LIMIT :batch_size)")
CONTRACT = """
DROP TRIGGER users_sync_full_name ON users;
DROP FUNCTION users_sync_full_name();
ALTER TABLE users DROP COLUMN name;
"""


ORDERS = DatabaseOwner("uid-orders", "shop/orders-db")
PW = {"runtime_password": "runtime-pw-4d1e", "readonly_password": "readonly-pw-9a0b"}
OTHER = DatabaseOwner("uid-other", "shop/other-db")


def no_sleep(_: float) -> None:
    pass


@pytest.fixture
def engine() -> PostgresEngine:
    return PostgresEngine(sleep=no_sleep, lock_wait=timedelta(seconds=10))


@pytest.fixture
def users_db(fresh_database: str) -> str:
    """A database with the old version's table and, with a trigger disabled, legacy rows."""
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        conn.execute("CREATE TABLE users (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
                     " name text NOT NULL)")
        conn.execute("INSERT INTO users (name) SELECT 'user ' || g FROM generate_series(1, 25) g")
    return fresh_database


def query(dsn: str, text: str) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cursor = conn.execute(text)
        return cursor.fetchall() if cursor.description else []


def history_rows(dsn: str, migration: str) -> list[tuple[object, ...]]:
    return query(dsn, "SELECT phase, checksum, statements FROM pilotboat.pilotboat_schema_history "
                      f"WHERE migration = '{migration}' ORDER BY id")


# --- owned databases -----------------------------------------------------------------------

def test_database_and_role_are_created_idempotently_and_only_the_owner_gets_in(
        postgres_server: PostgresServer, engine: PostgresEngine) -> None:
    admin = postgres_server.admin_dsn
    password = "orders-pw-7f3a9c"
    engine.ensure_database(admin, "orders", "orders_owner", password, owner=ORDERS, **PW)
    engine.ensure_database(admin, "orders", "orders_owner", password, owner=ORDERS, **PW)
    engine.ensure_database(admin, "other", "other_owner", "other-pw-1b2c", owner=OTHER, **PW)
    try:
        own = postgres_server.dsn("orders", user="orders_owner", password=password)
        assert query(own, "SELECT current_user, current_database()") == [
            ("orders_owner", "orders")]
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(postgres_server.dsn("orders", user="orders_owner",
                                                password="wrong")).close()
        with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
            psycopg.connect(postgres_server.dsn("other", user="orders_owner",
                                                password=password)).close()
        assert query(admin, "SELECT has_database_privilege('public', 'orders', 'CONNECT')") == [
            (False,)]
        assert password not in postgres_server.log_text()
    finally:
        engine.drop_database(admin, "orders", "orders_owner", owner=ORDERS)
        engine.drop_database(admin, "other", "other_owner", owner=OTHER)
    assert query(admin, "SELECT count(*) FROM pg_database WHERE datname = 'orders'") == [(0,)]
    assert query(admin, "SELECT count(*) FROM pg_roles WHERE rolname = 'orders_owner'") == [(0,)]
    engine.drop_database(admin, "orders", "orders_owner", owner=ORDERS)  # absent: nothing to do


def test_password_change_converges(postgres_server: PostgresServer,
                                   engine: PostgresEngine) -> None:
    admin = postgres_server.admin_dsn
    engine.ensure_database(admin, "rotated", "rotated_owner", "first-pw", owner=ORDERS, **PW)
    engine.ensure_database(admin, "rotated", "rotated_owner", "second-pw", owner=ORDERS, **PW)
    try:
        dsn = postgres_server.dsn("rotated", user="rotated_owner", password="second-pw")
        assert query(dsn, "SELECT 1") == [(1,)]
    finally:
        engine.drop_database(admin, "rotated", "rotated_owner", owner=ORDERS)


def test_a_database_of_another_owner_is_not_taken_over(postgres_server: PostgresServer,
                                                       engine: PostgresEngine) -> None:
    admin = postgres_server.admin_dsn
    engine.ensure_database(admin, "taken", "first_owner", "pw-1", owner=ORDERS, **PW)
    try:
        with pytest.raises(DatabaseOwnedByAnother, match="belongs to OwnedDatabase shop/orders-db"):
            engine.ensure_database(admin, "taken", "second_owner", "pw-2", owner=OTHER, **PW)
        with pytest.raises(DatabaseOwnedByAnother):
            engine.drop_database(admin, "taken", "second_owner", owner=OTHER)
    finally:
        engine.drop_database(admin, "taken", "first_owner", owner=ORDERS)
        engine.drop_database(admin, "nothing", "second_owner", owner=OTHER)


def test_a_role_recorded_as_anothers_keeps_its_password_and_is_never_dropped(
        postgres_server: PostgresServer, engine: PostgresEngine) -> None:
    admin = postgres_server.admin_dsn
    engine.ensure_database(admin, "victim", "victim_owner", "victim-pw", owner=ORDERS, **PW)
    try:
        with pytest.raises(DatabaseOwnedByAnother) as refused:
            engine.ensure_database(admin, "victim", "victim_owner", "thief-pw", owner=OTHER, **PW)
        assert "role victim_owner belongs to OwnedDatabase shop/orders-db" in str(refused.value)
        with pytest.raises(DatabaseOwnedByAnother):
            engine.drop_database(admin, "victim", "victim_owner", owner=OTHER)
        own = postgres_server.dsn("victim", user="victim_owner", password="victim-pw")
        assert query(own, "SELECT current_user") == [("victim_owner",)]
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(postgres_server.dsn("victim", user="victim_owner",
                                                password="thief-pw")).close()
    finally:
        engine.drop_database(admin, "victim", "victim_owner", owner=ORDERS)
    assert query(admin, "SELECT count(*) FROM pg_database WHERE datname = 'victim'") == [(0,)]


def test_a_successor_of_the_same_namespace_and_name_takes_its_retained_database_back(
        postgres_server: PostgresServer, engine: PostgresEngine) -> None:
    admin = postgres_server.admin_dsn
    engine.ensure_database(admin, "kept", "kept_owner", "first-pw", owner=ORDERS, **PW)
    successor = DatabaseOwner("uid-orders-recreated", ORDERS.name)
    try:
        engine.ensure_database(admin, "kept", "kept_owner", "second-pw", owner=successor, **PW)
        dsn = postgres_server.dsn("kept", user="kept_owner", password="second-pw")
        assert query(dsn, "SELECT current_database()") == [("kept",)]
        comments = query(admin, "SELECT shobj_description(oid, 'pg_database') FROM pg_database "
                                "WHERE datname = 'kept'")
        assert comments == [(f"pilotboat owner: OwnedDatabase {ORDERS.name} "
                             "uid=uid-orders-recreated",)]
    finally:
        engine.drop_database(admin, "kept", "kept_owner", owner=successor)


def test_a_role_nobody_recorded_is_left_alone_with_the_sql_to_hand_it_over(
        postgres_server: PostgresServer, engine: PostgresEngine) -> None:
    admin = postgres_server.admin_dsn
    query(admin, "CREATE ROLE handmade LOGIN PASSWORD 'handmade-pw'")
    try:
        with pytest.raises(DatabaseOwnedByAnother) as refused:
            engine.ensure_database(admin, "handmade_db", "handmade", "new-pw", owner=ORDERS, **PW)
        assert "COMMENT ON ROLE handmade IS 'pilotboat owner: OwnedDatabase shop/orders-db " \
               "uid=uid-orders'" in str(refused.value)
        assert query(admin, "SELECT count(*) FROM pg_database WHERE datname = 'handmade_db'") \
            == [(0,)]
        assert query(postgres_server.dsn("postgres", user="handmade", password="handmade-pw"),
                     "SELECT current_user") == [("handmade",)]
        # The administrator hands it over as the message says; then it converges.
        query(admin, "COMMENT ON ROLE handmade IS "
                     "'pilotboat owner: OwnedDatabase shop/orders-db uid=uid-orders'")
        engine.ensure_database(admin, "handmade_db", "handmade", "new-pw", owner=ORDERS, **PW)
        assert query(postgres_server.dsn("handmade_db", user="handmade", password="new-pw"),
                     "SELECT current_database()") == [("handmade_db",)]
    finally:
        engine.drop_database(admin, "handmade_db", "handmade", owner=ORDERS)
        query(admin, "DROP ROLE IF EXISTS handmade")


def test_connection_errors_never_show_the_password(postgres_server: PostgresServer,
                                                   engine: PostgresEngine) -> None:
    dsn = postgres_server.dsn(password="not-the-password-XYZ")
    with pytest.raises(DatabaseUnavailable) as caught:
        engine.ensure_database(dsn, "x", "x_owner", "pw", owner=ORDERS, **PW)
    assert "not-the-password-XYZ" not in str(caught.value)
    assert "password=***" in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert "s3cret" not in redact_dsn("postgresql://a:s3cret@h/db")


# --- three roles: owner (migrations), runtime (the service), read-only ----------------------

SHOP_TABLE = ("CREATE TABLE orders (order_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
              "customer_name text NOT NULL)")


def _denied(dsn: str, text: str) -> str:
    """Run ``text``; it must fail for want of a privilege; the error's text."""
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as caught:
        query(dsn, text)
    return str(caught.value)


@pytest.fixture
def three_roles(postgres_server: PostgresServer, engine: PostgresEngine
                ) -> Iterator[dict[str, str]]:
    """Database ``roles_db`` with its three roles; the DSN of each role (and the admin's)."""
    admin = postgres_server.admin_dsn
    engine.ensure_database(admin, "roles_db", "roles_owner", "owner-pw-31f0", owner=ORDERS, **PW)
    names = role_names("roles_owner")
    yield {
        "admin": admin,
        "admin_db": postgres_server.dsn("roles_db"),
        "owner": postgres_server.dsn("roles_db", user=names.owner, password="owner-pw-31f0"),
        "runtime": postgres_server.dsn("roles_db", user=names.runtime,
                                       password=PW["runtime_password"]),
        "readonly": postgres_server.dsn("roles_db", user=names.readonly,
                                        password=PW["readonly_password"]),
    }
    engine.drop_database(admin, "roles_db", "roles_owner", owner=ORDERS)


def test_the_runtime_role_does_dml_but_no_ddl_and_never_touches_the_history(
        three_roles: dict[str, str], engine: PostgresEngine) -> None:
    owner, rw, ro = three_roles["owner"], three_roles["runtime"], three_roles["readonly"]
    result = engine.apply_phase(owner, "create-orders", Phase.EXPAND, SHOP_TABLE,
                                applied_by="test")
    assert result.applied
    assert query(rw, "SELECT current_user") == [("roles_owner_rw",)]

    # DML on a table the migration created, sequences included (default privileges).
    query(rw, "INSERT INTO orders (customer_name) VALUES ('Ada Lovelace'), ('Alan Turing')")
    query(rw, "UPDATE orders SET customer_name = 'Ada King' WHERE order_id = 1")
    query(rw, "DELETE FROM orders WHERE order_id = 2")
    assert query(rw, "SELECT customer_name FROM orders") == [("Ada King",)]

    # No DDL: the table is the owner's, the schema takes no CREATE from it.
    assert "must be owner of table orders" in _denied(
        rw, "ALTER TABLE orders ADD COLUMN note text")
    _denied(rw, "DROP TABLE orders")
    assert "permission denied for schema public" in _denied(rw, "CREATE TABLE mine (id int)")
    # The history: not readable, not writable, not even its schema.
    for text in ("SELECT * FROM pilotboat.pilotboat_schema_history",
                 "INSERT INTO pilotboat.pilotboat_schema_history (migration, phase, checksum, "
                 "applied_by, statements, duration_ms) VALUES ('x', 'expand', 'c', 'me', 1, 1)",
                 "DELETE FROM pilotboat.pilotboat_schema_history",
                 "UPDATE pilotboat.pilotboat_backfill_progress SET done = true",
                 "CREATE TABLE pilotboat.mine (id int)"):
        assert "permission denied for schema pilotboat" in _denied(rw, text)
    # Not a member of the owner: it cannot become it.
    assert "permission denied to set role" in _denied(rw, "SET ROLE roles_owner")
    assert query(rw, "SELECT pg_has_role('roles_owner', 'MEMBER')") == [(False,)]

    # The read-only role reads, and only reads.
    assert query(ro, "SELECT customer_name FROM orders") == [("Ada King",)]
    _denied(ro, "INSERT INTO orders (customer_name) VALUES ('Grace Hopper')")
    _denied(ro, "DELETE FROM orders")
    _denied(ro, "SELECT * FROM pilotboat.pilotboat_schema_history")
    _denied(ro, "CREATE TABLE mine (id int)")

    # A later migration still applies as the owner, and is recorded exactly once.
    add = "ALTER TABLE orders ADD COLUMN IF NOT EXISTS first_name text"
    assert engine.apply_phase(owner, "add-first-name", Phase.EXPAND, add,
                              applied_by="test").applied
    assert not engine.apply_phase(owner, "add-first-name", Phase.EXPAND, add,
                                  applied_by="test").applied
    assert history_rows(three_roles["admin_db"], "add-first-name") == [
        ("expand", checksum(add), 1)]
    query(rw, "UPDATE orders SET first_name = 'Ada'")  # the new column: default privileges


def test_every_role_carries_the_owner_marker_and_the_history_schema_is_the_owners(
        three_roles: dict[str, str]) -> None:
    admin = three_roles["admin"]
    marker = f"pilotboat owner: OwnedDatabase {ORDERS.name} uid={ORDERS.uid}"
    rows = query(admin, "SELECT rolname, shobj_description(oid, 'pg_authid'), rolcreatedb, "
                        "rolcreaterole, rolsuper FROM pg_roles WHERE rolname LIKE 'roles_owner%' "
                        "ORDER BY rolname")
    assert rows == [(name, marker, False, False, False)
                    for name in ("roles_owner", "roles_owner_ro", "roles_owner_rw")]
    owner_db = three_roles["owner"]
    assert query(owner_db, "SELECT pg_get_userbyid(nspowner) FROM pg_namespace "
                           "WHERE nspname = 'pilotboat'") == [("roles_owner",)]
    assert query(owner_db, "SELECT has_schema_privilege('roles_owner_rw', 'pilotboat', 'USAGE'),"
                           " has_schema_privilege('roles_owner_ro', 'pilotboat', 'USAGE'),"
                           " has_schema_privilege('roles_owner_rw', 'public', 'CREATE')") == [
        (False, False, False)]


def test_runtime_schema_changes_lets_the_service_create_tables_and_migrations_alter_them(
        postgres_server: PostgresServer, engine: PostgresEngine) -> None:
    admin = postgres_server.admin_dsn
    engine.ensure_database(admin, "shop_db", "shop_owner", "owner-pw-77", owner=ORDERS,
                           runtime_schema_changes=True, **PW)
    try:
        owner = postgres_server.dsn("shop_db", user="shop_owner", password="owner-pw-77")
        rw = postgres_server.dsn("shop_db", user="shop_owner_rw",
                                 password=PW["runtime_password"])
        ro = postgres_server.dsn("shop_db", user="shop_owner_ro",
                                 password=PW["readonly_password"])
        # The shop's services create their tables at start, as the runtime role …
        query(rw, SHOP_TABLE.replace("CREATE TABLE", "CREATE TABLE IF NOT EXISTS"))
        query(rw, "INSERT INTO orders (customer_name) VALUES ('Ada Lovelace')")
        query(rw, "ALTER TABLE orders ADD COLUMN IF NOT EXISTS note text")  # its own table
        # … and the orders migration (as the owner) alters such a table.
        expand = ("ALTER TABLE orders ADD COLUMN IF NOT EXISTS first_name text;\n"
                  "CREATE TABLE IF NOT EXISTS owner_made (id int)")
        assert engine.apply_phase(owner, "split", Phase.EXPAND, expand,
                                  applied_by="test").applied
        query(rw, "UPDATE orders SET first_name = 'Ada'")
        assert query(ro, "SELECT first_name FROM orders") == [("Ada",)]
        # Still: no ALTER of the owner's tables, no history.
        assert "must be owner of table owner_made" in _denied(
            rw, "ALTER TABLE owner_made ADD COLUMN x int")
        assert "permission denied for schema pilotboat" in _denied(
            rw, "DELETE FROM pilotboat.pilotboat_schema_history")
        # Turned off again: CREATE goes, what exists stays usable.
        engine.ensure_database(admin, "shop_db", "shop_owner", "owner-pw-77", owner=ORDERS, **PW)
        assert "permission denied for schema public" in _denied(rw, "CREATE TABLE t2 (id int)")
        query(rw, "INSERT INTO orders (customer_name) VALUES ('Alan Turing')")
    finally:
        engine.drop_database(admin, "shop_db", "shop_owner", owner=ORDERS)
    assert query(admin, "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'shop_owner%'") == [
        (0,)]


def test_an_older_operators_history_in_public_moves_to_the_owners_schema(
        postgres_server: PostgresServer, engine: PostgresEngine) -> None:
    admin = postgres_server.admin_dsn
    # What an older operator left: one role owning the database and a history in public.
    query(admin, "CREATE ROLE legacy_owner LOGIN PASSWORD 'legacy-pw'")
    query(admin, f"COMMENT ON ROLE legacy_owner IS "
                 f"'pilotboat owner: OwnedDatabase {ORDERS.name} uid={ORDERS.uid}'")
    query(admin, "CREATE DATABASE legacy_db OWNER legacy_owner")
    old = postgres_server.dsn("legacy_db", user="legacy_owner", password="legacy-pw")
    query(old, "CREATE TABLE pilotboat_schema_history (id bigint GENERATED ALWAYS AS IDENTITY "
               "PRIMARY KEY, migration text NOT NULL, phase text NOT NULL, checksum text NOT "
               "NULL, applied_at timestamptz NOT NULL DEFAULT clock_timestamp(), applied_by "
               "text NOT NULL, statements integer NOT NULL, duration_ms bigint NOT NULL, "
               "UNIQUE (migration, phase))")
    query(old, "CREATE TABLE pilotboat_backfill_progress (migration text PRIMARY KEY, checksum "
               "text NOT NULL, rows_processed bigint NOT NULL DEFAULT 0, batches bigint NOT "
               "NULL DEFAULT 0, done boolean NOT NULL DEFAULT false, updated_at timestamptz "
               "NOT NULL DEFAULT clock_timestamp())")
    query(old, f"INSERT INTO pilotboat_schema_history (migration, phase, checksum, applied_by, "
               f"statements, duration_ms) VALUES ('m', 'expand', '{checksum('SELECT 1')}', "
               f"'old', 1, 1)")
    try:
        engine.ensure_database(admin, "legacy_db", "legacy_owner", "new-owner-pw", owner=ORDERS,
                               **PW)
        owner = postgres_server.dsn("legacy_db", user="legacy_owner", password="new-owner-pw")
        assert [p.phase for p in engine.history(owner, "m")] == [Phase.EXPAND]
        assert not engine.apply_phase(owner, "m", Phase.EXPAND, "SELECT 1",
                                      applied_by="test").applied
        assert query(owner, "SELECT to_regclass('public.pilotboat_schema_history')") == [(None,)]
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            query(old, "SELECT 1")  # the password the tenant once held is dead
        rw = postgres_server.dsn("legacy_db", user="legacy_owner_rw",
                                 password=PW["runtime_password"])
        _denied(rw, "DELETE FROM pilotboat.pilotboat_schema_history")
    finally:
        engine.drop_database(admin, "legacy_db", "legacy_owner", owner=ORDERS)


def test_a_derived_role_of_another_owner_stops_ensure_and_drop(
        postgres_server: PostgresServer, engine: PostgresEngine) -> None:
    admin = postgres_server.admin_dsn
    query(admin, "CREATE ROLE squat_owner_rw LOGIN PASSWORD 'squatter'")
    query(admin, f"COMMENT ON ROLE squat_owner_rw IS "
                 f"'pilotboat owner: OwnedDatabase {OTHER.name} uid={OTHER.uid}'")
    try:
        with pytest.raises(DatabaseOwnedByAnother, match="role squat_owner_rw belongs to"):
            engine.ensure_database(admin, "squat_db", "squat_owner", "pw", owner=ORDERS, **PW)
        with pytest.raises(DatabaseOwnedByAnother, match="role squat_owner_rw belongs to"):
            engine.drop_database(admin, "squat_db", "squat_owner", owner=ORDERS)
        assert query(postgres_server.dsn("postgres", user="squat_owner_rw",
                                         password="squatter"), "SELECT 1") == [(1,)]
        # Refused before anything was made: no owner role, no database.
        assert query(admin, "SELECT count(*) FROM pg_roles WHERE rolname = 'squat_owner'") == [
            (0,)]
        assert query(admin, "SELECT count(*) FROM pg_database WHERE datname = 'squat_db'") == [
            (0,)]
    finally:
        query(admin, "DROP ROLE IF EXISTS squat_owner_rw")
        engine.drop_database(admin, "squat_db", "squat_owner", owner=ORDERS)
    assert query(admin, "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'squat_owner%'") == [
        (0,)]


def test_derived_role_names_fit_and_stay_apart() -> None:
    long_owner = "pb_" + "n" * 49 + "_2eb24b4a4c"  # 63 bytes, as database_names makes them
    names = role_names(long_owner)
    assert len(long_owner) == 63
    assert all(len(n) <= 63 for n in names.all())
    assert names.runtime.endswith("_2eb24b4a4c_rw") and names.readonly.endswith("_2eb24b4a4c_ro")
    other = role_names("pb_" + "n" * 49 + "_0000000000")
    assert len({*names.all(), *other.all()}) == 6


# --- phases ----------------------------------------------------------------------------------

def test_phases_apply_in_order_once_each(users_db: str, engine: PostgresEngine) -> None:
    with pytest.raises(PhaseOrderError, match="contract needs expand applied first"):
        engine.apply_phase(users_db, "m1", Phase.CONTRACT, CONTRACT, applied_by="test")
    first = engine.apply_phase(users_db, "m1", Phase.EXPAND, EXPAND, applied_by="test")
    again = engine.apply_phase(users_db, "m1", Phase.EXPAND, EXPAND + "\n\n", applied_by="test")
    assert (first.applied, first.statements, again.applied) == (True, 3, False)
    progress = engine.backfill(users_db, "m1", BACKFILL, batch_size=10, pause=timedelta(0),
                               applied_by="test")
    assert (progress.rows_processed, progress.batches, progress.done) == (25, 4, True)
    engine.apply_phase(users_db, "m1", Phase.CONTRACT, CONTRACT, applied_by="test")
    with pytest.raises(PhaseOrderError, match="down cannot run after contract"):
        engine.apply_phase(users_db, "m1", Phase.DOWN, "SELECT 1", applied_by="test")
    assert [r[0] for r in history_rows(users_db, "m1")] == ["expand", "backfill", "contract"]
    assert [p.phase for p in engine.history(users_db, "m1")] == [
        Phase.EXPAND, Phase.BACKFILL, Phase.CONTRACT]
    assert history_rows(users_db, "m1")[0][1] == checksum(EXPAND)


def test_changed_sql_of_an_applied_phase_is_refused(users_db: str,
                                                    engine: PostgresEngine) -> None:
    engine.apply_phase(users_db, "m2", Phase.EXPAND, EXPAND, applied_by="test")
    changed = EXPAND.replace("full_name text", "full_name varchar(200)")
    with pytest.raises(ChecksumMismatch) as caught:
        engine.apply_phase(users_db, "m2", Phase.EXPAND, changed, applied_by="test")
    assert caught.value.recorded == checksum(EXPAND)
    assert caught.value.current == checksum(changed)
    assert "expand" in str(caught.value)


def test_a_failing_statement_leaves_nothing_of_the_phase(users_db: str,
                                                         engine: PostgresEngine) -> None:
    broken = "CREATE TABLE half (a int);\nINSERT INTO half VALUES (1);\nSELECT 1 / 0;"
    with pytest.raises(PhaseFailed, match="division by zero"):
        engine.apply_phase(users_db, "m3", Phase.EXPAND, broken, applied_by="test")
    assert query(users_db, "SELECT to_regclass('half') IS NULL") == [(True,)]
    assert history_rows(users_db, "m3") == []


def test_a_killed_backend_mid_phase_leaves_nothing_and_the_rerun_applies_once(
        users_db: str, engine: PostgresEngine) -> None:
    phase = ("CREATE TABLE crashed (a int);\nINSERT INTO crashed VALUES (1);\n"
             "SELECT pg_advisory_xact_lock(4242);\nINSERT INTO crashed VALUES (2);")
    errors: list[BaseException] = []
    with psycopg.connect(users_db, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(4242)")
        runner = threading.Thread(target=lambda: _capture(errors, lambda: engine.apply_phase(
            users_db, "m4", Phase.EXPAND, phase, applied_by="test",
            timeouts=Timeouts(lock=timedelta(minutes=1)))))
        runner.start()
        pid = _wait_for_backend(holder, "pg_advisory_xact_lock(4242)")
        holder.execute("SELECT pg_terminate_backend(%s)", (pid,))
        runner.join(timeout=30)
        holder.execute("SELECT pg_advisory_unlock(4242)")
    assert len(errors) == 1 and isinstance(errors[0], PhaseFailed)
    assert query(users_db, "SELECT to_regclass('crashed') IS NULL") == [(True,)]
    assert history_rows(users_db, "m4") == []
    result = engine.apply_phase(users_db, "m4", Phase.EXPAND, phase, applied_by="test")
    assert result.applied
    engine.apply_phase(users_db, "m4", Phase.EXPAND, phase, applied_by="test")
    assert query(users_db, "SELECT a FROM crashed ORDER BY a") == [(1,), (2,)]
    assert len(history_rows(users_db, "m4")) == 1


def test_concurrent_index_runs_outside_the_transaction(users_db: str,
                                                       engine: PostgresEngine) -> None:
    phase = ("ALTER TABLE users ADD COLUMN IF NOT EXISTS email text;\n"
             "CREATE INDEX CONCURRENTLY IF NOT EXISTS users_email ON users (email);")
    engine.apply_phase(users_db, "m5", Phase.EXPAND, phase, applied_by="test")
    assert query(users_db, "SELECT indisvalid FROM pg_index "
                           "WHERE indexrelid = 'users_email'::regclass") == [(True,)]
    assert [r[0] for r in history_rows(users_db, "m5")] == ["expand"]


def test_two_runners_on_one_database_never_overlap(users_db: str) -> None:
    query(users_db, "CREATE TABLE ran (migration text, at timestamptz)")

    def phase(name: str) -> str:
        return (f"INSERT INTO ran VALUES ('{name}', clock_timestamp());\n"
                "SELECT pg_sleep(0.4);\n"
                f"INSERT INTO ran VALUES ('{name}', clock_timestamp());")

    errors: list[BaseException] = []
    threads = [threading.Thread(target=lambda n=name: _capture(errors, lambda: PostgresEngine(
        lock_wait=timedelta(seconds=20), lock_poll=timedelta(milliseconds=20)).apply_phase(
            users_db, n, Phase.EXPAND, phase(n), applied_by="test")))
        for name in ("ma", "mb", "mc")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    spans = query(users_db, "SELECT min(at), max(at) FROM ran GROUP BY migration ORDER BY 1")
    assert len(spans) == 3
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert end <= start  # type: ignore[operator]


def test_a_blocked_runner_reports_the_lock_instead_of_hanging(users_db: str,
                                                              engine: PostgresEngine) -> None:
    errors: list[BaseException] = []
    with psycopg.connect(users_db, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(4343)")
        first = threading.Thread(target=lambda: _capture(errors, lambda: engine.apply_phase(
            users_db, "slow", Phase.EXPAND, "SELECT pg_advisory_xact_lock(4343)",
            applied_by="test", timeouts=Timeouts(lock=timedelta(minutes=1)))))
        first.start()
        _wait_for_backend(holder, "pg_advisory_xact_lock(4343)")
        impatient = PostgresEngine(lock_wait=timedelta(milliseconds=300))
        started = time.monotonic()
        with pytest.raises(MigrationLocked, match="locked by another migration"):
            impatient.apply_phase(users_db, "fast", Phase.EXPAND, "SELECT 1", applied_by="t")
        assert time.monotonic() - started < 5
        holder.execute("SELECT pg_advisory_unlock(4343)")
        first.join(timeout=30)
    assert errors == []


# --- backfill, verify, and the old version's data ------------------------------------------

class Crash(Exception):
    pass


def test_backfill_resumes_after_an_interruption(users_db: str, engine: PostgresEngine) -> None:
    engine.apply_phase(users_db, "m6", Phase.EXPAND, EXPAND, applied_by="test")
    pauses: list[float] = []

    def crash_on_second_pause(seconds: float) -> None:
        pauses.append(seconds)
        if len(pauses) == 2:
            raise Crash

    crashing = PostgresEngine(sleep=crash_on_second_pause)
    with pytest.raises(Crash):
        crashing.backfill(users_db, "m6", BACKFILL, batch_size=10, pause=timedelta(seconds=2),
                          applied_by="test")
    stopped = engine.backfill_progress(users_db, "m6")
    assert (stopped.rows_processed, stopped.batches, stopped.done) == (20, 2, False)
    assert pauses == [2.0, 2.0]
    assert history_rows(users_db, "m6") == [("expand", checksum(EXPAND), 3)]
    done = engine.backfill(users_db, "m6", BACKFILL, batch_size=10, pause=timedelta(seconds=2),
                           applied_by="test")
    assert (done.rows_processed, done.batches, done.done) == (25, 4, True)
    assert query(users_db, "SELECT count(*) FROM users WHERE full_name IS NULL") == [(0,)]
    assert [r[0] for r in history_rows(users_db, "m6")] == ["expand", "backfill"]
    again = engine.backfill(users_db, "m6", BACKFILL, batch_size=10, pause=timedelta(0),
                            applied_by="test")
    assert again == done


def test_verify_answers_true_or_false(users_db: str, engine: PostgresEngine) -> None:
    assert engine.verify(users_db, "SELECT count(*) = 25 FROM users")
    assert not engine.verify(users_db, "SELECT count(*) = 0 FROM users")
    with pytest.raises(PhaseFailed, match="one boolean"):
        engine.verify(users_db, "SELECT 1")
    with pytest.raises(PhaseFailed, match="read-only"):
        engine.verify(users_db, "WITH d AS (DELETE FROM users RETURNING 1) "
                                "SELECT count(*) > 0 FROM d")


def test_rows_the_old_version_writes_during_the_migration_survive_contract(
        users_db: str, engine: PostgresEngine) -> None:
    def old_version_inserts(name: str) -> None:
        query(users_db, f"INSERT INTO users (name) VALUES ('{name}') RETURNING id")

    engine.apply_phase(users_db, "rename", Phase.EXPAND, EXPAND, applied_by="test")
    old_version_inserts("written after expand")

    def pause_while_old_version_writes(_: float) -> None:
        old_version_inserts("written during backfill")

    PostgresEngine(sleep=pause_while_old_version_writes).backfill(
        users_db, "rename", BACKFILL, batch_size=7, pause=timedelta(seconds=1),
        applied_by="test")
    old_version_inserts("written after backfill")
    assert engine.verify(users_db, "SELECT count(*) = 0 FROM users WHERE full_name IS NULL")
    engine.apply_phase(users_db, "rename", Phase.CONTRACT, CONTRACT, applied_by="test")
    names = [row[0] for row in query(users_db, "SELECT full_name FROM users ORDER BY id")]
    assert names[:25] == [f"user {i}" for i in range(1, 26)]
    assert "written after expand" in names and "written after backfill" in names
    assert names.count("written during backfill") >= 3
    assert None not in names


# --- helpers -------------------------------------------------------------------------------

def _capture(errors: list[BaseException], call: object) -> None:
    try:
        call()  # type: ignore[operator]
    except BaseException as error:  # noqa: BLE001 - handed to the test thread
        errors.append(error)


def _wait_for_backend(conn: psycopg.Connection[tuple[object, ...]], fragment: str) -> int:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        row = conn.execute("SELECT pid FROM pg_stat_activity WHERE state = 'active' "
                           "AND query LIKE %s AND pid <> pg_backend_pid()",
                           (f"%{fragment}%",)).fetchone()
        if row is not None:
            return int(str(row[0]))
        time.sleep(0.05)
    raise AssertionError(f"no backend runs {fragment}")

