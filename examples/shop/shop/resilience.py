"""Calls to other services: a timeout on every call, retries with capped exponential backoff
and full jitter (tenacity), and a circuit breaker per dependency.

A call answers with the dependency's response when it is 2xx, 3xx or 4xx (a 4xx is the
dependency's decision, not a failure); it raises :class:`Unavailable` after the last retry
of a 5xx, a timeout or a connection failure, and at once while the breaker is open.
``Unavailable.maybe_applied`` tells the saga whether the command may have taken effect (a
5xx or a read timeout: compensate it too) or surely did not (connection refused, breaker
open).

The breaker is a small one of our own: pybreaker holds its lock for the whole duration of
the protected call, which would serialize every concurrent call to a dependency.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt
from tenacity.wait import wait_random_exponential

from shop import logs, metrics

__all__ = ["Breaker", "BreakerOpen", "Dependency", "Unavailable"]

log = logging.getLogger("shop")


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "")
    return float(raw) if raw else default


class BreakerOpen(Exception):
    pass


class Breaker:
    """Closed → open after ``failures`` consecutive failures; open fails fast for
    ``open_for`` seconds; then half-open lets one trial call through: its success closes the
    breaker, its failure opens it again."""

    def __init__(self, name: str, failures: int = 5, open_for: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name, self.failures, self.open_for, self._clock = name, failures, open_for, clock
        self._lock = threading.Lock()
        self._consecutive = 0
        self._opened_at: float | None = None
        self._trial = False
        metrics.BREAKER_OPEN.labels(name).set(0)

    @property
    def state(self) -> str:
        with self._lock:
            if self._opened_at is None:
                return "closed"
            if self._clock() - self._opened_at < self.open_for:
                return "open"
            return "half-open"

    def before(self) -> None:
        """Raises :class:`BreakerOpen` when the call must not be made."""
        with self._lock:
            if self._opened_at is None:
                return
            if self._clock() - self._opened_at < self.open_for or self._trial:
                raise BreakerOpen(f"circuit to {self.name} is open")
            self._trial = True

    def success(self) -> None:
        with self._lock:
            if self._opened_at is not None:
                log.info("circuit to %s closed", self.name)
            self._consecutive, self._opened_at, self._trial = 0, None, False
            metrics.BREAKER_OPEN.labels(self.name).set(0)

    def failure(self) -> None:
        with self._lock:
            self._consecutive += 1
            trial, self._trial = self._trial, False
            if trial or (self._opened_at is None and self._consecutive >= self.failures):
                self._opened_at = self._clock()
                metrics.BREAKER_OPEN.labels(self.name).set(1)
                log.warning("circuit to %s opened after %d consecutive failures",
                            self.name, self._consecutive)


class Unavailable(Exception):
    """The dependency did not answer usefully, after retries (or at once: breaker open)."""

    def __init__(self, dependency: str, detail: str, *, maybe_applied: bool,
                 breaker_open: bool = False) -> None:
        super().__init__(f"{dependency} unavailable: {detail}")
        self.dependency, self.detail = dependency, detail
        self.maybe_applied, self.breaker_open = maybe_applied, breaker_open


class Dependency:
    """An HTTP client for one other service, with its own timeout, retries and breaker.

    Settings from the environment (defaults per INTERFACE.md): ``CALL_TIMEOUT_SECONDS`` (2),
    ``CALL_ATTEMPTS`` (3), ``RETRY_BACKOFF_SECONDS`` (0.1, the first window of the full
    jitter), ``RETRY_BACKOFF_CAP_SECONDS`` (1), ``BREAKER_FAILURES`` (5),
    ``BREAKER_OPEN_SECONDS`` (10).
    """

    def __init__(self, name: str, base_url: str) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.timeout = _env_float("CALL_TIMEOUT_SECONDS", 2.0)
        self.attempts = int(_env_float("CALL_ATTEMPTS", 3))
        self.backoff = _env_float("RETRY_BACKOFF_SECONDS", 0.1)
        self.backoff_cap = _env_float("RETRY_BACKOFF_CAP_SECONDS", 1.0)
        self.breaker = Breaker(name, int(_env_float("BREAKER_FAILURES", 5)),
                               _env_float("BREAKER_OPEN_SECONDS", 10.0))
        # a connection per call: kube-proxy balances connections, so kept-alive ones would
        # stick to the pods first reached and a replica-ratio canary would get no traffic
        self.client = httpx.Client(base_url=self.base_url, timeout=self.timeout,
                                   limits=httpx.Limits(max_keepalive_connections=0))

    def close(self) -> None:
        self.client.close()

    def call(self, method: str, path: str, *, json: Any = None,
             idempotency_key: str | None = None,
             params: Mapping[str, str] | None = None) -> httpx.Response:
        headers = {"X-Correlation-ID": logs.correlation_id.get() or logs.new_correlation_id()}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        maybe_applied = False

        def once() -> httpx.Response:
            nonlocal maybe_applied
            try:
                self.breaker.before()
            except BreakerOpen as error:
                metrics.DEPENDENCY_CALLS.labels(self.name, "breaker_open").inc()
                raise Unavailable(self.name, str(error), maybe_applied=maybe_applied,
                                  breaker_open=True) from None
            try:
                response = self.client.request(method, path, json=json, headers=headers,
                                               params=params)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as error:
                self._failed("error")
                raise Unavailable(self.name, f"{type(error).__name__}: {error}",
                                  maybe_applied=maybe_applied) from error
            except httpx.TimeoutException as error:
                maybe_applied = True
                self._failed("timeout")
                raise Unavailable(self.name, f"timed out after {self.timeout:g}s",
                                  maybe_applied=True) from error
            except httpx.HTTPError as error:  # a broken connection or answer
                maybe_applied = True
                self._failed("error")
                raise Unavailable(self.name, f"{type(error).__name__}: {error}",
                                  maybe_applied=True) from error
            except BaseException:  # never leave a half-open breaker waiting for its trial
                self._failed("error")
                raise
            if response.status_code >= 500:
                maybe_applied = True
                self._failed("error")
                raise Unavailable(self.name, f"{method} {path} answered {response.status_code}",
                                  maybe_applied=True)
            self.breaker.success()
            outcome = "ok" if response.status_code < 400 else "client_error"
            metrics.DEPENDENCY_CALLS.labels(self.name, outcome).inc()
            return response

        retrying = Retrying(
            stop=stop_after_attempt(max(1, self.attempts)),
            # full jitter: uniform(0, min(cap, backoff * 2 ** attempt))
            wait=wait_random_exponential(multiplier=self.backoff, max=self.backoff_cap),
            retry=retry_if_exception(
                lambda e: isinstance(e, Unavailable) and not e.breaker_open),
            before_sleep=self._before_retry,
            reraise=True,
        )
        try:
            return retrying(once)
        except Unavailable as error:
            error.maybe_applied = maybe_applied
            raise

    def _failed(self, outcome: str) -> None:
        metrics.DEPENDENCY_CALLS.labels(self.name, outcome).inc()
        self.breaker.failure()

    def _before_retry(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        log.warning("call to %s failed (%s); retry %d in %.3fs", self.name, error,
                    state.attempt_number, wait)
