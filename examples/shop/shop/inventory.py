"""Inventory: stock per sku and reservations per order.

A reservation is keyed by its order (a unique key, so a retried reserve never takes stock
twice); a release of an order that has no reservation leaves a ``RELEASED`` tombstone, so a
reserve that arrives late, after its saga gave up, is refused instead of holding stock.
"""

from __future__ import annotations

import uuid

from psycopg.types.json import Jsonb

from shop.commands import items_of, order_id_of
from shop.db import Connection, Database
from shop.products import PRODUCTS
from shop.web import Call, HTTPError, Reply, Route, Service

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS stock (
         sku text PRIMARY KEY,
         available bigint NOT NULL CHECK (available >= 0))""",
    """CREATE TABLE IF NOT EXISTS reservations (
         order_id uuid PRIMARY KEY,
         reservation_id uuid NOT NULL UNIQUE,
         items jsonb NOT NULL,
         status text NOT NULL CHECK (status IN ('RESERVED', 'RELEASED')),
         correlation_id text,
         created_at timestamptz NOT NULL DEFAULT now(),
         updated_at timestamptz NOT NULL DEFAULT now())""",
)


def _seed(conn: Connection) -> None:
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO stock (sku, available) VALUES (%s, %s) ON CONFLICT (sku) DO NOTHING",
            [(p.sku, p.initial_stock) for p in PRODUCTS])


class OutOfStock(Exception):
    def __init__(self, sku: str) -> None:
        super().__init__(sku)
        self.sku = sku


class Inventory(Service):
    name = "inventory"

    def __init__(self, database_url: str) -> None:
        super().__init__(Database(database_url, SCHEMA, _seed))

    def routes(self) -> list[Route]:
        return [Route("POST", "/reservations", self.reserve),
                Route("POST", "/reservations/{order_id}/release", self.release),
                Route("GET", "/reservations/{order_id}", self.get_reservation),
                Route("GET", "/stock/{sku}", self.get_stock)]

    def reserve(self, call: Call) -> Reply:
        body = call.json_object()
        order_id, items = order_id_of(body.get("order_id")), items_of(body.get("items"))
        try:
            with self.db.connection() as conn:
                row = conn.execute(
                    "INSERT INTO reservations (order_id, reservation_id, items, status,"
                    " correlation_id) VALUES (%s, %s, %s, 'RESERVED', %s)"
                    " ON CONFLICT (order_id) DO NOTHING RETURNING reservation_id",
                    (order_id, uuid.uuid4(), Jsonb(items), call.correlation_id)).fetchone()
                if row is None:
                    return self._existing(conn, order_id)
                for item in items:
                    taken = conn.execute(
                        "UPDATE stock SET available = available - %(qty)s"
                        " WHERE sku = %(sku)s AND available >= %(qty)s", item).rowcount
                    if taken != 1:
                        raise OutOfStock(item["sku"])
        except OutOfStock as error:  # the transaction was rolled back: nothing reserved
            raise HTTPError(409, "out of stock", sku=error.sku) from None
        return Reply(201, {"reservation_id": row["reservation_id"], "status": "RESERVED"})

    @staticmethod
    def _existing(conn: Connection, order_id: str) -> Reply:
        row = conn.execute("SELECT reservation_id, status FROM reservations WHERE order_id = %s",
                           (order_id,)).fetchone()
        assert row is not None
        if row["status"] == "RESERVED":
            return Reply(201, dict(row), {"Idempotent-Replayed": "true"})
        raise HTTPError(409, "the order's reservation was released", status=row["status"])

    def release(self, call: Call) -> Reply:
        order_id = order_id_of(call.path_params["order_id"])
        with self.db.connection() as conn:
            row = conn.execute(
                "INSERT INTO reservations (order_id, reservation_id, items, status,"
                " correlation_id) VALUES (%s, %s, '[]', 'RELEASED', %s)"
                " ON CONFLICT (order_id) DO UPDATE SET status = 'RELEASED', updated_at = now()"
                " WHERE reservations.status = 'RESERVED'"
                " RETURNING items, (xmax = 0) AS inserted",
                (order_id, uuid.uuid4(), call.correlation_id)).fetchone()
            if row is not None and not row["inserted"]:
                for item in row["items"]:
                    conn.execute("UPDATE stock SET available = available + %(qty)s"
                                 " WHERE sku = %(sku)s", item)
        return Reply(200, {"order_id": order_id, "status": "RELEASED"})

    def get_reservation(self, call: Call) -> Reply:
        order_id = order_id_of(call.path_params["order_id"])
        with self.db.connection() as conn:
            row = conn.execute("SELECT * FROM reservations WHERE order_id = %s",
                               (order_id,)).fetchone()
        if row is None:
            raise HTTPError(404, "no reservation for this order")
        return Reply(200, row)

    def get_stock(self, call: Call) -> Reply:
        with self.db.connection() as conn:
            row = conn.execute("SELECT sku, available FROM stock WHERE sku = %s",
                               (call.path_params["sku"],)).fetchone()
        if row is None:
            raise HTTPError(404, f"no stock of {call.path_params['sku']}")
        return Reply(200, row)
