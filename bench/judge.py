"""Canary judgement: how often the statistical judge fails a canary that is as good as the
stable (A/A), and how often and how soon it fails one that is worse.

No operator runs: what is measured is the judging path the operator's analysis takes,
:func:`pilotboat.adapters.prometheus.measure` (instant and range queries through a real
Prometheus) and the core's verdict on them. Stable and canary are Deployments of the echo
image (images/echo/echo.py) on the real node `pilotboat-real`, rendered by the operator's own
:func:`pilotboat.core.workload.render_deployment` (so they carry its labels and scrape
annotations) and applied by the benchmark. A Prometheus of the benchmark's own finds the pods
by pod discovery (2 s scrape), and customers in this process call a Service over both tracks,
where kube-proxy splits the requests by ready pods: half to each track.

Windows are consecutive and never overlap. They are judged after the traffic has run, each by
``measure(..., now=<the window's end>)``: Prometheus answers a query about a past instant as
it would have at that instant (plus the last scrape, which a live query can miss). Each
window is judged twice, by ``judge.method: mannWhitney`` with the judge's defaults except
``step`` (4 s, two scrapes, so that 3 pods x 4 steps give 12 per-step mean latencies per
track in a 16 s window, above the default ``minSamples`` of 10; errors are judged on the
window's pooled counts, Fisher's exact test; traffic and saturation, which have no
threshold, on each pod's request rate and CPU per request per step) and by the threshold
judge alone, with the same thresholds (the examples': errors ``maxRatio`` 5%, p99 latency
``maxSeconds`` 0.5 s).
Windows are 16 s, except for ``errors_plus_2_points``: at 15 requests a second per track,
2% more errors cannot be told from chance in 16 s with 99% confidence (4.8 errors expected;
the test needs 8 against a stable without errors), so that regression is judged on 48 s
windows, the length the simulation in tests/core/test_judge.py shows is needed for 95%.

- ``judge_aa``: stable and canary run the same image and env (1% errors, 20 ms added latency,
  2 ms of CPU a request), 3 pods each; ``rate`` = Failed
  windows / judged windows is the false-fail rate.
- ``judge_regressions``: four runs, each a stable of 3 pods and a worse canary: errors +2
  points; p99 latency +50% (20 ms vs 30 ms added, across a bucket edge of echo's latency
  histogram); p99 +50% again, 60 ms vs 90 ms, both inside one bucket; CPU per request x 2
  (echo's ``CPU_SECONDS_PER_REQUEST`` 3 ms vs 6 ms); and one bad pod of three
  (a one-replica Deployment of the canary's version failing 20%). Each run injects the
  canary several times (apply, all pods Ready = injection, windows, delete); ``rate`` =
  Failed / judged windows after injection, ``median_seconds_to_fail`` the median over
  injections of the time from injection to the end of the first Failed window (windows start
  at injection, as an analysis would once the canary is up).

Per-window records (verdicts, medians, p-values, sample sizes) go to
``.state/bench/judge-<run>.jsonl``; the JSON lines printed are the summaries.
Sizes: ``PILOTBOAT_BENCH_JUDGE_WINDOWS`` (A/A windows, 100), ``..._INJECTIONS`` (3) and
``..._WINDOWS_PER_INJECTION`` (8); ``..._RATE`` requests per second (30); ``..._ONLY``, a
comma-separated list of the regressions to run (all by default); ``..._WINDOW_SECONDS``
overrides every window's length.
"""

from __future__ import annotations

import json
import os
import secrets
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.fixtures.customers import Customers, wait_routed
from tests.fixtures.prometheus import LocalPrometheus, pod_discovering
from tests.fixtures.real_node import on_the_real_node

from pilotboat.adapters.kube import Kube
from pilotboat.adapters.prometheus import PrometheusProvider, measure, prometheus_provider
from pilotboat.api import MicroserviceSpec
from pilotboat.api.common import parse_duration
from pilotboat.api.rollout import AnalysisTemplate
from pilotboat.core.analysis import Measurement, Verdict
from pilotboat.core.workload import (
    LABEL_NAME,
    LABEL_REVISION,
    LABEL_TRACK,
    Owner,
    Track,
    render_deployment,
    render_service,
)

__all__ = ["BENCHMARKS"]

REPO = Path(__file__).resolve().parents[1]
SERVICE = "cart"
IMAGE = "v1"
"""Both tracks run the same image; only the revision label (set to the version, below) and
echo's env tell them apart."""
PODS = 3
STEP = "4s"
THRESHOLDS = {"errors": {"maxRatio": 0.05}, "latency": {"quantile": 0.99, "maxSeconds": 0.5}}
METHODS = ("mannWhitney", "threshold")


def _size(name: str, default: float) -> float:
    return float(os.environ.get(f"PILOTBOAT_BENCH_JUDGE_{name}", default))


def _window_length(default: int) -> str:
    return f"{int(_size('WINDOW_SECONDS', default))}s"


WINDOW = _window_length(16)


def _template(method: str, window: str) -> AnalysisTemplate:
    # traffic and saturation have no threshold: only the statistical judge reads them (each
    # pod's request rate per step, and its CPU per request)
    signals = {**THRESHOLDS, "traffic": {}, "saturation": {}}
    spec: dict[str, Any] = {"interval": window, "minSampleSize": 20, "signals": signals}
    if method == "mannWhitney":
        spec["judge"] = {"method": "mannWhitney", "step": STEP}
    return AnalysisTemplate.model_validate(spec)


def _settings(window: str) -> dict[str, Any]:
    judge = _template("mannWhitney", window).judge
    assert judge is not None
    return {
        "method": "mannWhitney",
        "confidence": judge.confidence,
        "tolerance": judge.tolerance,
        "min_samples": judge.min_samples,
        "step": judge.step,
        "window": window,
        "signals": "errors on pooled counts (Fisher's exact), mean latency, request rate and"
        " CPU per request per pod and step (Mann-Whitney U), Bonferroni: each at p < 0.0025",
        "thresholds": THRESHOLDS,
        "pods_per_track": PODS,
    }


@contextmanager
def _pod_prometheus(kubeconfig: Path) -> Iterator[LocalPrometheus]:
    """A Prometheus of this run's own, discovering the cluster's pods (as ``pod_prometheus``
    does for a test module)."""
    with tempfile.TemporaryDirectory(prefix="pilotboat-judge-") as state, \
            pod_discovering(Path(state), kubeconfig) as server:
        yield server


@contextmanager
def _steady_customers(url: str, rate: float) -> Iterator[None]:
    """`rate` requests a second for as long as the block runs: :class:`Customers` stops by
    itself after five minutes, so a fresh one takes over every four, before the old stops."""
    stop = threading.Event()

    def relay() -> None:
        current = Customers(url, rate).__enter__()
        while not stop.wait(240):
            successor = Customers(url, rate).__enter__()
            current.__exit__()
            current = successor
        current.__exit__()

    thread = threading.Thread(target=relay, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(60)


@dataclass
class Workload:
    """One Deployment of the service: its track, version label, replicas and echo's env."""

    track: Track
    version: str
    replicas: int
    env: Mapping[str, str] = field(default_factory=dict)
    odd: str | None = None
    """Set for a second Deployment of a track (a single bad pod): its name's suffix, also a
    label of its own so that the two Deployments' selectors do not overlap."""


@dataclass
class Cluster:
    """The service's Deployments in one namespace, measured through one Prometheus."""

    kube: Kube
    prometheus: LocalPrometheus
    provider: PrometheusProvider
    namespace: str
    records: Path

    def _owner(self) -> Owner:
        return Owner(SERVICE, self.namespace, uid="")

    def _spec(self, one: Workload) -> MicroserviceSpec:
        env = {"ERROR_RATIO": "0", "LATENCY_SECONDS": "0", **one.env}
        return MicroserviceSpec.model_validate(
            {
                "version": one.version,
                **on_the_real_node(IMAGE),
                "env": [{"name": k, "value": v} for k, v in env.items()],
            }
        )

    def _deployment(self, one: Workload) -> dict[str, Any]:
        child = render_deployment(
            self._owner(), self._spec(one), track=one.track, replicas=one.replicas
        )
        del child["metadata"]["ownerReferences"]  # no Microservice owns it
        # One revision per track, whatever each Deployment's env: a single bad pod counts
        # with the rest of its track, as the version label grouped them before.
        child["spec"]["template"]["metadata"]["labels"][LABEL_REVISION] = one.version
        if one.odd is not None:
            child["metadata"]["name"] += f"-{one.odd}"
            for labels in (
                child["spec"]["selector"]["matchLabels"],
                child["spec"]["template"]["metadata"]["labels"],
            ):
                labels["bench.pilotboat.dev/odd"] = one.odd
        return child

    def run(self, tracks: Sequence[Workload]) -> float:
        """Apply `tracks`' Deployments; the wall time (epoch seconds) at which all their
        pods are Ready."""
        for one in tracks:
            self.kube.apply(self._deployment(one))
        if self.kube.get("Service", self.namespace, SERVICE) is None:
            service = render_service(self._owner(), self._spec(tracks[0]))
            del service["metadata"]["ownerReferences"]
            self.kube.apply(service)
        by_track: dict[str, int] = {}
        for one in tracks:
            by_track[one.track] = by_track.get(one.track, 0) + one.replicas
        return _wait(
            lambda: all(self._ready(t, n) for t, n in by_track.items()),
            300,
            f"{by_track} pods Ready",
        )

    def remove(self, tracks: Sequence[Workload]) -> None:
        for one in tracks:
            self.kube.delete(
                "Deployment", self.namespace, self._deployment(one)["metadata"]["name"]
            )
        names = {one.track for one in tracks}
        _wait(lambda: not any(self._pods(t) for t in names), 120, f"{names} pods gone")

    def _pods(self, track: str) -> list[dict[str, Any]]:
        return self.kube.list(
            "Pod", self.namespace, labels={LABEL_NAME: SERVICE, LABEL_TRACK: track}
        )

    def _ready(self, track: str, count: int) -> bool:
        pods = [p for p in self._pods(track) if not p["metadata"].get("deletionTimestamp")]
        ready = [
            p
            for p in pods
            if any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in (p.get("status") or {}).get("conditions") or []
            )
        ]
        return len(pods) == len(ready) == count

    def url(self) -> str:
        found = self.kube.get("Service", self.namespace, SERVICE)
        assert found is not None
        url = f"http://{found['spec']['clusterIP']}:8080/"
        wait_routed(url, self.namespace)
        return url

    def judge(self, end: float, label: dict[str, Any], window: str = WINDOW) -> dict[str, Any]:
        """Both judges on the `window` that ends at `end` (epoch seconds); the record is also
        appended to the run's per-window file."""
        now = datetime.fromtimestamp(end, UTC)
        record: dict[str, Any] = {**label, "end": round(end, 3)}
        for method in METHODS:
            template = _template(method, window)
            m = measure(
                self.provider, template, SERVICE, self.namespace, "v2", "v1", window, now,
                canary_revision="v2", stable_revision="v1",
            )  # fmt: skip
            record[method] = _window(m)
        with self.records.open("a") as out:
            out.write(json.dumps(record) + "\n")
        return record


def _window(m: Measurement) -> dict[str, Any]:
    found: dict[str, Any] = {"verdict": m.verdict.value, "requests": m.sample_size}
    if m.judgements:
        found["score"] = m.score
        found["signals"] = {
            j.signal: {
                "verdict": j.verdict.value,
                "n": [j.n_canary, j.n_stable],
                "medians": [j.canary_median, j.stable_median],
                "p": j.p_value,
            }
            for j in m.judgements
        }
    else:
        found["values"] = {s.signal: [s.canary, s.stable] for s in m.samples}
    if m.verdict is not Verdict.SUCCESSFUL:
        found["message"] = m.message
    return found


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not {what} within {timeout:.0f}s")
        time.sleep(0.25)
    return time.time()


@contextmanager
def _cluster(kube: Kube, kubeconfig: Path, run: str) -> Iterator[Cluster]:
    ns = f"bench-{run}-{secrets.token_hex(3)}"
    records = REPO / ".state" / "bench" / f"judge-{run}.jsonl"
    records.parent.mkdir(parents=True, exist_ok=True)
    records.write_text("")
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    try:
        with _pod_prometheus(kubeconfig) as prometheus:
            provider = prometheus_provider(prometheus.url, timeout=10)
            yield Cluster(kube, prometheus, provider, ns, records)
    finally:
        kube.delete("Namespace", None, ns)


def _summary(
    metric: str, records: Sequence[dict[str, Any]], method: str, extra: Mapping[str, Any]
) -> dict[str, Any]:
    verdicts = [r[method]["verdict"] for r in records]
    failed = verdicts.count(Verdict.FAILED.value)
    by_test = {}
    if method == "mannWhitney":  # the test's own fails, apart from the thresholds' hard limits
        tested = [r[method].get("signals") or {} for r in records]
        by_test["failed_by_test"] = sum(
            any(j["verdict"] == "Fail" for j in signals.values()) for signals in tested
        )
    return {
        "metric": metric,
        "judge": method,
        "windows": len(verdicts),
        "failed": failed,
        **by_test,
        "inconclusive": verdicts.count(Verdict.INCONCLUSIVE.value),
        "errors": verdicts.count(Verdict.ERROR.value),
        "rate": round(failed / len(verdicts), 4) if verdicts else None,
        "verdicts": "".join(v[0] for v in verdicts),
        **extra,
    }


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def judge_aa(kube: Kube, kubeconfig: Path) -> Iterator[dict[str, Any]]:
    """False fails: the same image and env on both tracks, judged window after window."""
    windows = int(_size("WINDOWS", 100))
    rate = _size("RATE", 30)
    env = {
        "ERROR_RATIO": os.environ.get("PILOTBOAT_BENCH_JUDGE_AA_ERROR_RATIO", "0.01"),
        "LATENCY_SECONDS": os.environ.get("PILOTBOAT_BENCH_JUDGE_AA_LATENCY", "0.02"),
        "CPU_SECONDS_PER_REQUEST": os.environ.get("PILOTBOAT_BENCH_JUDGE_AA_CPU", "0.002"),
    }
    width = parse_duration(WINDOW)
    with _cluster(kube, kubeconfig, "aa") as cluster:
        cluster.run([Workload("stable", "v1", PODS, env), Workload("canary", "v2", PODS, env)])
        cluster.prometheus.wait_pods_scraped(cluster.namespace, SERVICE, 2 * PODS, timeout=180)
        load = [_load()]
        with _steady_customers(cluster.url(), rate):
            time.sleep(2 * width)  # every rate() in the first window has its scrapes
            start = time.time()
            for k in range(windows):
                time.sleep(max(0.0, start + (k + 1) * width - time.time()))
                if k % 25 == 0:
                    load.append(_load())
            time.sleep(3)  # the last window's final scrape is stored
        records = [cluster.judge(start + (k + 1) * width, {"window": k}) for k in range(windows)]
    extra = {
        "env": env,
        "requests_per_second": rate,
        "settings": _settings(WINDOW),
        "loadavg_1_5_15": load,
        "per_window": str(cluster.records),
    }
    for method in METHODS:
        yield _summary("judge_aa_false_fail_rate", records, method, extra)


@dataclass(frozen=True)
class Regression:
    name: str
    stable: Mapping[str, str]
    canary: tuple[Workload, ...]
    window: str = WINDOW


REGRESSIONS = (
    Regression(
        "errors_plus_2_points",
        {},
        (Workload("canary", "v2", PODS, {"ERROR_RATIO": "0.02"}),),
        _window_length(48),
    ),
    Regression(
        "p99_latency_plus_50_percent",
        {"LATENCY_SECONDS": "0.02"},
        (Workload("canary", "v2", PODS, {"LATENCY_SECONDS": "0.03"}),),
    ),
    Regression(  # both inside the histogram's 0.05..0.1 s bucket
        "p99_latency_plus_50_percent_within_a_bucket",
        {"LATENCY_SECONDS": "0.06"},
        (Workload("canary", "v2", PODS, {"LATENCY_SECONDS": "0.09"}),),
    ),
    Regression(
        "cpu_per_request_times_2",
        {"CPU_SECONDS_PER_REQUEST": "0.003"},
        (Workload("canary", "v2", PODS, {"CPU_SECONDS_PER_REQUEST": "0.006"}),),
    ),
    Regression(
        "one_bad_pod_of_three",
        {},
        (
            Workload("canary", "v2", PODS - 1),
            Workload("canary", "v2", 1, {"ERROR_RATIO": "0.2"}, odd="bad"),
        ),
    ),
)


def _first_fail(records: Sequence[dict[str, Any]], method: str, ready: float) -> float | None:
    for r in records:
        if r[method]["verdict"] == Verdict.FAILED.value:
            return round(float(r["end"]) - ready, 2)
    return None


def judge_regressions(kube: Kube, kubeconfig: Path) -> Iterator[dict[str, Any]]:
    """Misses and time to fail: a worse canary injected again and again, per regression."""
    injections = int(_size("INJECTIONS", 3))
    per_injection = int(_size("WINDOWS_PER_INJECTION", 8))
    rate = _size("RATE", 30)
    only = os.environ.get("PILOTBOAT_BENCH_JUDGE_ONLY")
    for regression in REGRESSIONS:
        if only and regression.name not in only.split(","):
            continue
        width = parse_duration(regression.window)
        records: list[dict[str, Any]] = []
        readies: list[float] = []
        load = [_load()]
        with _cluster(kube, kubeconfig, regression.name.replace("_", "-")) as cluster:
            cluster.run([Workload("stable", "v1", PODS, regression.stable)])
            cluster.prometheus.wait_pods_scraped(cluster.namespace, SERVICE, PODS, timeout=180)
            with _steady_customers(cluster.url(), rate):
                for _ in range(injections):
                    ready = cluster.run(regression.canary)
                    readies.append(ready)
                    time.sleep(max(0.0, ready + per_injection * width + 3 - time.time()))
                    load.append(_load())
                    cluster.remove(regression.canary)
                    time.sleep(width)  # no window of the next injection holds this one
            for i, ready in enumerate(readies):
                records += [
                    cluster.judge(
                        ready + (k + 1) * width, {"injection": i, "window": k}, regression.window
                    )
                    for k in range(per_injection)
                ]
        for method in METHODS:
            seconds = [
                _first_fail([r for r in records if r["injection"] == i], method, ready)
                for i, ready in enumerate(readies)
            ]
            found = [s for s in seconds if s is not None]
            extra = {
                "regression": regression.name,
                "stable_env": dict(regression.stable),
                "canary": [{"replicas": t.replicas, "env": dict(t.env)} for t in regression.canary],
                "injections": len(readies),
                "seconds_to_first_fail": seconds,
                "median_seconds_to_fail": statistics.median(found) if found else None,
                "requests_per_second": rate,
                "settings": _settings(regression.window),
                "loadavg_1_5_15": load,
                "per_window": str(cluster.records),
            }
            yield _summary("judge_detection_rate", records, method, extra)


BENCHMARKS: dict[str, Callable[[Kube, Path], Iterator[dict[str, Any]]]] = {
    "judge_aa": judge_aa,
    "judge_regressions": judge_regressions,
}
