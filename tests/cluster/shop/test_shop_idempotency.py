"""Idempotency keys: a retried command does nothing twice."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

from tests.cluster.shop.harness import Shop


def _counts(shop: Shop, order_id: str) -> dict[str, int]:
    def count(service: str, table: str) -> int:
        return int(shop.query(service, f"SELECT count(*) AS n FROM {table} WHERE order_id = %s",
                              order_id)[0]["n"])
    return {"orders": count("orders", "orders"), "authorizations": count("payments",
            "authorizations"), "reservations": count("inventory", "reservations"),
            "shipments": count("shipping", "shipments"), "outbox": count("orders", "outbox")}


def test_the_same_key_twice_is_one_order(shop: Shop) -> None:
    key = str(uuid.uuid4())
    before = shop["inventory"].get("/stock/TEA-001").json()["available"]
    first = shop.order(key=key)
    second = shop.order(key=key)
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    assert "Idempotent-Replayed" not in first.headers
    assert second.headers["Idempotent-Replayed"] == "true"
    order_id = first.json()["order_id"]
    assert _counts(shop, order_id) == {"orders": 1, "authorizations": 1, "reservations": 1,
                                       "shipments": 1, "outbox": 1}
    assert shop["inventory"].get("/stock/TEA-001").json()["available"] == before - 2
    assert shop.query("orders", "SELECT count(*) AS n FROM orders")[0]["n"] == 1


def test_concurrent_retries_with_one_key_are_one_order(shop: Shop) -> None:
    key = str(uuid.uuid4())
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda _: shop.order(key=key), range(8)))
    assert {r.status_code for r in responses} == {201}
    assert len({r.json()["order_id"] for r in responses}) == 1
    assert {r.json()["state"] for r in responses} == {"CONFIRMED"}
    assert _counts(shop, responses[0].json()["order_id"]) == {
        "orders": 1, "authorizations": 1, "reservations": 1, "shipments": 1, "outbox": 1}


def test_a_key_reused_for_another_order_is_refused(shop: Shop) -> None:
    key = str(uuid.uuid4())
    assert shop.order(key=key).status_code == 201
    refused = shop.order(key=key, items=[{"sku": "MUG-002", "qty": 1}])
    assert refused.status_code == 422
    assert "another order" in refused.json()["error"]


def test_a_retried_authorization_never_charges_twice(shop: Shop) -> None:
    order_id = str(uuid.uuid4())
    body = {"order_id": order_id, "amount_cents": 1200}
    headers = {"Idempotency-Key": f"{order_id}:authorize"}
    with ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(
            lambda _: shop["payments"].post("/authorizations", json=body, headers=headers),
            range(6)))
    assert {r.status_code for r in responses} == {201}
    assert len({r.json()["authorization_id"] for r in responses}) == 1
    rows = shop.query("payments", "SELECT status, amount_cents FROM authorizations"
                      " WHERE order_id = %s", order_id)
    assert rows == [{"status": "AUTHORIZED", "amount_cents": 1200}]
    # the same order for another amount is a conflict, not a second charge
    other = shop["payments"].post("/authorizations", json={**body, "amount_cents": 99})
    assert other.status_code == 409
    # cancel twice: one cancellation; an authorization after it is refused
    for _ in range(2):
        assert shop["payments"].post(f"/authorizations/{order_id}/cancel").json()["status"] \
            == "CANCELLED"
    assert shop["payments"].post("/authorizations", json=body).status_code == 409


def test_reservations_and_releases_are_idempotent(shop: Shop) -> None:
    order_id = str(uuid.uuid4())
    before = shop["inventory"].get("/stock/KETTLE-005").json()["available"]
    body = {"order_id": order_id, "items": [{"sku": "KETTLE-005", "qty": 2}]}
    ids = {shop["inventory"].post("/reservations", json=body).json()["reservation_id"]
           for _ in range(3)}
    assert len(ids) == 1
    assert shop["inventory"].get("/stock/KETTLE-005").json()["available"] == before - 2
    for _ in range(3):
        assert shop["inventory"].post(f"/reservations/{order_id}/release").status_code == 200
    assert shop["inventory"].get("/stock/KETTLE-005").json()["available"] == before
    # a reserve that arrives after the release (a late retry) takes nothing
    assert shop["inventory"].post("/reservations", json=body).status_code == 409
    assert shop["inventory"].get("/stock/KETTLE-005").json()["available"] == before
