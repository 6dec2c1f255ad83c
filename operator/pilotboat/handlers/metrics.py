"""The operator's own metrics, and the HTTP endpoint that serves them with health and readiness.

Handlers call the small functions here (one line each at the place a thing happens); the
numbers live in a registry of this module, served at ``/metrics`` in Prometheus' text format
by ``pilotboat run --metrics-port``, beside ``/healthz`` (the process answers) and ``/readyz``
(Kopf has started: watching, and serving its webhooks; or, with leader election, the process
stands by for the Lease: a standby is ready to take over, so a PodDisruptionBudget counts it).

Series:

* ``pilotboat_reconciles_total{kind,result}`` and ``pilotboat_reconcile_duration_seconds{kind}``;
* ``pilotboat_releases{phase}``: Microservices by release phase, and
  ``pilotboat_release_phase{namespace,service,phase}``: 1 for each Microservice's phase now
  (one series per Microservice, so an alert can name it),
  ``pilotboat_canary_weight{namespace,service}`` (the step's target) and
  ``pilotboat_canary_actual_weight{namespace,service}`` (what the canary receives now);
* ``pilotboat_analyses_total{verdict}``: canary measurements by verdict;
* ``pilotboat_migration_gates_blocked{gate,reason}``: SchemaMigrations held by each gate now;
  per migration, ``pilotboat_migration_phase{namespace,migration,phase}`` (1 for its phase
  now) and ``pilotboat_migration_blocked{namespace,migration,gate,reason}`` (1 for each gate
  that holds it now), so an alert can name the migration;
* ``pilotboat_migration_phase_duration_seconds{phase}``: how long migrations stayed in a phase;
* ``pilotboat_api_requests_total{method,code}``: requests the operator's Kubernetes client
  sent to the API server, by HTTP method and response class (``2xx``, ``4xx``, ``error`` for
  no response); Kopf's own watch requests (a list and a watch per watched kind, renewed every
  ``server_timeout``) are not among them;
* ``pilotboat_admission_review_duration_seconds{webhook}``: admission reviews each webhook
  answered, and how long its check took;
* ``pilotboat_leader``: 1 while this process acts (it holds the Lease, or runs without leader
  election), 0 while it stands by;
* ``pilotboat_build_info{version,api_version,python,kopf}``: always 1, for joins and for
  seeing which version runs where.
"""

from __future__ import annotations

import platform
import threading
import time
from collections import Counter as _Tally
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _distribution_version
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from pilotboat import API_VERSION

__all__ = [
    "REGISTRY",
    "admission_reviewed",
    "analysis_verdict",
    "count_requests",
    "leading",
    "migration_observed",
    "reconciling",
    "release_observed",
    "serve",
]

REGISTRY = CollectorRegistry(auto_describe=True)

_RECONCILES = Counter(
    "pilotboat_reconciles",
    "Reconcile passes, by kind and result (ok, error).",
    ["kind", "result"],
    registry=REGISTRY,
)
_LATENCY = Histogram(
    "pilotboat_reconcile_duration_seconds",
    "Time one reconcile pass took, by kind.",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
_RELEASES = Gauge(
    "pilotboat_releases",
    "Microservices by release phase.",
    ["phase"],
    registry=REGISTRY,
)
_WEIGHT = Gauge(
    "pilotboat_canary_weight",
    "Percent of traffic the current step gives the canary (the target).",
    ["namespace", "service"],
    registry=REGISTRY,
)
_ACTUAL = Gauge(
    "pilotboat_canary_actual_weight",
    "Percent of traffic the canary receives now (route weight, or share of ready pods).",
    ["namespace", "service"],
    registry=REGISTRY,
)
_ANALYSES = Counter(
    "pilotboat_analyses",
    "Canary analysis measurements, by verdict.",
    ["verdict"],
    registry=REGISTRY,
)
_GATES = Gauge(
    "pilotboat_migration_gates_blocked",
    "SchemaMigrations held by a gate, by gate and reason.",
    ["gate", "reason"],
    registry=REGISTRY,
)
_PHASE_TIME = Histogram(
    "pilotboat_migration_phase_duration_seconds",
    "How long a SchemaMigration stayed in a phase.",
    ["phase"],
    buckets=(1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 86400),
    registry=REGISTRY,
)
_API_REQUESTS = Counter(
    "pilotboat_api_requests",
    "Requests the operator's Kubernetes client sent to the API server, by method and response"
    " class (Kopf's watches are not counted).",
    ["method", "code"],
    registry=REGISTRY,
)
_ADMISSIONS = Histogram(
    "pilotboat_admission_review_duration_seconds",
    "Admission reviews the operator's webhooks answered, by webhook, and how long each check"
    " took (the API server calls a webhook only for requests its matchConditions select).",
    ["webhook"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
_FIRST_PASS_LISTS = Counter(
    "pilotboat_first_pass_schema_migrations",
    "New Microservices' first passes, by where their SchemaMigration list came from:"
    " admission (asked beside the children's dry runs) or the pass (asked by it).",
    ["source"],
    registry=REGISTRY,
)
_LEADER = Gauge(
    "pilotboat_leader",
    "1 while this process acts, 0 while it stands by for the Lease.",
    registry=REGISTRY,
)

_BUILD = Gauge(
    "pilotboat_build_info",
    "Always 1: the operator's version, the API version it serves, Python's and Kopf's.",
    ["version", "api_version", "python", "kopf"],
    registry=REGISTRY,
)


def _installed(distribution: str) -> str:
    try:
        return _distribution_version(distribution)
    except PackageNotFoundError:
        return "unknown"


_BUILD.labels(_installed("pilotboat"), API_VERSION, platform.python_version(),
              _installed("kopf")).set(1)

_PHASE = Gauge(
    "pilotboat_release_phase",
    "1 for the release phase each Microservice is in now.",
    ["namespace", "service", "phase"],
    registry=REGISTRY,
)

_MIGRATION_PHASE = Gauge(
    "pilotboat_migration_phase",
    "1 for the phase each SchemaMigration is in now.",
    ["namespace", "migration", "phase"],
    registry=REGISTRY,
)
_MIGRATION_BLOCKED = Gauge(
    "pilotboat_migration_blocked",
    "1 for each gate (and its reason) that holds a SchemaMigration now.",
    ["namespace", "migration", "gate", "reason"],
    registry=REGISTRY,
)

_lock = threading.Lock()
_phases: dict[tuple[str, str], str] = {}
_phase_tally: _Tally[str] = _Tally()  # phase → how many of _phases have it
_blocked: dict[tuple[str, str], frozenset[tuple[str, str]]] = {}
_migration_phase: dict[tuple[str, str], tuple[str, float]] = {}


@contextmanager
def reconciling(kind: str) -> Iterator[None]:
    """Count and time one reconcile pass of ``kind``; an exception counts as an error."""
    started = time.perf_counter()
    try:
        yield
    except BaseException:
        _RECONCILES.labels(kind, "error").inc()
        raise
    else:
        _RECONCILES.labels(kind, "ok").inc()
    finally:
        _LATENCY.labels(kind).observe(time.perf_counter() - started)


def release_observed(
    namespace: str, name: str, phase: str | None, weight: int, actual: int = 0
) -> None:
    """The phase and canary weights (target, actual) a Microservice's status now says
    (phase None: it is gone). The tally of phases is kept as it changes, so a call costs the
    same with 5 Microservices or 5,000."""
    key = (namespace, name)
    with _lock:
        before = _phases.get(key)
        if before is not None and before != phase:
            _PHASE.remove(namespace, name, before)
        if before is not None:
            _phase_tally[before] -= 1
        if phase is None:
            _phases.pop(key, None)
            if before is not None:  # its weights were exported with its phase
                _WEIGHT.remove(namespace, name)
                _ACTUAL.remove(namespace, name)
        else:
            _phases[key] = phase
            _phase_tally[phase] += 1
            _PHASE.labels(namespace, name, phase).set(1)
            _WEIGHT.labels(namespace, name).set(weight)
            _ACTUAL.labels(namespace, name).set(actual)
        for known in {"Healthy", "Progressing", "Paused", "Degraded", *_phase_tally}:
            _RELEASES.labels(known).set(_phase_tally.get(known, 0))


def count_requests(api_client: Any) -> None:
    """Count every request `api_client` (a `kubernetes.client.ApiClient`) sends from now on
    in ``pilotboat_api_requests_total``: its REST client's one entry point is wrapped."""
    rest = api_client.rest_client
    send = rest.request

    def counted(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        try:
            response = send(method, url, *args, **kwargs)
        except Exception:
            _API_REQUESTS.labels(method, "error").inc()
            raise
        _API_REQUESTS.labels(method, f"{int(response.status) // 100}xx").inc()
        return response

    rest.request = counted


def leading(yes: bool) -> None:
    _LEADER.set(1 if yes else 0)


def first_pass_listed(source: str) -> None:
    _FIRST_PASS_LISTS.labels(source).inc()


def admission_reviewed(webhook: str, seconds: float) -> None:
    _ADMISSIONS.labels(webhook).observe(seconds)


def analysis_verdict(verdict: str) -> None:
    _ANALYSES.labels(verdict).inc()


def migration_observed(
    namespace: str,
    name: str,
    phase: str,
    blocked: Iterable[tuple[str, str]],
    now: float | None = None,
) -> None:
    """A SchemaMigration's phase and the (gate, reason) pairs that hold it, after a pass."""
    now = time.time() if now is None else now
    key = (namespace, name)
    blocked = frozenset(blocked)
    with _lock:
        _migration_series(key, phase, blocked)
        _blocked[key] = blocked
        _count_gates()
        before = _migration_phase.get(key)
        if before is None or before[0] != phase:
            if before is not None:
                _PHASE_TIME.labels(before[0]).observe(max(now - before[1], 0.0))
            _migration_phase[key] = (phase, now)


def migration_forgotten(namespace: str, name: str) -> None:
    """A SchemaMigration is gone: its own series go, and it no longer counts as held."""
    key = (namespace, name)
    with _lock:
        _migration_series(key, None, frozenset())
        _blocked.pop(key, None)
        _migration_phase.pop(key, None)
        _count_gates()


def _count_gates() -> None:
    """``pilotboat_migration_gates_blocked`` from what holds each migration now; a pair that
    holds none any more reads 0. Called with ``_lock`` held."""
    tally = _Tally(pair for pairs in _blocked.values() for pair in pairs)
    known = {(s.labels["gate"], s.labels["reason"]) for m in _GATES.collect() for s in m.samples}
    for gate, reason in known | set(tally):
        _GATES.labels(gate, reason).set(tally.get((gate, reason), 0))


def _migration_series(key: tuple[str, str], phase: str | None,
                      blocked: frozenset[tuple[str, str]]) -> None:
    """One migration's own series, the earlier phase's and released gates' removed."""
    before = _migration_phase.get(key)
    if before is not None and before[0] != phase:
        _MIGRATION_PHASE.remove(*key, before[0])
    if phase is not None:
        _MIGRATION_PHASE.labels(*key, phase).set(1)
    for gate, reason in _blocked.get(key, frozenset()) - blocked:
        _MIGRATION_BLOCKED.remove(*key, gate, reason)
    for gate, reason in blocked:
        _MIGRATION_BLOCKED.labels(*key, gate, reason).set(1)


class _Endpoints(BaseHTTPRequestHandler):
    ready: threading.Event
    standby: threading.Event

    def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            self._send(200, b"ok\n")
        elif path == "/readyz":
            if self.ready.is_set():
                self._send(200, b"ready\n")
            elif self.standby.is_set():
                self._send(200, b"standing by\n")
            else:
                self._send(503, b"starting\n")
        else:
            self._send(404, b"not found\n")

    def _send(self, code: int, body: bytes, content_type: str = "text/plain") -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass  # scrapes and probes every few seconds would drown the log


def serve(
    address: str, port: int, ready: threading.Event, standby: threading.Event | None = None
) -> ThreadingHTTPServer:
    """Serve /metrics, /healthz and /readyz on a daemon thread; returns the server."""
    handler = type(
        "Endpoints", (_Endpoints,), {"ready": ready, "standby": standby or threading.Event()}
    )
    server = ThreadingHTTPServer((address, port), handler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
