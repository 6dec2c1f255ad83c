"""echo: a small HTTP service the canary tests and the demo roll out.

Standard library only, so the image is the Python base plus this file.

  GET /         200 JSON {"version", "pod", "namespace", "node"}; with ERROR_RATIO a fraction
                of these answers are 500 instead, and each waits LATENCY_SECONDS first
  GET /healthz  200 "ok" (probes; never slowed down, never failed on purpose)
  GET /metrics  Prometheus text format:
                  http_requests_total{code,method}                 counter
                  http_request_duration_seconds{code,method}       histogram
                  http_requests_in_flight                          gauge (saturation)
                  process_cpu_seconds_total                        counter
                  echo_build_info{version}                         gauge, always 1
                /healthz and /metrics are not counted: they are not the service's traffic.

Environment:
  VERSION          reported by / and echo_build_info; else SERVICE_VERSION (which the
                   operator sets on its pods), else "dev"
  POD_NAME         reported by / (default: the hostname); POD_NAMESPACE, NODE_NAME likewise
  ERROR_RATIO      0.0 .. 1.0, the fraction of / requests answered 500 (default 0)
  LATENCY_SECONDS  seconds added to every / request (default 0)
  CPU_SECONDS_PER_REQUEST
                   CPU seconds each / request burns in a busy loop, counted on the thread's
                   own CPU clock so that a busy machine does not change it (default 0)
  PORT             listening port (default 8080)
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _env_float(name: str, default: float, low: float, high: float) -> float:
    raw = os.environ.get(name, "")
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        sys.exit(f"echo: {name}={raw!r} is not a number")
    if not low <= value <= high:
        sys.exit(f"echo: {name}={raw!r} is outside [{low}, {high}]")
    return value


class Metrics:
    """Counters and histograms keyed by (code, method), rendered as Prometheus text."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count: dict[tuple[str, str], int] = {}
        self._buckets: dict[tuple[str, str], list[int]] = {}
        self._sum: dict[tuple[str, str], float] = {}
        self._in_flight = 0

    def enter(self) -> None:
        with self._lock:
            self._in_flight += 1

    def leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def observe(self, code: int, method: str, seconds: float) -> None:
        key = (str(code), method)
        with self._lock:
            self._count[key] = self._count.get(key, 0) + 1
            buckets = self._buckets.setdefault(key, [0] * len(BUCKETS))
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    buckets[i] += 1
            self._sum[key] = self._sum.get(key, 0.0) + seconds

    def render(self, version: str) -> str:
        out = [
            "# HELP echo_build_info The version this process serves.",
            "# TYPE echo_build_info gauge",
            f'echo_build_info{{version="{_escape(version)}"}} 1',
            "# HELP process_cpu_seconds_total User and system CPU time spent, in seconds.",
            "# TYPE process_cpu_seconds_total counter",
            f"process_cpu_seconds_total {sum(os.times()[:2])}",
            "# HELP http_requests_in_flight Requests being served now.",
            "# TYPE http_requests_in_flight gauge",
        ]
        with self._lock:
            out.append(f"http_requests_in_flight {self._in_flight}")
            out += [
                "# HELP http_requests_total HTTP requests served, by status code and method.",
                "# TYPE http_requests_total counter",
            ]
            keys = sorted(self._count)
            for code, method in keys:
                out.append(
                    f'http_requests_total{{code="{code}",method="{method}"}} '
                    f"{self._count[(code, method)]}"
                )
            out += [
                "# HELP http_request_duration_seconds HTTP request latency, by code and method.",
                "# TYPE http_request_duration_seconds histogram",
            ]
            for code, method in keys:
                labels = f'code="{code}",method="{method}"'
                for bound, n in zip(BUCKETS, self._buckets[(code, method)], strict=True):
                    out.append(f'http_request_duration_seconds_bucket{{{labels},le="{bound}"}} {n}')
                total, seconds = self._count[(code, method)], self._sum[(code, method)]
                out.append(f'http_request_duration_seconds_bucket{{{labels},le="+Inf"}} {total}')
                out.append(f"http_request_duration_seconds_sum{{{labels}}} {seconds}")
                out.append(f"http_request_duration_seconds_count{{{labels}}} {total}")
        return "\n".join(out) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "pilotboat-echo"
    # set by main()
    version = "dev"
    identity: dict[str, str] = {}
    error_ratio = 0.0
    latency = 0.0
    cpu_per_request = 0.0
    metrics = Metrics()

    def _send(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _serve(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            self._send(200, b"ok\n", "text/plain; charset=utf-8")
            return
        if path == "/metrics":
            body = self.metrics.render(self.version).encode()
            self._send(200, body, "text/plain; version=0.0.4; charset=utf-8")
            return
        start = time.monotonic()
        self.metrics.enter()
        try:
            if self.latency > 0:
                time.sleep(self.latency)
            if self.cpu_per_request > 0:
                _burn(self.cpu_per_request)
            if path != "/":
                code, payload = 404, {"error": "not found", "path": path}
            elif self.error_ratio > 0 and random.random() < self.error_ratio:
                code, payload = 500, {"error": "injected error", **self.identity}
            else:
                code, payload = 200, dict(self.identity)
            self._send(code, (json.dumps(payload) + "\n").encode(), "application/json")
        finally:
            self.metrics.leave()
        self.metrics.observe(code, self.command, time.monotonic() - start)

    do_GET = _serve
    do_HEAD = _serve

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        if os.environ.get("ACCESS_LOG", "") == "1":
            super().log_message(format, *args)


def _burn(seconds: float) -> None:
    """Spend `seconds` of this thread's CPU time."""
    until = time.thread_time() + seconds
    while time.thread_time() < until:
        sum(range(200))


def main() -> None:
    Handler.version = os.environ.get("VERSION") or os.environ.get("SERVICE_VERSION") or "dev"
    Handler.identity = {
        "version": Handler.version,
        "pod": os.environ.get("POD_NAME") or socket.gethostname(),
        "namespace": os.environ.get("POD_NAMESPACE", ""),
        "node": os.environ.get("NODE_NAME", ""),
    }
    Handler.error_ratio = _env_float("ERROR_RATIO", 0.0, 0.0, 1.0)
    Handler.latency = _env_float("LATENCY_SECONDS", 0.0, 0.0, 3600.0)
    Handler.cpu_per_request = _env_float("CPU_SECONDS_PER_REQUEST", 0.0, 0.0, 10.0)
    port = int(os.environ.get("PORT", "8080"))

    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer.allow_reuse_address = True
    server = ThreadingHTTPServer(("", port), Handler)

    def stop(signum: int, _frame: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(
        f"echo {Handler.version} listening on :{port} "
        f"(ERROR_RATIO={Handler.error_ratio}, LATENCY_SECONDS={Handler.latency},"
        f" CPU_SECONDS_PER_REQUEST={Handler.cpu_per_request})",
        flush=True,
    )
    server.serve_forever()
    server.server_close()


if __name__ == "__main__":
    main()
