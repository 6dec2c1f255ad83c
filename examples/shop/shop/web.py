"""The HTTP layer every service shares (Starlette on uvicorn).

Handlers are plain functions ``Call -> Reply`` run in the server's thread pool (the database
driver and the HTTP client are synchronous): the async endpoint reads the body, takes the
correlation id from ``X-Correlation-ID`` (or makes one), runs the handler, and counts the
request in the golden-signal metrics under its route template. ``/healthz`` answers 200
once the database answers and the schema is in place, else 503; ``/metrics`` is
Prometheus' text format.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import psycopg
import psycopg_pool
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route as StarletteRoute

from shop import logs, metrics
from shop.db import Database

__all__ = ["Call", "HTTPError", "Reply", "Route", "Service", "make_app"]

log = logging.getLogger("shop")


class HTTPError(Exception):
    """Answer ``code`` with ``{"error": message, **extra}``."""

    def __init__(self, code: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.extra = code, message, extra


@dataclass(frozen=True)
class Call:
    """What a handler sees of a request."""

    method: str
    path_params: Mapping[str, str]
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: Any
    correlation_id: str

    @property
    def idempotency_key(self) -> str | None:
        return self.headers.get("idempotency-key") or None

    def json_object(self) -> dict[str, Any]:
        if not isinstance(self.body, dict):
            raise HTTPError(400, "the body must be a JSON object")
        return self.body


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any
    headers: Mapping[str, str] = field(default_factory=dict)


Handler = Callable[[Call], Reply]


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler


class Service:
    """A shop service: its database, its routes, what it runs beside them."""

    name = "service"

    def __init__(self, db: Database) -> None:
        self.db = db

    def routes(self) -> list[Route]:
        raise NotImplementedError

    def start(self) -> None:
        self.db.start()

    def stop(self) -> None:
        self.db.stop()

    def not_ready(self) -> str | None:
        """None when the service may receive traffic, else why not."""
        return self.db.check()


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


class ShopJSON(JSONResponse):
    def render(self, content: Any) -> bytes:
        return json.dumps(content, default=_jsonable, separators=(",", ":")).encode()


def _run(handler: Handler, call: Call) -> Reply:
    logs.correlation_id.set(call.correlation_id)
    oid = call.path_params.get("order_id") or (
        call.body.get("order_id") if isinstance(call.body, dict) else None)
    logs.order_id.set(str(oid) if oid else None)
    try:
        return handler(call)
    except HTTPError as error:
        return Reply(error.status, {"error": error.message, **error.extra})
    except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as error:
        log.error("database unavailable: %s", error)
        return Reply(503, {"error": "database unavailable"})
    except Exception:
        log.exception("unhandled error")
        return Reply(500, {"error": "internal error"})


def _endpoint(route: Route) -> Callable[[Request], Any]:
    async def endpoint(request: Request) -> Response:
        started = time.perf_counter()
        metrics.IN_FLIGHT.inc()
        cid = request.headers.get("x-correlation-id") or logs.new_correlation_id()
        logs.correlation_id.set(cid)
        reply = Reply(500, {"error": "internal error"})
        try:
            raw = await request.body()
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                reply = Reply(400, {"error": "the body is not JSON"})
            else:
                call = Call(request.method, dict(request.path_params), dict(request.query_params),
                            {k.lower(): v for k, v in request.headers.items()}, body, cid)
                reply = await run_in_threadpool(_run, route.handler, call)
            return ShopJSON(reply.body, status_code=reply.status,
                            headers={"X-Correlation-ID": cid, **reply.headers})
        finally:
            elapsed = time.perf_counter() - started
            metrics.IN_FLIGHT.dec()
            labels = (str(reply.status), request.method, route.path)
            metrics.REQUESTS.labels(*labels).inc()
            metrics.REQUEST_DURATION.labels(*labels).observe(elapsed)
            level = logging.ERROR if reply.status >= 500 else logging.INFO
            log.log(level, "%s %s %d", request.method, request.url.path, reply.status,
                    extra=logs.log_fields(route=route.path, code=reply.status,
                                          duration_ms=round(elapsed * 1000, 1)))

    return endpoint


def make_app(service: Service) -> Starlette:
    async def healthz(request: Request) -> Response:
        reason = await run_in_threadpool(service.not_ready)
        if reason:
            return ShopJSON({"status": "unavailable", "reason": reason}, status_code=503)
        return ShopJSON({"status": "ok", "service": service.name})

    async def metrics_text(request: Request) -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        service.start()
        log.info("%s started", service.name)
        try:
            yield
        finally:
            await run_in_threadpool(service.stop)
            log.info("%s stopped", service.name)

    routes = [StarletteRoute(r.path, _endpoint(r), methods=[r.method]) for r in service.routes()]
    routes += [StarletteRoute("/healthz", healthz, methods=["GET"]),
               StarletteRoute("/metrics", metrics_text, methods=["GET"])]
    return Starlette(routes=routes, lifespan=lifespan)
