"""Customers: a bounded stream of orders, ``POST /orders`` with an ``Idempotency-Key``, sent
from this machine to orders' Service (its ClusterIP; kube-proxy picks a pod per
connection, so every order opens a new connection and the canary gets its share).

A request that fails in transport or answers 5xx is retried with the same key (the customer
pressing "buy" again): orders must return the same order and do nothing twice. Every order's
outcome is kept for the story and the integrity check.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

__all__ = ["Customers", "Order"]

FIRST = ("Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Margaret", "Ken", "Radia",
         "Leslie", "Frances", "John")
LAST = ("Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Hamilton", "Thompson",
        "Perlman", "Lamport", "Allen", "Backus")


@dataclass
class Order:
    key: str
    chapter: str
    sent_at: float
    customer: str
    attempts: int = 0
    status: int | None = None
    order_id: str | None = None
    state: str | None = None
    reason: str | None = None
    error: str | None = None
    done_at: float | None = None
    statuses: list[int] = field(default_factory=list)


class Customers:
    """~`rate` orders a second until stopped, for `max_seconds` at most."""

    def __init__(self, base_url: str, skus: list[str], *, rare: list[str] | None = None,
                 rare_share: float = 0.03, rate: float = 5.0, max_seconds: float = 1200,
                 attempts: int = 4, timeout: float = 20) -> None:
        """`rare`: products few are in stock of; `rare_share` of orders ask for one."""
        self.base_url = base_url.rstrip("/")
        self.skus = skus
        self.rare = rare or []
        self.rare_share = rare_share
        self.rate = rate
        self.max_seconds = max_seconds
        self.attempts = attempts
        self.timeout = timeout
        self.chapter = "setup"
        self.orders: list[Order] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(16, thread_name_prefix="customer")

    # --- control -----------------------------------------------------------------------
    def start(self) -> Customers:
        self._thread = threading.Thread(target=self._loop, name="customers", daemon=True)
        self._thread.start()
        return self

    def stop(self, drain: float = 60) -> None:
        """Stop sending and wait (at most `drain` seconds) for the orders in flight."""
        self._stop.set()
        if self._thread:
            self._thread.join(10)
        self._pool.shutdown(wait=False, cancel_futures=False)
        deadline = time.monotonic() + drain
        while self.in_flight() and time.monotonic() < deadline:
            time.sleep(0.2)

    def in_flight(self) -> int:
        with self._lock:
            return sum(1 for o in self.orders if o.done_at is None)

    # --- what happened -----------------------------------------------------------------
    def snapshot(self, chapter: str | None = None) -> list[Order]:
        with self._lock:
            return [o for o in self.orders if chapter is None or o.chapter == chapter]

    def summary(self, chapter: str | None = None) -> dict[str, int]:
        counts: dict[str, int] = {"sent": 0, "CONFIRMED": 0, "CANCELLED": 0, "failed": 0,
                                  "pending": 0}
        for o in self.snapshot(chapter):
            counts["sent"] += 1
            if o.done_at is None:
                counts["pending"] += 1
            elif o.state in ("CONFIRMED", "CANCELLED"):
                counts[o.state] += 1
            else:
                counts["failed"] += 1
        return counts

    # --- sending -----------------------------------------------------------------------
    def _loop(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        interval = 1.0 / self.rate
        next_at = time.monotonic()
        while not self._stop.is_set() and time.monotonic() < deadline:
            order = Order(
                key=str(uuid.uuid4()), chapter=self.chapter, sent_at=time.time(),
                customer=f"{random.choice(FIRST)} {random.choice(LAST)}",
            )
            with self._lock:
                self.orders.append(order)
            self._pool.submit(self._place, order)
            next_at += interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def _body(self, order: Order) -> dict[str, Any]:
        items = [{"sku": sku, "qty": random.randint(1, 2)}
                 for sku in random.sample(self.skus, k=min(len(self.skus), random.randint(1, 2)))]
        if self.rare and random.random() < self.rare_share:
            items.append({"sku": random.choice(self.rare), "qty": 1})
        return {"customer": order.customer, "items": items,
                "address": f"{random.randint(1, 99)} Harbour Street, Port Town"}

    def _place(self, order: Order) -> None:
        body = self._body(order)
        headers = {"Idempotency-Key": order.key, "X-Correlation-ID": f"demo-{order.key[:8]}"}
        try:
            for attempt in range(1, self.attempts + 1):
                order.attempts = attempt
                try:
                    # A new connection per attempt: kube-proxy balances connections, not
                    # requests, so a kept-alive connection would stick to one pod.
                    with httpx.Client(timeout=self.timeout) as client:
                        response = client.post(f"{self.base_url}/orders", json=body,
                                               headers=headers)
                except httpx.HTTPError as exc:
                    order.error = f"{exc.__class__.__name__}: {exc}"
                    time.sleep(min(4.0, 0.5 * 2 ** attempt) * random.random())
                    continue
                order.status = response.status_code
                order.statuses.append(response.status_code)
                if response.status_code >= 500:
                    order.error = response.text[:200]
                    time.sleep(min(4.0, 0.5 * 2 ** attempt) * random.random())
                    continue
                data = response.json() if response.content else {}
                order.order_id = data.get("order_id") or order.order_id
                order.state = data.get("state")
                order.reason = data.get("reason")
                order.error = None if response.status_code < 400 else response.text[:200]
                if response.status_code == 202:  # accepted, saga still running: ask again
                    time.sleep(1.0)
                    continue
                break
        finally:
            order.done_at = time.time()
