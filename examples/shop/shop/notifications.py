"""Notifications: consumes the orders' domain events, each once.

``POST /events`` inserts by ``event_id`` (the primary key): a redelivered event is
acknowledged (200, ``duplicate: true``) and only counted in ``deliveries``, never stored or
acted on twice.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from psycopg.types.json import Jsonb

from shop import logs, metrics
from shop.commands import order_id_of
from shop.db import Database
from shop.web import Call, HTTPError, Reply, Route, Service

log = logging.getLogger("shop")

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS notifications (
         event_id uuid PRIMARY KEY,
         type text NOT NULL,
         order_id uuid,
         correlation_id text,
         payload jsonb NOT NULL DEFAULT '{}',
         deliveries integer NOT NULL DEFAULT 1,
         received_at timestamptz NOT NULL DEFAULT now())""",
    "CREATE INDEX IF NOT EXISTS notifications_order_id ON notifications (order_id)",
)


class Notifications(Service):
    name = "notifications"

    def __init__(self, database_url: str) -> None:
        super().__init__(Database(database_url, SCHEMA))

    def routes(self) -> list[Route]:
        return [Route("POST", "/events", self.receive),
                Route("GET", "/notifications", self.list_notifications)]

    def receive(self, call: Call) -> Reply:
        body = call.json_object()
        try:
            event_id = str(uuid.UUID(str(body.get("event_id"))))
        except ValueError:
            raise HTTPError(422, "event_id must be a UUID") from None
        kind = body.get("type")
        if not isinstance(kind, str) or not kind:
            raise HTTPError(422, "type is required")
        order_id = order_id_of(body["order_id"]) if body.get("order_id") else None
        cid = body.get("correlation_id") or call.correlation_id
        logs.correlation_id.set(cid)
        payload: Any = body.get("payload") or {}
        with self.db.connection() as conn:
            row = conn.execute(
                "INSERT INTO notifications (event_id, type, order_id, correlation_id, payload)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (event_id) DO UPDATE"
                " SET deliveries = notifications.deliveries + 1"
                " RETURNING (xmax = 0) AS inserted, deliveries",
                (event_id, kind, order_id, cid, Jsonb(payload))).fetchone()
        assert row is not None
        duplicate = not row["inserted"]
        metrics.EVENTS_RECEIVED.labels(str(duplicate).lower()).inc()
        if duplicate:
            log.info("event %s (%s) already received: ignored (delivery %d)", event_id, kind,
                     row["deliveries"], extra=logs.log_fields(event_id=event_id))
        else:
            log.info("notify customer: %s", kind, extra=logs.log_fields(event_id=event_id))
        return Reply(200, {"event_id": event_id, "duplicate": duplicate})

    def list_notifications(self, call: Call) -> Reply:
        order_id = call.query.get("order_id")
        with self.db.connection() as conn:
            if order_id:
                rows = conn.execute("SELECT * FROM notifications WHERE order_id = %s"
                                    " ORDER BY received_at", (order_id_of(order_id),))
            else:
                rows = conn.execute("SELECT * FROM notifications ORDER BY received_at LIMIT 10000")
            return Reply(200, rows.fetchall())
