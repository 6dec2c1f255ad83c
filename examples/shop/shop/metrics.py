"""Prometheus metrics (``prometheus_client``), in the names the operator's queries expect.

Golden signals, per answered request (``/healthz`` and ``/metrics`` are not the service's
traffic and are not counted):

- ``http_requests_total{code,method,route}`` counter;
- ``http_request_duration_seconds{code,method,route}`` histogram;
- ``http_requests_in_flight`` gauge (saturation).

The pod's namespace, service and version are added by Prometheus' relabelling from the
pod's labels, never by the service itself. The default registry also exports the
``process_*`` collector (``process_cpu_seconds_total``). Shop metrics are ``shop_*``.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "BREAKER_OPEN",
    "DEPENDENCY_CALLS",
    "EVENTS_RECEIVED",
    "IN_FLIGHT",
    "OUTBOX_PUBLISHED",
    "OUTBOX_UNSENT",
    "REQUESTS",
    "REQUEST_DURATION",
    "SAGAS",
]

REQUESTS = Counter(
    "http_requests_total", "HTTP requests answered.", ["code", "method", "route"]
)
REQUEST_DURATION = Histogram(
    "http_request_duration_seconds",
    "Time to answer an HTTP request.",
    ["code", "method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
IN_FLIGHT = Gauge("http_requests_in_flight", "HTTP requests being answered now.")

DEPENDENCY_CALLS = Counter(
    "shop_dependency_calls_total",
    "Calls to other services, by outcome (ok, client_error, error, timeout, breaker_open).",
    ["dependency", "outcome"],
)
BREAKER_OPEN = Gauge(
    "shop_circuit_breaker_open", "1 while the breaker of a dependency is open.", ["dependency"]
)
SAGAS = Counter("shop_sagas_total", "Order sagas finished, by end state.", ["state"])
OUTBOX_PUBLISHED = Counter("shop_outbox_published_total", "Outbox events published.")
OUTBOX_UNSENT = Gauge("shop_outbox_unsent", "Outbox events not yet published.")
EVENTS_RECEIVED = Counter(
    "shop_events_received_total", "Events received by notifications.", ["duplicate"]
)
