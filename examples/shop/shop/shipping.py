"""Shipping: one shipment per order at most (the order id is its key).

An address that is empty or in a region shipping does not serve (``UNSERVED``, e.g.
Antarctica) is refused with 422. A cancel (the saga's compensation when the create's outcome
is unknown) of an order without a shipment leaves a ``CANCELLED`` tombstone.
"""

from __future__ import annotations

import uuid

from shop.commands import order_id_of
from shop.db import Connection, Database
from shop.web import Call, HTTPError, Reply, Route, Service

UNSERVED = ("antarctica",)

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS shipments (
         order_id uuid PRIMARY KEY,
         shipment_id uuid NOT NULL UNIQUE,
         address text,
         status text NOT NULL CHECK (status IN ('CREATED', 'CANCELLED')),
         correlation_id text,
         created_at timestamptz NOT NULL DEFAULT now(),
         updated_at timestamptz NOT NULL DEFAULT now())""",
)


class Shipping(Service):
    name = "shipping"

    def __init__(self, database_url: str) -> None:
        super().__init__(Database(database_url, SCHEMA))

    def routes(self) -> list[Route]:
        return [Route("POST", "/shipments", self.create),
                Route("POST", "/shipments/{order_id}/cancel", self.cancel),
                Route("GET", "/shipments/{order_id}", self.get_shipment)]

    def create(self, call: Call) -> Reply:
        body = call.json_object()
        order_id, address = order_id_of(body.get("order_id")), body.get("address")
        if not isinstance(address, str) or not address.strip():
            raise HTTPError(422, "address is required")
        if any(region in address.lower() for region in UNSERVED):
            raise HTTPError(422, "we do not ship to this address", address=address)
        with self.db.connection() as conn:
            row = conn.execute(
                "INSERT INTO shipments (order_id, shipment_id, address, status, correlation_id)"
                " VALUES (%s, %s, %s, 'CREATED', %s) ON CONFLICT (order_id) DO NOTHING"
                " RETURNING shipment_id, status",
                (order_id, uuid.uuid4(), address, call.correlation_id)).fetchone()
            if row is None:
                return self._existing(conn, order_id)
        return Reply(201, row)

    @staticmethod
    def _existing(conn: Connection, order_id: str) -> Reply:
        row = conn.execute("SELECT shipment_id, status FROM shipments WHERE order_id = %s",
                           (order_id,)).fetchone()
        assert row is not None
        if row["status"] == "CREATED":
            return Reply(201, dict(row), {"Idempotent-Replayed": "true"})
        raise HTTPError(409, "the order's shipment was cancelled", status=row["status"])

    def cancel(self, call: Call) -> Reply:
        order_id = order_id_of(call.path_params["order_id"])
        with self.db.connection() as conn:
            conn.execute(
                "INSERT INTO shipments (order_id, shipment_id, status, correlation_id)"
                " VALUES (%s, %s, 'CANCELLED', %s) ON CONFLICT (order_id) DO UPDATE"
                " SET status = 'CANCELLED', updated_at = now()",
                (order_id, uuid.uuid4(), call.correlation_id))
        return Reply(200, {"order_id": order_id, "status": "CANCELLED"})

    def get_shipment(self, call: Call) -> Reply:
        order_id = order_id_of(call.path_params["order_id"])
        with self.db.connection() as conn:
            row = conn.execute("SELECT * FROM shipments WHERE order_id = %s",
                               (order_id,)).fetchone()
        if row is None:
            raise HTTPError(404, "no shipment for this order")
        return Reply(200, row)
