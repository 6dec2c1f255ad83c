"""Prometheus as a :class:`~pilotboat.adapters.metric_provider.MetricProvider`.

The HTTP client, a ``prometheus_api_client.PrometheusConnect``, is injected; use
:func:`prometheus_provider` for one with timeouts and no retries (the analysis loop is the
retry: a failed query is an error measurement, and ``consecutiveErrorLimit`` bounds them).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.util.retry import Retry

from pilotboat.adapters.metric_provider import MetricProvider, MetricQueryError, measure
from pilotboat.core.analysis import SampleSeries

__all__ = [
    "DEFAULT_TIMEOUT",
    "PrometheusProvider",
    "prometheus_provider",
    "measure",
    "MetricProvider",
    "MetricQueryError",
]

DEFAULT_TIMEOUT = 5.0
"""Seconds one query may take, connecting included."""

_ERRNO = re.compile(r"\[Errno -?\d+\] ([^'\")]+)")
_STATUS = re.compile(r"HTTP Status Code (\d+) \((b?)(['\"])(.*)\3\)$", re.S)


_T = TypeVar("_T")


class PrometheusProvider:
    """Instant and range queries against one Prometheus server's HTTP API."""

    def __init__(self, client: PrometheusConnect, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._client = client
        self._timeout = timeout
        self.queries_sent = 0
        """Queries sent since construction, answered or not."""

    @property
    def url(self) -> str:
        return str(self._client.url)

    def query(self, expression: str, at: datetime) -> float | None:
        """The single value of `expression` evaluated at `at`; see ``MetricProvider``."""
        return _single_value(
            self._send(
                lambda: self._client.custom_query(
                    expression, params={"time": f"{at.timestamp():.3f}"}, timeout=self._timeout
                )
            )
        )

    def query_range(
        self, expression: str, start: datetime, end: datetime, step: float
    ) -> list[SampleSeries]:
        """`expression` every `step` seconds from `start` to `end` (``/api/v1/query_range``),
        one series per source; see ``MetricProvider``."""
        # start and end go as params, to the millisecond: the client rounds its own to seconds
        params = {"start": f"{start.timestamp():.3f}", "end": f"{end.timestamp():.3f}"}
        result = self._send(
            lambda: self._client.custom_query_range(
                expression, start, end, f"{step:g}", params=params, timeout=self._timeout
            )
        )
        return _series(result, start.timestamp(), step)

    def _send(self, ask: Callable[[], _T]) -> _T:
        """`ask`'s answer; any failure as a :class:`MetricQueryError` saying why."""
        self.queries_sent += 1
        try:
            return ask()
        except PrometheusApiClientException as exc:
            raise MetricQueryError(_rejection(str(exc))) from exc
        except requests.Timeout as exc:
            raise MetricQueryError(
                f"Prometheus unreachable: no answer within {self._timeout:g}s ({self.url})",
                unreachable=True,
            ) from exc
        except requests.ConnectionError as exc:
            raise MetricQueryError(
                f"Prometheus unreachable: {_cause(exc)} ({self.url})", unreachable=True
            ) from exc
        except (requests.RequestException, ValueError, KeyError) as exc:
            raise MetricQueryError(f"Prometheus query failed: {_cause(exc)}") from exc


def prometheus_provider(url: str, timeout: float = DEFAULT_TIMEOUT) -> PrometheusProvider:
    """A provider for the Prometheus at `url` (``http://host:9090``), without retries."""
    client = PrometheusConnect(
        url=url.rstrip("/"),
        disable_ssl=not url.startswith("https://"),
        retry=Retry(total=0, raise_on_status=False),
        timeout=timeout,
    )
    return PrometheusProvider(client, timeout)


def _cause(exc: BaseException) -> str:
    match = _ERRNO.search(str(exc))
    if match:
        return match.group(1).strip().lower()
    return str(exc) or type(exc).__name__


def _rejection(text: str) -> str:
    """``Prometheus answered HTTP 400: parse error: ...`` from the client's exception text,
    which holds the status code and the body's repr."""
    match = _STATUS.search(text)
    if not match:
        return f"Prometheus query failed: {text}"
    status, body = match.group(1), match.group(4)
    try:
        detail = json.loads(body.encode().decode("unicode_escape"))
        reason = f"{detail.get('errorType', 'error')}: {detail['error']}"
    except (ValueError, KeyError, AttributeError, UnicodeError):
        reason = body.strip()[:300] or "no details"
    return f"Prometheus answered HTTP {status}: {reason}"


def _single_value(result: Any) -> float | None:
    """The one number in an instant query's ``data.result``: a scalar ``[t, "v"]``, or a
    vector of at most one sample (an empty vector is ``None``)."""
    if isinstance(result, list) and len(result) == 2 and not isinstance(result[0], dict):
        return _number(result[1])
    if not isinstance(result, list):
        raise MetricQueryError(f"Prometheus returned an unexpected result: {result!r:.200}")
    if not result:
        return None
    if len(result) > 1:
        raise MetricQueryError(
            f"query returned {len(result)} series, expected one: aggregate them,"
            " e.g. with sum() or max()"
        )
    sample = result[0]
    if "value" not in sample:
        raise MetricQueryError("query returned a range vector, expected an instant value")
    return _number(sample["value"][1])


def _source(labels: Any, index: int) -> str:
    """What a series is named by: its pod, else its target, else its labels."""
    if not isinstance(labels, dict):
        return f"series {index + 1}"
    for key in ("pod", "instance"):
        if labels.get(key):
            return str(labels[key])
    shown = ",".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "__name__")
    return shown or f"series {index + 1}"


def _series(result: Any, start: float | None = None, step: float = 0.0) -> list[SampleSeries]:
    """The series of a range query's ``data.result`` (a matrix), values oldest first.

    Prometheus leaves out the steps where a series had no value yet; a series whose first
    value comes after the query's `start` (a pod born in the window, a labelled counter's
    first event) gets a NaN in front, so that the judge can tell it began in the window
    (:func:`pilotboat.core.judge.counter_increases`).

    >>> [s.values for s in _series([{"metric": {"pod": "a"}, "values": [[100, "1"], [110, "3"]]},
    ...                             {"metric": {"pod": "b"}, "values": [[110, "2"]]}], 100, 10)]
    [(1.0, 3.0), (nan, 2.0)]
    """
    if not isinstance(result, list):
        raise MetricQueryError(f"Prometheus returned an unexpected result: {result!r:.200}")
    found = []
    for index, one in enumerate(result):
        if not isinstance(one, dict) or "values" not in one:
            raise MetricQueryError("range query returned no matrix: expected series of values")
        points = sorted(one["values"], key=lambda p: float(p[0]))
        values = tuple(_number(v) for _, v in points)
        if start is not None and points and float(points[0][0]) > start + step / 2:
            values = (math.nan, *values)
        found.append(SampleSeries(_source(one.get("metric"), index), values))
    return found


def _number(text: Any) -> float:
    try:
        return float(text)
    except (TypeError, ValueError) as exc:
        raise MetricQueryError(f"Prometheus returned a non-number: {text!r:.100}") from exc
