"""Golden-signal analysis against a real Prometheus scraping real pods.

Stable and canary are Deployments of the echo image (images/echo/echo.py) on the real node
`pilotboat-real`, rendered as the operator renders a Microservice's tracks
(:func:`pilotboat.core.workload.render_deployment`, so the pods carry the operator's labels
and scrape annotations) but applied by the test, with no Microservice and no operator: what
is under test is :func:`pilotboat.adapters.prometheus.measure` and the verdicts of the core.
A canary that fails or is slow says so in its env (``ERROR_RATIO``, ``LATENCY_SECONDS``). A
Prometheus of this module's own finds the pods by pod discovery (tests/fixtures/prometheus.py,
``pod_prometheus``), and customers in this process call a Service's ClusterIP, where
kube-proxy picks a pod per connection: the Service over both tracks splits the requests
half and half (one ready replica each), the one over the stable track sends none to the
canary.

Windows are 10s with a 2s scrape; measurements of one run are taken one scrape apart, so
their windows overlap (a handler would take one per interval; the verdicts are the same).
Without the real node these tests skip, saying why; a strict run (``make test``, CI) fails
instead (tests/fixtures/strict.py).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from kubernetes.client import ApiClient

from pilotboat.adapters.kube import Kube
from pilotboat.adapters.prometheus import PrometheusProvider, measure, prometheus_provider
from pilotboat.api import MicroserviceSpec
from pilotboat.api.common import parse_duration
from pilotboat.api.microservice import AnalysisStatus
from pilotboat.api.rollout import AnalysisStep, AnalysisTemplate
from pilotboat.core.analysis import (
    AnalysisRunVerdict,
    Measurement,
    RunPhase,
    Verdict,
    assess_run,
    queries_per_interval,
)
from pilotboat.core.workload import Owner, Track, pod_revision, render_deployment, render_service
from pilotboat.handlers.analysis import judgement_record
from tests.fixtures.customers import Customers, wait_routed
from tests.fixtures.prometheus import SCRAPE_INTERVAL, LocalPrometheus
from tests.fixtures.real_node import on_the_real_node, require_real_node

SERVICE = "cart"
INTERVAL = "10s"

pytestmark = pytest.mark.usefixtures("real_node")


@pytest.fixture(scope="module")
def real_node(kube_api: ApiClient) -> Any:
    return require_real_node(kube_api)


def golden(**fields: Any) -> AnalysisTemplate:
    """Errors at most 5% and 5 points over stable, p99 at most 0.25s and twice stable's."""
    signals = {
        "errors": {"maxRatio": 0.05, "maxIncreaseOverStable": 0.05},
        "latency": {"quantile": 0.99, "maxSeconds": 0.25},
    }
    return AnalysisTemplate.model_validate(
        {"interval": INTERVAL, "minSampleSize": 20, "signals": signals, **fields}
    )


def _orphan(child: dict[str, Any]) -> dict[str, Any]:
    """A rendered child without its owner reference: there is no Microservice to own it."""
    del child["metadata"]["ownerReferences"]
    return child


@dataclass
class Release:
    """A canary release of one service in the test's namespace, judged from Prometheus."""

    prometheus: LocalPrometheus
    provider: PrometheusProvider
    kube: Kube
    namespace: str
    running: int = 0
    revisions: dict[str, str] = field(default_factory=dict)
    """Each track's pod revision (``pilotboat.dev/revision``), which the queries select on."""

    @property
    def _owner(self) -> Owner:
        return Owner(SERVICE, self.namespace, uid="")

    def _run(
        self, track: Track, version: str, error_ratio: float, latency: float, cpu: float = 0.0
    ) -> None:
        env = {"ERROR_RATIO": str(error_ratio), "LATENCY_SECONDS": str(latency)}
        if cpu:
            env["CPU_SECONDS_PER_REQUEST"] = str(cpu)
        spec = MicroserviceSpec.model_validate(
            {
                "version": version,
                **on_the_real_node(version),
                "env": [{"name": k, "value": v} for k, v in env.items()],
            }
        )
        deployment = _orphan(render_deployment(self._owner, spec, track=track, replicas=1))
        self.revisions[track] = pod_revision(deployment)
        self.kube.apply(deployment)
        if self.running == 0:  # one over both tracks, one over the stable track only
            self.kube.apply(_orphan(render_service(self._owner, spec)))
            self.kube.apply(
                _orphan(render_service(self._owner, spec, name=f"{SERVICE}-stable", track="stable"))
            )
        self.running += 1
        self.prometheus.wait_pods_scraped(self.namespace, SERVICE, self.running, timeout=120)

    def stable(self, version: str, cpu: float = 0.0) -> None:
        """Run `version` as the stable track (one pod) spending `cpu` CPU seconds on each
        request; return once Prometheus scrapes it."""
        self._run("stable", version, 0.0, 0.0, cpu)

    def canary(
        self, version: str, error_ratio: float = 0.0, latency: float = 0.0, cpu: float = 0.0
    ) -> None:
        """Run `version` as the canary (one pod) answering `error_ratio` of its requests with
        500 after `latency` seconds and `cpu` CPU seconds; return once Prometheus scrapes it."""
        self._run("canary", version, error_ratio, latency, cpu)

    def customers(self, service: str = SERVICE, rate: float = 20) -> Customers:
        """Customers of `service` (over both tracks unless told), once kube-proxy routes it."""
        found = self.kube.get("Service", self.namespace, service)
        assert found is not None, service
        url = f"http://{found['spec']['clusterIP']}:8080/"
        wait_routed(url, self.namespace)
        return Customers(url, rate)

    def measure(self, template: AnalysisTemplate) -> Measurement:
        now = datetime.now(UTC)
        return measure(
            self.provider, template, SERVICE, self.namespace, "v2", "v1", INTERVAL, now,
            canary_revision=self.revisions["canary"], stable_revision=self.revisions["stable"],
        )  # fmt: skip

    def warm_up(self, template: AnalysisTemplate, timeout: float = 45, *,
                erring: bool = False) -> None:
        """Wait until a window holds enough requests and every signal has a value on both
        tracks; the verdict is not looked at. With `erring`, also until the canary's errors
        show, and then one window more: a pod's first 5xx series is born inside a window,
        which counts only part of it, so the windows measured next all hold it whole."""
        deadline = time.monotonic() + timeout
        while True:
            m = self.measure(template)
            if erring and not any(s.signal == "errors" and (s.canary or 0) > 0
                                  for s in m.samples):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no canary errors after {timeout}s: {m.message}")
                time.sleep(0.5)
                continue
            sized = (m.sample_size or 0) >= template.min_sample_size
            valued = all(
                s.canary is not None
                and math.isfinite(s.canary)
                and s.stable is not None
                and math.isfinite(s.stable)
                for s in m.samples
            )
            if sized and valued and m.samples:
                if erring:
                    time.sleep(parse_duration(INTERVAL))
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
def release(pod_prometheus: LocalPrometheus, kube: Kube, namespace: str) -> Release:
    return Release(
        pod_prometheus, prometheus_provider(pod_prometheus.url, timeout=5), kube, namespace
    )


def test_a_healthy_canary_passes_after_the_required_intervals(release: Release) -> None:
    template, step = golden(), AnalysisStep(intervals=3)
    release.stable("v1")
    release.canary("v2")
    with release.customers():
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
    release.stable("v1")
    release.canary("v2", error_ratio=0.2)
    with release.customers():
        release.warm_up(template, erring=True)
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
    release.stable("v1")
    release.canary("v2", latency=0.4)
    with release.customers():
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
    release.stable("v1")
    release.canary("v2")
    with release.customers(f"{SERVICE}-stable"):
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
    release.stable("v1")
    release.canary("v2")
    with release.customers():
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
    release: Release, pod_prometheus: LocalPrometheus
) -> None:
    # Right after an outage the scraper's windows hold little data, so a few measurements
    # are inconclusive (never a pass); the limit leaves room for them.
    template = golden(consecutiveErrorLimit=2, inconclusiveLimit=8)
    step = AnalysisStep(intervals=3)
    release.stable("v1")
    release.canary("v2")
    with release.customers():
        release.warm_up(template)
        pod_prometheus.stop()
        try:
            down, errors = release.analyse(template, step)
            assert down.phase is RunPhase.ERROR_PAUSED, down.summary
            assert [m.verdict for m in errors] == [Verdict.ERROR] * 3
            assert all(m.queries == 1 for m in errors)  # unreachable: the rest are not sent
            assert down.summary == (
                f"Prometheus unreachable: connection refused ({pod_prometheus.url}),"
                " 3 checks in a row could not be taken (limit 2)"
            )
            # a run that saw two errors in a row, within the limit, goes on once it is back
            errors_within_limit = errors[:2]
        finally:
            pod_prometheus.start()
        # Prometheus scraped nothing while it was down: until a window holds data again the
        # canary would look idle (inconclusive), as after any outage of the scraper
        release.warm_up(template)
        verdict, measurements = release.analyse(template, step, taken=errors_within_limit)
    assert verdict.phase is RunPhase.SUCCESSFUL, verdict.summary
    assert [m.verdict for m in measurements[:2]] == [Verdict.ERROR] * 2
    assert verdict.passed == 3 and verdict.errors == 2


def judged(**judge: Any) -> AnalysisTemplate:
    """The statistical judge on errors and median latency, without thresholds: five samples
    of 4s (two scrapes each) per pod in a 20s window; each track is one pod."""
    return AnalysisTemplate.model_validate(
        {
            "interval": INTERVAL,
            "minSampleSize": 20,
            "signals": {"errors": {}, "latency": {"quantile": 0.5}},
            "judge": {
                "method": "mannWhitney",
                "step": "4s",
                "window": "20s",
                "minSamples": 5,
                **judge,
            },
        }
    )


def warm_up_samples(release: Release, template: AnalysisTemplate, timeout: float = 60) -> None:
    """Wait until the judge's window holds enough samples of every signal on both tracks
    (the targets are younger than the window at first); the verdict is not looked at."""
    release.warm_up(template)
    assert template.judge is not None
    enough = template.judge.min_samples
    deadline = time.monotonic() + timeout
    while True:
        m = release.measure(template)
        if m.judgements and all(min(j.n_canary, j.n_stable) >= enough for j in m.judgements):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"too few samples after {timeout}s: {m.message}")
        time.sleep(SCRAPE_INTERVAL)


def test_the_statistical_judge_reads_per_step_samples_and_passes_a_healthy_canary(
    release: Release,
) -> None:
    template, step = judged(), AnalysisStep(intervals=2)
    release.stable("v1")
    release.canary("v2")
    with release.customers():
        warm_up_samples(release, template)
        verdict, measurements = release.analyse(template, step)
    assert verdict.phase is RunPhase.SUCCESSFUL, verdict.summary
    m = measurements[-1]
    # requests, then 2 signals x 2 tracks x (counter, total): errors and requests, the
    # latency histogram's _sum and _count
    assert m.queries == queries_per_interval(template) == 9
    sizes = {j.signal: (j.n_canary, j.n_stable) for j in m.judgements}
    assert sizes["latency"] == (5, 5)  # per-step means: 20s / 4s
    assert min(sizes["errors"]) >= 5  # the window's requests, pooled
    errors = next(j for j in m.judgements if j.signal == "errors")
    assert errors.test == "Fisher's exact one-sided (higher is worse)"
    assert m.score == 100
    assert "score 100 >= 95: pass" in verdict.summary
    assert "Mann-Whitney U one-sided (higher is worse), p=" in verdict.summary


def test_the_statistical_judge_fails_a_slower_canary_with_its_test_in_the_message(
    release: Release,
) -> None:
    template = judged()
    release.stable("v1")
    release.canary("v2", latency=0.4)
    with release.customers():
        warm_up_samples(release, template)
        verdict, measurements = release.analyse(template, AnalysisStep(intervals=3))
    assert verdict.phase is RunPhase.FAILED, verdict.summary
    latency = next(j for j in measurements[-1].judgements if j.signal == "latency")
    assert latency.canary_median is not None and latency.stable_median is not None
    assert latency.canary_median > 0.25 > 0.05 > latency.stable_median
    assert latency.p_value is not None and latency.p_value < 0.05
    assert verdict.summary.startswith("score 50 < 75: fail (latency failed); mean latency worse: ")
    assert "n=5/5" in verdict.summary
    # what the operator writes to status.analysis.judgement
    record = judgement_record(template, measurements[-1], 0)
    assert record is not None
    judgement = AnalysisStatus.model_validate({"judgement": record}).judgement
    assert judgement is not None
    assert (judgement.verdict, judgement.score) == ("Fail", 50)
    by_signal = {s.signal: s for s in judgement.signals}
    assert by_signal["latency"].verdict == "Fail" and by_signal["errors"].verdict == "Pass"
    assert (by_signal["latency"].canary_samples, by_signal["latency"].stable_samples) == (5, 5)
    assert by_signal["latency"].p_value == latency.p_value


def test_the_statistical_judge_fails_a_canary_spending_twice_the_cpu_per_request(
    release: Release,
) -> None:
    """Saturation by default is CPU per request: each pod's own process_cpu_seconds_total
    over its requests, step by step. The echo burns CPU_SECONDS_PER_REQUEST on its own
    thread's CPU clock, so a busy machine slows it but does not change what it spends."""
    template = AnalysisTemplate.model_validate(
        {
            "interval": INTERVAL,
            "minSampleSize": 20,
            "signals": {"saturation": {}},
            "judge": {"method": "mannWhitney", "step": "4s", "window": "20s", "minSamples": 5},
        }
    )
    release.stable("v1", cpu=0.003)
    release.canary("v2", cpu=0.006)
    with release.customers():
        warm_up_samples(release, template)
        verdict, measurements = release.analyse(template, AnalysisStep(intervals=3))
    assert verdict.phase is RunPhase.FAILED, verdict.summary
    (saturation,) = measurements[-1].judgements
    assert saturation.verdict.value == "Fail" and saturation.n_canary == saturation.n_stable == 5
    assert saturation.canary_median is not None and saturation.stable_median is not None
    # 3 ms of each request against 6 ms, plus what scrapes and probes cost either pod
    assert saturation.stable_median >= 0.003
    assert 1.4 < saturation.canary_median / saturation.stable_median < 2.5
    assert verdict.summary.startswith("score 0 < 75: fail (saturation failed); CPU per request")
