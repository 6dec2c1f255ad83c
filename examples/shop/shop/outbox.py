"""Transactional outbox: a domain event is a row written in the same transaction as the state
change it reports; a relay thread publishes unsent rows to notifications and marks them sent.

The relay locks a batch (``FOR UPDATE SKIP LOCKED``, so several replicas share the work
without sending a row twice at once), posts each event, marks it sent, and commits. A crash
between a post and the commit sends those events again: delivery is at least once, and the
consumer deduplicates by ``event_id``. ``OUTBOX_BATCH_SIZE`` (20) and, for tests that crash
the relay mid-batch, ``OUTBOX_PUBLISH_DELAY_SECONDS`` (0) tune it.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from typing import Any

from psycopg.types.json import Jsonb

from shop import logs, metrics
from shop.db import Connection, Database
from shop.resilience import Dependency, Unavailable

__all__ = ["SCHEMA", "Relay", "add_event"]

log = logging.getLogger("shop")

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS outbox (
         id bigserial PRIMARY KEY,
         event_id uuid NOT NULL UNIQUE,
         type text NOT NULL,
         order_id uuid,
         correlation_id text,
         payload jsonb NOT NULL,
         created_at timestamptz NOT NULL DEFAULT now(),
         sent_at timestamptz,
         last_error text)""",
    "CREATE INDEX IF NOT EXISTS outbox_unsent ON outbox (id) WHERE sent_at IS NULL",
)


def add_event(conn: Connection, kind: str, order_id: str, correlation_id: str | None,
              payload: dict[str, Any]) -> str:
    """Write an event in ``conn``'s transaction; returns its id."""
    event_id = str(uuid.uuid4())
    conn.execute("INSERT INTO outbox (event_id, type, order_id, correlation_id, payload)"
                 " VALUES (%s, %s, %s, %s, %s)",
                 (event_id, kind, order_id, correlation_id, Jsonb(payload)))
    return event_id


class Relay:
    def __init__(self, db: Database, notifications: Dependency) -> None:
        self.db, self.notifications = db, notifications
        self.batch_size = int(os.environ.get("OUTBOX_BATCH_SIZE", "20"))
        self.delay = float(os.environ.get("OUTBOX_PUBLISH_DELAY_SECONDS", "0") or 0)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="outbox-relay", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)

    def wake(self) -> None:
        """Publish soon: an event was just committed."""
        self._wake.set()

    def _run(self) -> None:
        self.db.wait_ready()
        while not self._stop.is_set():
            try:
                sent, more = self.publish_batch()
            except Exception as error:  # noqa: BLE001 - the relay outlives any failure
                log.warning("outbox relay: %s: %s", type(error).__name__, error)
                sent, more = 0, False
            if not more:
                self._wake.wait(1.0 if sent == 0 else 0.05)
                self._wake.clear()

    def publish_batch(self) -> tuple[int, bool]:
        """Publish one batch; returns (events sent, whether to go on at once)."""
        sent = 0
        with self.db.connection() as conn:
            rows = conn.execute(
                "SELECT id, event_id, type, order_id, correlation_id, payload FROM outbox"
                " WHERE sent_at IS NULL ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED",
                (self.batch_size,)).fetchall()
            for row in rows:
                if self._stop.is_set():
                    break
                if not self._publish(conn, row):
                    break
                sent += 1
                if self.delay:
                    self._stop.wait(self.delay)
            unsent = conn.execute("SELECT count(*) AS n FROM outbox WHERE sent_at IS NULL"
                                  ).fetchone()
        metrics.OUTBOX_UNSENT.set((unsent or {"n": 0})["n"] - sent)
        metrics.OUTBOX_PUBLISHED.inc(sent)
        return sent, bool(rows) and sent == len(rows)

    def _publish(self, conn: Connection, row: dict[str, Any]) -> bool:
        cid, oid = logs.correlation_id.set(row["correlation_id"]), logs.order_id.set(
            str(row["order_id"]) if row["order_id"] else None)
        try:
            event = {"event_id": str(row["event_id"]), "type": row["type"],
                     "order_id": str(row["order_id"]) if row["order_id"] else None,
                     "correlation_id": row["correlation_id"], "payload": row["payload"]}
            try:
                response = self.notifications.call("POST", "/events", json=event,
                                                   idempotency_key=str(row["event_id"]))
            except Unavailable as error:
                log.warning("outbox: event %s not published: %s", row["event_id"], error)
                conn.execute("UPDATE outbox SET last_error = %s WHERE id = %s",
                             (str(error), row["id"]))
                return False
            error_text = None
            if response.status_code >= 400:  # refused for good: kept, marked, not retried
                error_text = f"refused with {response.status_code}: {response.text[:200]}"
                log.error("outbox: event %s %s", row["event_id"], error_text)
            conn.execute("UPDATE outbox SET sent_at = now(), last_error = %s WHERE id = %s",
                         (error_text, row["id"]))
            log.info("published %s", row["type"],
                     extra=logs.log_fields(event_id=str(row["event_id"])))
            return True
        finally:
            logs.correlation_id.reset(cid)
            logs.order_id.reset(oid)
