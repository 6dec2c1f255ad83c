"""Golden-signal analysis against a real Prometheus scraping real processes.

Stable and canary are the echo service (images/echo/echo.py) run as plain processes on
loopback ports, registered with Prometheus as file_sd targets carrying the labels relabelling
gives real pods (namespace, service, version). The test sends them real HTTP requests, and
:func:`pilotboat.adapters.prometheus.measure` judges what Prometheus scraped.

Windows are 10s with a 2s scrape; measurements of one run are taken one scrape apart, so
their windows overlap (a handler would take one per interval; the verdicts are the same).
Needs the `prometheus` fixture: pytest_plugins "tests.fixtures.prometheus".
"""

from __future__ import annotations

import math
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from pilotboat.adapters.prometheus import PrometheusProvider, measure, prometheus_provider
from pilotboat.api.rollout import AnalysisStep, AnalysisTemplate
from pilotboat.core.analysis import (
    AnalysisRunVerdict,
    Measurement,
    RunPhase,
    Verdict,
    assess_run,
    queries_per_interval,
)
from tests.fixtures.prometheus import SCRAPE_INTERVAL, LocalPrometheus

REPO = Path(__file__).resolve().parents[2]
ECHO = REPO / "images" / "echo" / "echo.py"
SERVICE = "cart"
INTERVAL = "10s"


def golden(**fields: Any) -> AnalysisTemplate:
    """Errors at most 5% and 5 points over stable, p99 at most 0.25s and twice stable's."""
    signals = {
        "errors": {"maxRatio": 0.05, "maxIncreaseOverStable": 0.05},
        "latency": {"quantile": 0.99, "maxSeconds": 0.25},
    }
    return AnalysisTemplate.model_validate(
        {"interval": INTERVAL, "minSampleSize": 20, "signals": signals, **fields}
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Echo:
    version: str
    port: int
    process: subprocess.Popen[bytes]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}/"


@contextmanager
def echo(version: str, error_ratio: float = 0.0, latency: float = 0.0) -> Iterator[Echo]:
    """The echo service as a local process, until the block ends."""
    port = _free_port()
    env = {
        **os.environ,
        "VERSION": version,
        "PORT": str(port),
        "ERROR_RATIO": str(error_ratio),
        "LATENCY_SECONDS": str(latency),
    }
    proc = subprocess.Popen(
        [sys.executable, str(ECHO)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read().decode() if proc.stderr and proc.poll() is not None else ""
                raise RuntimeError(f"echo {version} did not start on port {port}: {err}")
            time.sleep(0.05)
        yield Echo(version, port, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@dataclass
class Traffic:
    """Workers sending GET / to some services until stopped (or 180s, whichever is first)."""

    urls: list[str]
    workers: int = 3
    pause: float = 0.05
    answers: dict[int, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _work(self, url: str) -> None:
        deadline = time.monotonic() + 180
        with httpx.Client(timeout=5) as client:
            while not self._stop.is_set() and time.monotonic() < deadline:
                try:
                    code = client.get(url).status_code
                except httpx.TransportError:
                    code = 0
                with self._lock:
                    self.answers[code] = self.answers.get(code, 0) + 1
                self._stop.wait(self.pause)

    def __enter__(self) -> Traffic:
        for url in self.urls:
            for _ in range(self.workers):
                t = threading.Thread(target=self._work, args=(url,), daemon=True)
                t.start()
                self._threads.append(t)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)


@dataclass
class Release:
    """A canary release of one service in its own namespace label, judged from Prometheus."""

    prometheus: LocalPrometheus
    provider: PrometheusProvider
    namespace: str
    stack: ExitStack

    def run(self, version: str, **behaviour: float) -> Echo:
        """Start `version` and have Prometheus scrape it."""
        proc = self.stack.enter_context(echo(version, **behaviour))
        labels = {"namespace": self.namespace, "service": SERVICE, "version": version}
        name = f"{self.namespace}-{version}"
        self.stack.enter_context(self.prometheus.scraped(name, proc.address, labels))
        return proc

    def measure(self, template: AnalysisTemplate) -> Measurement:
        now = datetime.now(UTC)
        return measure(self.provider, template, SERVICE, self.namespace, "v2", "v1", INTERVAL, now)

    def warm_up(self, template: AnalysisTemplate, timeout: float = 45) -> None:
        """Wait until a window holds enough requests and every signal has a value on both
        tracks; the verdict is not looked at."""
        deadline = time.monotonic() + timeout
        while True:
            m = self.measure(template)
            sized = (m.sample_size or 0) >= template.min_sample_size
            valued = all(
                s.canary is not None
                and math.isfinite(s.canary)
                and s.stable is not None
                and math.isfinite(s.stable)
                for s in m.samples
            )
            if sized and valued and m.samples:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"no full window of data after {timeout}s: {m.message}")
            time.sleep(0.5)

    def analyse(
        self,
        template: AnalysisTemplate,
        step: AnalysisStep,
        taken: list[Measurement] | None = None,
        most: int = 12,
    ) -> tuple[AnalysisRunVerdict, list[Measurement]]:
        """Measure one scrape apart until the run reaches a final phase (at most `most`)."""
        measurements = list(taken or [])
        verdict = assess_run(template, measurements, step)
        for _ in range(most):
            measurements.append(self.measure(template))
            verdict = assess_run(template, measurements, step)
            if verdict.phase is not RunPhase.RUNNING:
                break
            time.sleep(SCRAPE_INTERVAL)
        return verdict, measurements


@pytest.fixture
def release(prometheus: LocalPrometheus, request: pytest.FixtureRequest) -> Iterator[Release]:
    slug = request.node.name.removeprefix("test_")[:30].replace("_", "-").strip("-")
    with ExitStack() as stack:
        yield Release(
            prometheus,
            prometheus_provider(prometheus.url, timeout=5),
            f"t-{slug}-{secrets.token_hex(2)}",
            stack,
        )


def test_a_healthy_canary_passes_after_the_required_intervals(release: Release) -> None:
    template, step = golden(), AnalysisStep(intervals=3)
    stable, canary = release.run("v1"), release.run("v2")
    with Traffic([stable.url, canary.url]):
        release.warm_up(template)
        verdict, measurements = release.analyse(template, step)
    assert verdict.phase is RunPhase.SUCCESSFUL, verdict.summary
    assert [m.verdict for m in measurements] == [Verdict.SUCCESSFUL] * 3
    assert verdict.summary.endswith("3 of 3 checks passed")
    assert "error ratio 0.0% <= 5.0% (stable 0.0%)" in verdict.summary
    assert all(m.queries == queries_per_interval(template) == 5 for m in measurements)


def test_a_canary_failing_a_fifth_of_its_requests_is_failed_with_the_numbers(
    release: Release,
) -> None:
    template, step = golden(failureLimit=1), AnalysisStep(intervals=3)
    stable, canary = release.run("v1"), release.run("v2", error_ratio=0.2)
    with Traffic([stable.url, canary.url]):
        release.warm_up(template)
        verdict, measurements = release.analyse(template, step)
    assert verdict.phase is RunPhase.FAILED, verdict.summary
    assert verdict.summary.endswith(", 2 of 2 checks failed")
    m = measurements[-1]
    errors = next(s for s in m.samples if s.signal == "errors")
    assert errors.verdict is Verdict.FAILED and errors.canary is not None
    assert 0.05 < errors.canary < 0.5 and errors.stable == 0.0
    assert f"error ratio {errors.canary * 100:.1f}% > 5.0% (stable 0.0%)" in m.message
    assert f"error ratio {errors.canary * 100:.1f}% > 5.0% (stable 0.0% + 5.0%)" in m.message


def test_a_slower_canary_is_failed_on_latency(release: Release) -> None:
    template = golden(
        signals={"latency": {"quantile": 0.99, "maxSeconds": 0.25, "maxRatioToStable": 2}}
    )
    stable, canary = release.run("v1"), release.run("v2", latency=0.4)
    with Traffic([stable.url, canary.url], workers=6):
        release.warm_up(template)
        verdict, measurements = release.analyse(template, AnalysisStep(intervals=3))
    assert verdict.phase is RunPhase.FAILED, verdict.summary
    latency = measurements[-1].samples[0]
    assert latency.canary is not None and latency.stable is not None
    assert 0.25 < latency.canary <= 0.5 and latency.stable < 0.05  # the 0.25..0.5 bucket
    assert verdict.summary.startswith(f"p99 latency {latency.canary:.2f}s > 0.25s (stable ")
    assert "x 2)" in verdict.summary and verdict.summary.endswith("1 of 1 checks failed")


def test_a_canary_without_traffic_is_inconclusive_never_successful(release: Release) -> None:
    template, step = golden(inconclusiveLimit=1), AnalysisStep(intervals=1)
    stable, _ = release.run("v1"), release.run("v2")
    with Traffic([stable.url]):
        verdict, measurements = release.analyse(template, step)
    assert verdict.phase is RunPhase.INCONCLUSIVE, verdict.summary
    assert [m.verdict for m in measurements] == [Verdict.INCONCLUSIVE] * 2
    assert verdict.summary == (
        "only 0 canary requests in 10s < minimum 20: inconclusive,"
        " 2 of 2 checks inconclusive (limit 1)"
    )


def test_a_broken_query_override_is_an_error_naming_the_problem(release: Release) -> None:
    typo = 'sum(rate(http_requests_total{service="{{ servce }}"}[{{ interval }}]))'
    template = golden(
        consecutiveErrorLimit=0,
        signals={
            "errors": {"maxRatio": 0.05, "query": typo},
            "latency": {"maxSeconds": 0.25, "query": "histogram_quantile(0.99, "},
            "traffic": {"minRate": 1, "query": 'rate(http_requests_total{service="cart"}[10s])'},
        },
    )
    stable, canary = release.run("v1"), release.run("v2")
    with Traffic([stable.url, canary.url]):
        release.warm_up(golden())
        verdict, (m,) = release.analyse(template, AnalysisStep(intervals=1))
    assert verdict.phase is RunPhase.ERROR_PAUSED
    by_signal = {s.signal: s for s in m.samples}
    assert by_signal["errors"].message == "error ratio: query template: 'servce' is undefined"
    assert by_signal["latency"].message.startswith(
        "p99 latency: Prometheus answered HTTP 400: bad_data: "
    )
    assert "parse error" in by_signal["latency"].message
    assert by_signal["traffic"].message.startswith("request rate: query returned ")
    assert "series, expected one" in by_signal["traffic"].message
    assert {s.verdict for s in m.samples} == {Verdict.ERROR}
    assert m.queries == 5  # the sample size and four rendered queries; the typo is never sent


def test_prometheus_stopped_gives_errors_then_pauses_and_recovers(
    release: Release, prometheus: LocalPrometheus
) -> None:
    # Right after an outage the scraper's windows hold little data, so a few measurements
    # are inconclusive (never a pass); the limit leaves room for them.
    template = golden(consecutiveErrorLimit=2, inconclusiveLimit=8)
    step = AnalysisStep(intervals=3)
    stable, canary = release.run("v1"), release.run("v2")
    with Traffic([stable.url, canary.url]):
        release.warm_up(template)
        prometheus.stop()
        try:
            down, errors = release.analyse(template, step)
            assert down.phase is RunPhase.ERROR_PAUSED, down.summary
            assert [m.verdict for m in errors] == [Verdict.ERROR] * 3
            assert all(m.queries == 1 for m in errors)  # unreachable: the rest are not sent
            assert down.summary == (
                f"Prometheus unreachable: connection refused ({prometheus.url}),"
                " 3 checks in a row could not be taken (limit 2)"
            )
            # a run that saw two errors in a row, within the limit, goes on once it is back
            errors_within_limit = errors[:2]
        finally:
            prometheus.start()
        # Prometheus scraped nothing while it was down: until a window holds data again the
        # canary would look idle (inconclusive), as after any outage of the scraper
        release.warm_up(template)
        verdict, measurements = release.analyse(template, step, taken=errors_within_limit)
    assert verdict.phase is RunPhase.SUCCESSFUL, verdict.summary
    assert [m.verdict for m in measurements[:2]] == [Verdict.ERROR] * 2
    assert verdict.passed == 3 and verdict.errors == 2
