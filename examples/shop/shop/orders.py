"""Orders: takes orders and orchestrates their saga.

    PENDING ── authorize (payments) ── reserve (inventory) ── ship (shipping) ──▶ CONFIRMED
       │ a step fails
       ▼
    COMPENSATING ── cancel shipment? ── release reservation ── cancel authorization ──▶ CANCELLED

Each step is written ahead (``attempted``) before its call, and its result after, so any
replica can resume a saga whose owner died: a saga is run under a lease (``lease_owner``,
``lease_until``) renewed at every step, and a recovery thread takes over orders whose lease
expired. Every command carries an ``Idempotency-Key`` derived from the order id and the
services key their effects by the order id, so a resumed or retried step never acts twice.
A step that surely did not take effect (a refusal, connection refused, an open breaker) is
not compensated; one that may have (a 5xx, a timeout) is.

The final state and its event (``OrderConfirmed`` / ``OrderCancelled``) are written in one
transaction (the outbox); the relay publishes the event to notifications.

``ORDERS_SCHEMA``: ``v1`` stores the customer in ``customer_name``; ``v2`` in ``first_name`` /
``last_name``, columns the SchemaMigration ``orders-split-customer-name`` adds (orders
never creates them). Orders creates only its v1 tables; a pod is ready only when the columns
its schema version uses exist.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, LiteralString

from psycopg import sql
from psycopg.types.json import Jsonb

from shop import logs, metrics
from shop.commands import items_of, order_id_of
from shop.db import Database
from shop.outbox import SCHEMA as OUTBOX_SCHEMA
from shop.outbox import Relay, add_event
from shop.resilience import Dependency, Unavailable
from shop.web import Call, HTTPError, Reply, Route, Service

log = logging.getLogger("shop")

SCHEMA: tuple[LiteralString, ...] = (
    """CREATE TABLE IF NOT EXISTS orders (
         order_id uuid PRIMARY KEY,
         idempotency_key text NOT NULL UNIQUE,
         request_hash text NOT NULL,
         customer_name text NOT NULL,
         items jsonb NOT NULL,
         address text NOT NULL,
         amount_cents bigint NOT NULL,
         state text NOT NULL DEFAULT 'PENDING'
           CHECK (state IN ('PENDING', 'COMPENSATING', 'CONFIRMED', 'CANCELLED')),
         reason text,
         authorization_id uuid,
         reservation_id uuid,
         shipment_id uuid,
         attempted text[] NOT NULL DEFAULT '{}',
         correlation_id text NOT NULL,
         lease_owner uuid,
         lease_until timestamptz,
         created_at timestamptz NOT NULL DEFAULT now(),
         updated_at timestamptz NOT NULL DEFAULT now())""",
    "CREATE INDEX IF NOT EXISTS orders_created_at ON orders (created_at)",
    "CREATE INDEX IF NOT EXISTS orders_unfinished ON orders (lease_until)"
    " WHERE state IN ('PENDING', 'COMPENSATING')",
    *OUTBOX_SCHEMA,
)

TERMINAL = ("CONFIRMED", "CANCELLED")
SCHEMA_COLUMNS = {"v1": ("customer_name",), "v2": ("first_name", "last_name")}


class LeaseLost(Exception):
    """Another replica took the saga over."""


@dataclass(frozen=True)
class Step:
    name: str
    result_column: LiteralString
    dependency: str
    compensation: str  # path template of the compensating command


STEPS = (
    Step("authorize", "authorization_id", "payments", "/authorizations/{}/cancel"),
    Step("reserve", "reservation_id", "inventory", "/reservations/{}/release"),
    Step("ship", "shipment_id", "shipping", "/shipments/{}/cancel"),
)


def _split(customer: str) -> tuple[str, str]:
    """``"Ada King Lovelace"`` → ``("Ada", "King Lovelace")``, as the migration's trigger."""
    first, _, last = customer.partition(" ")
    return first, last


class Orders(Service):
    name = "orders"

    def __init__(self, database_url: str, urls: dict[str, str]) -> None:
        super().__init__(Database(database_url, SCHEMA))
        self.schema = os.environ.get("ORDERS_SCHEMA", "v1") or "v1"
        if self.schema not in SCHEMA_COLUMNS:
            raise SystemExit(f"ORDERS_SCHEMA={self.schema!r}: v1 or v2")
        self.deps = {name: Dependency(name, url) for name, url in urls.items()}
        self.relay = Relay(self.db, self.deps["notifications"])
        self.lease = float(os.environ.get("SAGA_LEASE_SECONDS", "30"))
        self.wait_seconds = float(os.environ.get("ORDER_WAIT_SECONDS", "10"))
        self.recovery_interval = float(os.environ.get("SAGA_RECOVERY_SECONDS", "2"))
        self._stop = threading.Event()
        self._recovery = threading.Thread(target=self._recover, name="saga-recovery",
                                          daemon=True)
        if self.schema == "v1":
            self._customer_sql: LiteralString = "customer_name AS customer"
            self._insert_columns: LiteralString = "customer_name"
        else:
            self._customer_sql = ("concat_ws(' ', first_name, NULLIF(last_name, ''))"
                                  " AS customer, first_name, last_name")
            self._insert_columns = "first_name, last_name"

    def routes(self) -> list[Route]:
        return [Route("POST", "/orders", self.place),
                Route("GET", "/orders", self.list_orders),
                Route("GET", "/orders/{order_id}", self.get_order)]

    def start(self) -> None:
        super().start()
        self.relay.start()
        self._recovery.start()

    def stop(self) -> None:
        self._stop.set()
        self.relay.stop()
        self._recovery.join(timeout=10)
        super().stop()
        for dep in self.deps.values():
            dep.close()

    def not_ready(self) -> str | None:
        reason = super().not_ready()
        if reason:
            return reason
        wanted = SCHEMA_COLUMNS[self.schema]
        with self.db.connection() as conn:
            rows = conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema ="
                " current_schema() AND table_name = 'orders' AND column_name = ANY(%s)",
                (list(wanted),)).fetchall()
        missing = set(wanted) - {r["column_name"] for r in rows}
        if missing:
            return (f"ORDERS_SCHEMA={self.schema} needs the column(s) {', '.join(sorted(missing))}"
                    " (the SchemaMigration's expand adds them)")
        return None

    # --- commands -------------------------------------------------------------------------

    def place(self, call: Call) -> Reply:
        body = call.json_object()
        customer, address = body.get("customer"), body.get("address")
        if not isinstance(customer, str) or not customer.strip() or len(customer) > 200:
            raise HTTPError(422, "customer must be a name (1 to 200 characters)")
        customer = " ".join(customer.split())  # single spaces: v1's and v2's forms round-trip
        if not isinstance(address, str):
            raise HTTPError(422, "address must be a string")
        items = items_of(body.get("items"))
        key = call.idempotency_key
        if key is None:
            key = f"generated:{uuid.uuid4()}"
            log.warning("POST /orders without Idempotency-Key: a retry would order twice")
        request_hash = hashlib.sha256(json.dumps(
            {"customer": customer, "items": items, "address": address}, sort_keys=True
        ).encode()).hexdigest()
        existing = self._by_key(key)
        if existing is not None:
            return self._replay(existing, request_hash)
        amount = sum(self._price(item["sku"]) * item["qty"] for item in items)
        order_id, token = str(uuid.uuid4()), str(uuid.uuid4())
        names = (customer,) if self.schema == "v1" else _split(customer)
        query = sql.SQL(
            "INSERT INTO orders (order_id, idempotency_key, request_hash, {}, items, address,"
            " amount_cents, correlation_id, lease_owner, lease_until) VALUES (%s, %s, %s, {},"
            " %s, %s, %s, %s, %s, now() + make_interval(secs => %s))"
            " ON CONFLICT (idempotency_key) DO NOTHING RETURNING order_id"
        ).format(sql.SQL(self._insert_columns),
                 sql.SQL(", ").join([sql.Placeholder()] * len(names)))
        with self.db.connection() as conn:
            row = conn.execute(query, (order_id, key, request_hash, *names, Jsonb(items), address,
                                       amount, call.correlation_id, token, self.lease)).fetchone()
        if row is None:  # a concurrent request with the same key won
            raced = self._by_key(key)
            assert raced is not None
            return self._replay(raced, request_hash)
        logs.order_id.set(order_id)
        log.info("order placed", extra=logs.log_fields(amount_cents=amount, items=items))
        order = self._saga(order_id, token)
        return self._reply(order, replayed=False)

    def _by_key(self, key: str) -> dict[str, Any] | None:
        with self.db.connection() as conn:
            return conn.execute("SELECT order_id, request_hash FROM orders"
                                " WHERE idempotency_key = %s", (key,)).fetchone()

    def _replay(self, existing: dict[str, Any], request_hash: str) -> Reply:
        if existing["request_hash"] != request_hash:
            raise HTTPError(422, "this Idempotency-Key was used for another order",
                            order_id=existing["order_id"])
        order_id = str(existing["order_id"])
        logs.order_id.set(order_id)
        log.info("order request replayed (same Idempotency-Key)")
        return self._reply(self._await_outcome(order_id), replayed=True)

    def _await_outcome(self, order_id: str) -> dict[str, Any]:
        """The order once its saga ended, resuming it if nobody runs it (at most
        ``ORDER_WAIT_SECONDS``; then the order as it is)."""
        deadline = time.monotonic() + self.wait_seconds
        while True:
            order = self._load(order_id)
            if order["state"] in TERMINAL or time.monotonic() > deadline:
                return order
            token = self._claim(order_id)
            if token:
                return self._saga(order_id, token)
            time.sleep(0.1)

    def _reply(self, order: dict[str, Any], *, replayed: bool) -> Reply:
        body = {k: order[k] for k in ("order_id", "state", "reason", "amount_cents",
                                      "correlation_id")}
        status = 201 if order["state"] in TERMINAL else 202
        return Reply(status, body, {"Idempotent-Replayed": "true"} if replayed else {})

    def _price(self, sku: str) -> int:
        try:
            response = self.deps["catalog"].call("GET", f"/products/{sku}")
        except Unavailable as error:
            raise HTTPError(503, f"cannot price the order: {error}") from None
        if response.status_code == 404:
            raise HTTPError(422, f"no product {sku}")
        if response.status_code != 200:
            raise HTTPError(503, f"catalog answered {response.status_code} for {sku}")
        return int(response.json()["price_cents"])

    # --- the saga -------------------------------------------------------------------------

    def _saga(self, order_id: str, token: str) -> dict[str, Any]:
        try:
            order = self._load(order_id)
            if order["state"] == "PENDING":
                failure = self._forward(order, token)
                if failure is None:
                    return self._finish(order_id, token, "CONFIRMED", None)
                reason, not_applied = failure
                self._update(order_id, token, "state = 'COMPENSATING', reason = %s,"
                             " attempted = array_remove(attempted, %s)", reason, not_applied,
                             state="PENDING")
                log.warning("saga failed: %s; compensating", reason)
            return self._compensate(order_id, token)
        except LeaseLost:
            log.warning("saga taken over by another replica")
            return self._load(order_id)

    def _forward(self, order: dict[str, Any], token: str) -> tuple[str, str | None] | None:
        """Run the steps not done yet; None when all are done, else (reason, the failed
        step if it surely did not take effect)."""
        order_id = str(order["order_id"])
        for step in STEPS:
            if order[step.result_column] is not None:
                continue
            self._update(order_id, token, "attempted = array_append(array_remove(attempted, %s),"
                         " %s)", step.name, step.name, state="PENDING")
            try:
                response = self._command(step, order)
            except Unavailable as error:
                reason = f"{step.dependency} unavailable: " + (
                    "circuit open" if error.breaker_open else error.detail)
                return reason, None if error.maybe_applied else step.name
            if response.status_code != 201:
                return self._refusal(step, response.status_code, response), step.name
            result = response.json()[step.result_column]
            self._update(order_id, token, sql.SQL("{} = %s").format(
                sql.Identifier(step.result_column)), result, state="PENDING")
            log.info("saga step %s done", step.name,
                     extra=logs.log_fields(**{step.result_column: result}))
        return None

    def _command(self, step: Step, order: dict[str, Any]) -> Any:
        order_id = str(order["order_id"])
        key = f"{order_id}:{step.name}"
        if step.name == "authorize":
            return self.deps["payments"].call(
                "POST", "/authorizations", idempotency_key=key,
                json={"order_id": order_id, "amount_cents": order["amount_cents"]})
        if step.name == "reserve":
            return self.deps["inventory"].call(
                "POST", "/reservations", idempotency_key=key,
                json={"order_id": order_id, "items": order["items"]})
        return self.deps["shipping"].call(
            "POST", "/shipments", idempotency_key=key,
            json={"order_id": order_id, "address": order["address"]})

    @staticmethod
    def _refusal(step: Step, status: int, response: Any) -> str:
        try:
            error = response.json().get("error", "")
        except ValueError:
            error = response.text[:200]
        known = {("authorize", 402): "payment declined",
                 ("reserve", 409): "out of stock",
                 ("ship", 422): "address not served"}
        reason = known.get((step.name, status), f"{step.dependency} refused ({status})")
        return f"{reason}: {error}" if error and error not in reason else reason

    def _compensate(self, order_id: str, token: str) -> dict[str, Any]:
        order = self._load(order_id)
        for step in reversed(STEPS):
            if step.name not in order["attempted"]:
                continue
            path = step.compensation.format(order_id)
            try:
                response = self.deps[step.dependency].call(
                    "POST", path, idempotency_key=f"{order_id}:{step.name}:compensate")
                if response.status_code != 200:
                    raise Unavailable(step.dependency, f"{path} answered {response.status_code}",
                                      maybe_applied=True)
            except Unavailable as error:
                log.error("compensation of %s failed (%s); retried later", step.name, error)
                self._update(order_id, token, "lease_owner = NULL, lease_until = now()"
                             " + make_interval(secs => %s)", min(5.0, self.lease), renew=False)
                return self._load(order_id)
            self._update(order_id, token, "attempted = array_remove(attempted, %s)", step.name)
            log.info("compensated %s", step.name)
        return self._finish(order_id, token, "CANCELLED", order["reason"])

    def _finish(self, order_id: str, token: str, state: str, reason: str | None
                ) -> dict[str, Any]:
        with self.db.connection() as conn:
            row = conn.execute(
                sql.SQL("UPDATE orders SET state = %s, reason = %s, lease_owner = NULL,"
                        " lease_until = NULL, updated_at = now() WHERE order_id = %s AND"
                        " lease_owner = %s AND state IN ('PENDING', 'COMPENSATING')"
                        " RETURNING order_id, {}, amount_cents, correlation_id"
                        ).format(sql.SQL(self._customer_sql)),
                (state, reason, order_id, token)).fetchone()
            if row is None:
                raise LeaseLost(order_id)
            kind = "OrderConfirmed" if state == "CONFIRMED" else "OrderCancelled"
            add_event(conn, kind, order_id, row["correlation_id"],
                      {"state": state, "reason": reason, "customer": row["customer"],
                       "amount_cents": row["amount_cents"]})
        self.relay.wake()
        metrics.SAGAS.labels(state).inc()
        log.info("order %s%s", state, f": {reason}" if reason else "")
        return self._load(order_id)

    # --- storage --------------------------------------------------------------------------

    def _update(self, order_id: str, token: str, assignments: LiteralString | sql.Composable,
                *params: Any, state: LiteralString | None = None, renew: bool = True) -> None:
        """``UPDATE orders SET <assignments>`` under our lease (renewed), or LeaseLost."""
        where = sql.SQL(" AND state = {}").format(sql.Literal(state)) if state else sql.SQL("")
        renewal = sql.SQL(", lease_until = now() + make_interval(secs => {})").format(
            sql.Literal(self.lease)) if renew else sql.SQL("")
        query = sql.SQL(
            "UPDATE orders SET {}{}, updated_at = now() WHERE order_id = %s AND lease_owner = %s{}"
        ).format(sql.SQL(assignments) if isinstance(assignments, str) else assignments,
                 renewal, where)
        with self.db.connection() as conn:
            count = conn.execute(query, (*params, order_id, token)).rowcount
        if count != 1:
            raise LeaseLost(order_id)

    def _claim(self, order_id: str) -> str | None:
        token = str(uuid.uuid4())
        with self.db.connection() as conn:
            row = conn.execute(
                "UPDATE orders SET lease_owner = %s, lease_until = now() + make_interval(secs =>"
                " %s) WHERE order_id = %s AND state IN ('PENDING', 'COMPENSATING') AND"
                " (lease_until IS NULL OR lease_until < now()) RETURNING order_id",
                (token, self.lease, order_id)).fetchone()
        return token if row else None

    def _load(self, order_id: str) -> dict[str, Any]:
        with self.db.connection() as conn:
            row = conn.execute(sql.SQL(self._select()) + sql.SQL(" WHERE order_id = %s"),
                               (order_id,)).fetchone()
        if row is None:
            raise HTTPError(404, f"no order {order_id}")
        return row

    def _select(self) -> LiteralString:
        return ("SELECT order_id, state, reason, " + self._customer_sql + ", items, address,"
                " amount_cents, authorization_id, reservation_id, shipment_id, attempted,"
                " correlation_id, created_at, updated_at FROM orders")

    def _recover(self) -> None:
        """Resume the sagas whose owner died or gave up for a while."""
        self.db.wait_ready()
        while not self._stop.wait(self.recovery_interval):
            try:
                with self.db.connection() as conn:
                    rows = conn.execute(
                        "SELECT order_id, correlation_id FROM orders WHERE state IN"
                        " ('PENDING', 'COMPENSATING') AND (lease_until IS NULL OR"
                        " lease_until < now()) ORDER BY created_at LIMIT 20").fetchall()
                for row in rows:
                    token = self._claim(str(row["order_id"]))
                    if token is None:
                        continue
                    cid = logs.correlation_id.set(row["correlation_id"])
                    oid = logs.order_id.set(str(row["order_id"]))
                    try:
                        log.info("resuming the saga of an order left unfinished")
                        self._saga(str(row["order_id"]), token)
                    finally:
                        logs.correlation_id.reset(cid)
                        logs.order_id.reset(oid)
            except Exception as error:  # noqa: BLE001 - recovery outlives any failure
                log.warning("saga recovery: %s: %s", type(error).__name__, error)

    # --- queries --------------------------------------------------------------------------

    def get_order(self, call: Call) -> Reply:
        return Reply(200, self._load(order_id_of(call.path_params["order_id"])))

    def list_orders(self, call: Call) -> Reply:
        since_text = call.query.get("since")
        try:
            since = (datetime.fromisoformat(since_text) if since_text
                     else datetime.fromtimestamp(0, UTC))
            limit = min(int(call.query.get("limit", "10000")), 100_000)
        except ValueError:
            raise HTTPError(422, "since must be an ISO 8601 time, limit an integer") from None
        with self.db.connection() as conn:
            rows = conn.execute(sql.SQL(self._select()) + sql.SQL(
                " WHERE created_at >= %s ORDER BY created_at LIMIT %s"), (since, limit))
            return Reply(200, rows.fetchall())
