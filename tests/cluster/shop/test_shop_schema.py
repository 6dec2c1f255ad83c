"""Orders v1 and v2 against the SchemaMigration's SQL, applied by hand as the operator would:
expand, both versions write, backfill, verify, contract, v2 still works."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import yaml

from pilotboat.core.sqllint import (
    has_refusal,
    lint_backfill,
    lint_contract,
    lint_down,
    lint_expand,
    lint_verify,
    split_on_batch_size,
)
from tests.cluster.shop.harness import Shop

MIGRATION = Path(__file__).resolve().parents[3] / "examples/shop/orders-migration.yaml"


def _spec() -> dict[str, Any]:
    return dict(yaml.safe_load(MIGRATION.read_text())["spec"])


def test_the_migration_passes_the_linter() -> None:
    spec = _spec()
    for lint, text in ((lint_expand, spec["expand"]["sql"]), (lint_down, spec["expand"]["down"]),
                       (lint_backfill, spec["backfill"]["sql"]),
                       (lint_verify, spec["verify"]["sql"]),
                       (lint_contract, spec["contract"]["sql"])):
        findings = lint(text)
        assert not has_refusal(findings), findings
        assert findings == (), findings


def _run(shop: Shop, text: str) -> None:
    with psycopg.connect(shop.databases["orders"]) as conn, conn.transaction():
        conn.execute(text)


def _backfill(shop: Shop, text: str, batch_size: int) -> int:
    query = "%(batch_size)s".join(p.replace("%", "%%") for p in split_on_batch_size(text))
    batches = 0
    while True:
        with psycopg.connect(shop.databases["orders"]) as conn:
            batches += 1
            if conn.execute(query, {"batch_size": batch_size}).rowcount == 0:
                return batches


def _verify(shop: Shop, text: str) -> bool:
    with psycopg.connect(shop.databases["orders"]) as conn:
        row = conn.execute(text).fetchone()
    return bool(row and row[0])


def _customer(shop: Shop, via: str, order_id: str) -> Any:
    return shop[via].get(f"/orders/{order_id}").json()["customer"]


def test_v1_and_v2_through_expand_backfill_and_contract(shop: Shop) -> None:
    spec = _spec()
    shop.procs["orders-v1"] = shop.procs["orders"]
    old = [shop.order(customer=name).json()["order_id"]
           for name in ("Ada Lovelace", "Grace Brewster Hopper", "Plato")]
    # v2 before the expand: up, but not ready (it never adds the columns itself)
    v2 = shop.process("orders", key="orders-v2", ORDERS_SCHEMA="v2", SERVICE_VERSION="v2")
    v2.start()
    shop.wait_for(lambda: "first_name" in v2.get("/healthz").text
                  if _up(v2) else False, message="v2 says which columns it lacks")
    assert v2.get("/healthz").status_code == 503
    columns = {r["column_name"] for r in shop.query(
        "orders", "SELECT column_name FROM information_schema.columns"
                  " WHERE table_name = 'orders'")}
    assert "first_name" not in columns

    _run(shop, spec["expand"]["sql"])
    v2.wait_ready()
    # both versions write, each reads the other's orders
    from_v1 = shop.order(customer="Edsger Wybe Dijkstra", via="orders-v1").json()
    from_v2 = shop.order(customer="Barbara Liskov", via="orders-v2").json()
    assert from_v1["state"] == from_v2["state"] == "CONFIRMED"
    assert _customer(shop, "orders-v2", from_v1["order_id"]) == "Edsger Wybe Dijkstra"
    assert _customer(shop, "orders-v1", from_v2["order_id"]) == "Barbara Liskov"
    row = shop.query("orders", "SELECT customer_name, first_name, last_name FROM orders"
                     " WHERE order_id = %s", from_v2["order_id"])[0]
    assert row == {"customer_name": "Barbara Liskov", "first_name": "Barbara",
                   "last_name": "Liskov"}
    assert _verify(shop, spec["verify"]["sql"]) is False  # the old orders are not split yet

    assert _backfill(shop, spec["backfill"]["sql"], batch_size=1) == 4  # 3 rows, then none
    assert _verify(shop, spec["verify"]["sql"]) is True
    assert [_customer(shop, "orders-v2", oid) for oid in old] == [
        "Ada Lovelace", "Grace Brewster Hopper", "Plato"]
    plato = shop["orders-v2"].get(f"/orders/{old[2]}").json()
    assert (plato["first_name"], plato["last_name"]) == ("Plato", "")

    shop["orders-v1"].stop()  # v1 is gone: the contract may run
    _run(shop, spec["contract"]["sql"])
    after = shop.order(customer="Alan Turing", via="orders-v2").json()
    assert after["state"] == "CONFIRMED"
    assert _customer(shop, "orders-v2", after["order_id"]) == "Alan Turing"
    listed = shop["orders-v2"].get("/orders", params={"since": "2000-01-01T00:00:00+00:00"}
                                   ).json()
    assert [o["customer"] for o in listed] == [
        "Ada Lovelace", "Grace Brewster Hopper", "Plato", "Edsger Wybe Dijkstra",
        "Barbara Liskov", "Alan Turing"]
    assert v2.get("/healthz").status_code == 200
    # a v1 pod started now would never become ready
    shop["orders-v1"].start()
    shop.wait_for(lambda: _up(shop["orders-v1"]) and "customer_name" in shop["orders-v1"].get(
        "/healthz").text)
    assert shop["orders-v1"].get("/healthz").status_code == 503


def test_the_expand_undone_by_down(shop: Shop) -> None:
    spec = _spec()
    _run(shop, spec["expand"]["sql"])
    assert shop.order().json()["state"] == "CONFIRMED"
    _run(shop, spec["expand"]["down"])
    assert shop.order().json()["state"] == "CONFIRMED"
    columns = {r["column_name"] for r in shop.query(
        "orders", "SELECT column_name FROM information_schema.columns"
                  " WHERE table_name = 'orders'")}
    assert {"first_name", "last_name"}.isdisjoint(columns)


def _up(proc: Any) -> bool:
    try:
        proc.get("/healthz")
    except Exception:  # noqa: BLE001
        return False
    return True
