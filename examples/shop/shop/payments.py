"""Payments: authorizations, one per order at most.

The order id is the authorization's primary key: a retried authorization (the same
``Idempotency-Key``, or any retry for the same order) inserts nothing and answers the first
outcome, so nobody is charged twice. A cancel of an order that has no authorization leaves a
``CANCELLED`` tombstone, so an authorization that arrives after its saga gave up is refused.

``FAIL_AUTHORIZATIONS_RATIO`` (0..1): that share of authorizations is answered 500 before
anything is written (the demo's bad v3). Amounts above ``PAYMENT_LIMIT_CENTS`` (default
50000) are declined (402).
"""

from __future__ import annotations

import logging
import os
import random
import uuid
from typing import Any

from shop.commands import order_id_of
from shop.db import Connection, Database
from shop.web import Call, HTTPError, Reply, Route, Service

log = logging.getLogger("shop")

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS authorizations (
         order_id uuid PRIMARY KEY,
         authorization_id uuid NOT NULL UNIQUE,
         amount_cents bigint,
         status text NOT NULL CHECK (status IN ('AUTHORIZED', 'DECLINED', 'CANCELLED')),
         idempotency_key text,
         correlation_id text,
         created_at timestamptz NOT NULL DEFAULT now(),
         updated_at timestamptz NOT NULL DEFAULT now())""",
)


class Payments(Service):
    name = "payments"

    def __init__(self, database_url: str) -> None:
        super().__init__(Database(database_url, SCHEMA))
        self.fail_ratio = float(os.environ.get("FAIL_AUTHORIZATIONS_RATIO", "0") or 0)
        if not 0 <= self.fail_ratio <= 1:
            raise SystemExit(f"FAIL_AUTHORIZATIONS_RATIO={self.fail_ratio} is not in [0, 1]")
        self.limit = int(os.environ.get("PAYMENT_LIMIT_CENTS", "50000"))

    def routes(self) -> list[Route]:
        return [Route("POST", "/authorizations", self.authorize),
                Route("POST", "/authorizations/{order_id}/cancel", self.cancel),
                Route("GET", "/authorizations/{order_id}", self.get_authorization)]

    def authorize(self, call: Call) -> Reply:
        body = call.json_object()
        order_id = order_id_of(body.get("order_id"))
        amount = body.get("amount_cents")
        if not isinstance(amount, int) or isinstance(amount, bool) or amount < 0:
            raise HTTPError(422, "amount_cents must be an integer ≥ 0")
        if self.fail_ratio and random.random() < self.fail_ratio:
            log.error("authorization failed (FAIL_AUTHORIZATIONS_RATIO=%g)", self.fail_ratio)
            raise HTTPError(500, "authorization failed")
        status = "DECLINED" if amount > self.limit else "AUTHORIZED"
        with self.db.connection() as conn:
            row = conn.execute(
                "INSERT INTO authorizations (order_id, authorization_id, amount_cents, status,"
                " idempotency_key, correlation_id) VALUES (%s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (order_id) DO NOTHING RETURNING authorization_id, status",
                (order_id, uuid.uuid4(), amount, status, call.idempotency_key,
                 call.correlation_id)).fetchone()
            replayed = row is None
            if row is None:
                row = self._existing(conn, order_id, amount)
        headers = {"Idempotent-Replayed": "true"} if replayed else {}
        if row["status"] == "AUTHORIZED":
            return Reply(201, dict(row), headers)
        if row["status"] == "DECLINED":
            raise HTTPError(402, "payment declined", authorization_id=row["authorization_id"])
        raise HTTPError(409, "the order's authorization was cancelled", status=row["status"])

    @staticmethod
    def _existing(conn: Connection, order_id: str, amount: int) -> dict[str, Any]:
        row = conn.execute("SELECT authorization_id, status, amount_cents FROM authorizations"
                           " WHERE order_id = %s", (order_id,)).fetchone()
        assert row is not None
        if row["amount_cents"] is not None and row["amount_cents"] != amount:
            raise HTTPError(409, "the order was authorized for another amount",
                            amount_cents=row["amount_cents"])
        return {"authorization_id": row["authorization_id"], "status": row["status"]}

    def cancel(self, call: Call) -> Reply:
        order_id = order_id_of(call.path_params["order_id"])
        with self.db.connection() as conn:
            conn.execute(
                "INSERT INTO authorizations (order_id, authorization_id, status, idempotency_key,"
                " correlation_id) VALUES (%s, %s, 'CANCELLED', %s, %s)"
                " ON CONFLICT (order_id) DO UPDATE SET status = 'CANCELLED', updated_at = now()"
                " WHERE authorizations.status = 'AUTHORIZED'",
                (order_id, uuid.uuid4(), call.idempotency_key, call.correlation_id))
            row = conn.execute("SELECT status FROM authorizations WHERE order_id = %s",
                               (order_id,)).fetchone()
        assert row is not None
        return Reply(200, {"order_id": order_id, "status": row["status"]})

    def get_authorization(self, call: Call) -> Reply:
        order_id = order_id_of(call.path_params["order_id"])
        with self.db.connection() as conn:
            row = conn.execute("SELECT * FROM authorizations WHERE order_id = %s",
                               (order_id,)).fetchone()
        if row is None:
            raise HTTPError(404, "no authorization for this order")
        return Reply(200, row)
