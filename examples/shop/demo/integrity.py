"""The integrity check: real SQL over the services' own databases (as PostgreSQL's
superuser: the demo's stand-in for an auditor, not something a service may do).

For every order placed since the demo started:

- it reached a terminal state: CONFIRMED or CANCELLED, none left PENDING;
- CONFIRMED ⇒ one authorization, AUTHORIZED (not cancelled); one reservation, RESERVED; one
  shipment, CREATED;
- CANCELLED ⇒ no live authorization (none, DECLINED or CANCELLED); no live reservation (none
  or RELEASED); no shipment (none or CANCELLED);
- nothing charged twice: one order per idempotency key, no live authorization of an order
  that is not CONFIRMED or that orders does not know;
- what each customer was answered is what the databases say;
- the outbox delivered: every terminal order has its OrderConfirmed/OrderCancelled
  notification, once.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from examples.shop.demo.customers import Order
from examples.shop.demo.infra import Postgres
from psycopg.rows import dict_row

__all__ = ["Integrity", "check"]


@dataclass
class Integrity:
    orders: int = 0
    states: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)
    answered: int = 0
    unanswered: int = 0
    notifications: int = 0
    compensations: Counter[str] = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return not self.violations and self.orders > 0

    def lines(self) -> list[str]:
        head = (f"{self.orders} orders placed: " + ", ".join(
            f"{n} {s}" for s, n in sorted(self.states.items())))
        out = [head,
               f"{self.answered} answered to customers match the databases"
               + (f"; {self.unanswered} got no answer (checked in the databases alone)"
                  if self.unanswered else ""),
               f"{self.notifications} notifications, one per order"]
        if self.compensations:
            out.insert(1, "cancelled sagas compensated: " + ", ".join(
                f"{n} {what}" for what, n in sorted(self.compensations.items())))
        return out + [f"VIOLATION: {v}" for v in self.violations[:20]] + (
            [f"… and {len(self.violations) - 20} more"] if len(self.violations) > 20 else [])


def _rows(pg: Postgres, dbname: str, query: str, args: Iterable[Any] = ()) -> list[dict[str, Any]]:
    with psycopg.connect(pg.dsn(dbname), row_factory=dict_row) as conn:
        return list(conn.execute(query, tuple(args)).fetchall())


def _columns(pg: Postgres, dbname: str, table: str) -> set[str]:
    rows = _rows(pg, dbname, "SELECT column_name FROM information_schema.columns"
                 " WHERE table_schema = 'public' AND table_name = %s", [table])
    return {r["column_name"] for r in rows}


def check(pg: Postgres, databases: dict[str, str], since: datetime, customers: list[Order],
          *, settle: float = 30, say: Callable[[str], None] | None = None) -> Integrity:
    """`databases`: service → database name. Waits up to `settle` seconds for pending
    orders and undelivered notifications to finish, then judges."""
    deadline = time.monotonic() + settle
    while True:
        result = _check_once(pg, databases, since, customers)
        settling = [v for v in result.violations if v.startswith(("still PENDING", "outbox"))]
        if not settling or time.monotonic() > deadline:
            return result
        if say:
            say(f"  waiting for {len(settling)} order(s) or notification(s) to settle…")
        time.sleep(3)


def _check_once(pg: Postgres, databases: dict[str, str], since: datetime,
                customers: list[Order]) -> Integrity:
    result = Integrity()
    key_col = "idempotency_key" in _columns(pg, databases["orders"], "orders")
    orders = _rows(pg, databases["orders"],
                   "SELECT order_id::text AS order_id, state"
                   + (", idempotency_key AS key" if key_col else ", NULL AS key")
                   + " FROM orders WHERE created_at >= %s", [since])
    by_id = {o["order_id"]: o for o in orders}
    result.orders = len(orders)
    result.states = Counter(o["state"] for o in orders)

    def status_by_order(service: str, table: str) -> dict[str, str]:
        rows = _rows(pg, databases[service],
                     f"SELECT order_id::text AS order_id, status FROM {table}")
        return {r["order_id"]: r["status"] for r in rows}

    auths = status_by_order("payments", "authorizations")
    _sagas(result, by_id, auths, status_by_order("inventory", "reservations"),
           status_by_order("shipping", "shipments"))
    _charges(result, orders, by_id, auths)
    _answers(result, orders, by_id, customers)
    if "notifications" in databases:
        notes = _rows(pg, databases["notifications"],
                      "SELECT order_id::text AS order_id, type FROM notifications")
        _outbox(result, by_id, notes)
    return result


def _sagas(result: Integrity, by_id: dict[str, dict[str, Any]], auths: dict[str, str],
           reservations: dict[str, str], shipments: dict[str, str]) -> None:
    """CONFIRMED ⇒ all three effects live; CANCELLED ⇒ none; nothing else left."""
    for oid, order in by_id.items():
        state = order["state"]
        auth, res, ship = auths.get(oid), reservations.get(oid), shipments.get(oid)
        effects = f"authorization={auth} reservation={res} shipment={ship}"
        if state == "CONFIRMED":
            if (auth, res, ship) != ("AUTHORIZED", "RESERVED", "CREATED"):
                result.violations.append(f"order {oid} CONFIRMED but {effects}")
        elif state == "CANCELLED":
            if auth == "AUTHORIZED" or res == "RESERVED" or ship == "CREATED":
                result.violations.append(f"order {oid} CANCELLED but {effects}")
            for what, status in (("authorization", auth), ("reservation", res),
                                 ("shipment", ship)):
                if status in ("CANCELLED", "RELEASED"):
                    result.compensations[f"{what}s {status.lower()}"] += 1
        else:
            result.violations.append(f"still PENDING: order {oid} is {state}")


def _charges(result: Integrity, orders: list[dict[str, Any]],
             by_id: dict[str, dict[str, Any]], auths: dict[str, str]) -> None:
    """Nothing charged twice (one order per key), nothing charged for nothing."""
    for oid, status in auths.items():
        order = by_id.get(oid)
        if status == "AUTHORIZED" and order is not None and order["state"] != "CONFIRMED":
            result.violations.append(f"authorization of order {oid} is live but the order "
                                     f"is {order['state']}")
    keys = Counter(o["key"] for o in orders if o["key"])
    result.violations.extend(f"idempotency key {k} made {n} orders"
                             for k, n in keys.items() if n > 1)


def _answers(result: Integrity, orders: list[dict[str, Any]],
             by_id: dict[str, dict[str, Any]], customers: list[Order]) -> None:
    """What customers were told is what the databases hold."""
    keyed = {o["key"]: o for o in orders if o["key"]}
    v = result.violations
    for c in customers:
        if c.order_id and c.state in ("CONFIRMED", "CANCELLED"):
            result.answered += 1
            row = by_id.get(c.order_id)
            if row is None:
                v.append(f"customer was told order {c.order_id} is {c.state}; orders has none")
            elif row["state"] != c.state:
                v.append(f"customer was told order {c.order_id} is {c.state}; orders says "
                         f"{row['state']}")
            elif row["key"] and row["key"] != c.key:
                v.append(f"order {c.order_id} was placed with key {c.key}, stored {row['key']}")
        else:
            result.unanswered += 1
            stored = keyed.get(c.key)
            if stored is not None and stored["state"] not in ("CONFIRMED", "CANCELLED"):
                v.append(f"still PENDING: unanswered order with key {c.key}")


def _outbox(result: Integrity, by_id: dict[str, dict[str, Any]],
            notes: list[dict[str, Any]]) -> None:
    """Every terminal order has its OrderConfirmed/OrderCancelled notification, once."""
    result.notifications = sum(1 for n in notes if n["order_id"] in by_id)
    types: dict[str, list[str]] = {}
    for n in notes:
        types.setdefault(n["order_id"], []).append(n["type"])
    for oid, order in by_id.items():
        if order["state"] not in ("CONFIRMED", "CANCELLED"):
            continue
        want = "OrderConfirmed" if order["state"] == "CONFIRMED" else "OrderCancelled"
        got = types.get(oid, [])
        if want not in got:
            result.violations.append(f"outbox: order {oid} {order['state']} has no {want} "
                                     "notification")
        elif got.count(want) > 1:
            result.violations.append(f"order {oid} notified {got.count(want)} times: {got}")
