"""Argo Rollouts beside Pilotboat: the same canary work, each controller alone on the cluster.

For each N (``PILOTBOAT_BENCH_ARGO_COUNTS``, default ``100,1000``) and each tool, in a
namespace of its own: start the controller as a process of this machine on the local control
plane (Argo Rollouts' ``rollouts-controller`` built by ``hack/argo-rollouts/build.sh``, or
``pilotboat run``), create N equivalent apps at once (Microservices, or Rollouts each with
the Service a Microservice renders for itself, created first as Helm orders them: one
replica, steps setWeight 20, pause until promoted, setWeight 50; replica-ratio canary, no
traffic router), wait until all are Healthy, change every image, wait until all are paused
at the pause step, delete the namespace and stop the controller. The other tool is not
running meanwhile. Pods land on fake nodes of the bench's own (KWOK plays them), sized for
N, so the cluster's three shared fake nodes keep their room.

Measured, one record per (tool, metric, N):

* ``create_to_workload_seconds``: the app's first create → the workload exists (Argo
  Rollouts: the Rollout's ReplicaSet; Pilotboat: the stable Deployment), seen by a watch;
  p50/p99 over the N (``PILOTBOAT_BENCH_ARGO_SERVICES=0``: Rollouts without Services);
* ``image_change_to_canary_pod_seconds``: the image patch → the first pod of the new image
  exists (not yet scheduled or ready);
* ``single_image_change_to_canary_pod_seconds``: then, with the N paused, the images of
  ``PILOTBOAT_BENCH_ARGO_SINGLES`` objects (default 30) changed again, one at a time a
  second apart (a new revision in the middle of a release, which both tools answer with a
  canary of it): each patch → the first pod of that image; the latency one change sees on a
  cluster that holds N releases, not a burst's queue;
* ``single_create_to_workload_seconds``: then as many new objects created one at a time a
  second apart, each create → its workload, on a cluster that holds N objects;
* ``controller_rss_bytes``: VmRSS of the controller process, idle, once the N are Healthy,
  and once the N canaries are paused;
* ``api_requests_per_reconcile``: Argo Rollouts counts its requests to the API server
  (``controller_clientset_k8s_request_total``) and its reconciles (``rollout_reconcile``);
  Pilotboat counts the requests of its Kubernetes client (``pilotboat_api_requests_total``;
  Kopf's watches, which start before the first reading, are not among them) and its
  reconciles (``pilotboat_reconciles_total``). With ``PILOTBOAT_BENCH_ARGO_PROXY=1`` each
  controller reaches the API server through a ``kubectl proxy`` that counts its requests,
  the same way for both tools (a local hop more per request: such runs count, their
  latencies are not the ones to quote);
* ``run_seconds``: the wall time of the whole run of one tool at one N.

``PILOTBOAT_BENCH_ARGO_TOOLS`` (default ``argo-rollouts,pilotboat``),
``PILOTBOAT_BENCH_ARGO_REPLICAS`` (default 1), ``PILOTBOAT_BENCH_ARGO_CONTROLLER_ARGS``
(more flags for rollouts-controller, none by default) and
``PILOTBOAT_BENCH_ARGO_PILOTBOAT_ARGS`` (more flags for ``pilotboat run``, e.g.
``--no-webhooks``) narrow or change the run; ``PILOTBOAT_BENCH_ARGO_HEALTHY_ONLY=1`` ends
each run once the N are Healthy (create → workload, RSS idle and Healthy, requests): the
memory of a large N without the hour its release and singles would take. Both tools
run with their defaults otherwise; rollouts-controller's include a client-side limit of
40 requests a second (``--qps 40 --burst 80``), Pilotboat (Kopf) has none. The first run builds
the Argo Rollouts controller (about 7 CPU minutes) into ``~/.cache/pilotboat``.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
import kubernetes
from prometheus_client.parser import text_string_to_metric_families

from pilotboat import API_VERSION
from pilotboat.adapters.kube import Kube
from pilotboat.testing import ChildProcess, OperatorProcess

__all__ = ["BENCHMARKS"]

REPO = Path(__file__).resolve().parents[1]
BUILD = REPO / "hack" / "argo-rollouts" / "build.sh"
LOGS = REPO / ".state" / "logs" / "bench-argo-rollouts"  # each run's controller log

IMAGE = "localhost/pilotboat/echo"
NAME_LABEL = "app.kubernetes.io/name"
NODE_LABEL = "kwok-bench"
NODE_PODS = 500
CREATORS = 4


def _counts() -> list[int]:
    raw = os.environ.get("PILOTBOAT_BENCH_ARGO_COUNTS", "100,1000")
    return [int(n) for n in raw.split(",") if n.strip()]


def _argo_args() -> list[str]:
    """More flags for rollouts-controller (e.g. ``--qps 400 --burst 800``); none by default."""
    return os.environ.get("PILOTBOAT_BENCH_ARGO_CONTROLLER_ARGS", "").split()


def _pilotboat_args() -> list[str]:
    """More flags for ``pilotboat run`` (e.g. ``--no-webhooks``); none by default."""
    return os.environ.get("PILOTBOAT_BENCH_ARGO_PILOTBOAT_ARGS", "").split()


def _singles() -> int:
    return int(os.environ.get("PILOTBOAT_BENCH_ARGO_SINGLES", "30"))


def _healthy_only() -> bool:
    """``PILOTBOAT_BENCH_ARGO_HEALTHY_ONLY=1``: stop each run once the N are Healthy (the
    create burst, RSS idle and Healthy, requests): a large N's memory without its release."""
    return os.environ.get("PILOTBOAT_BENCH_ARGO_HEALTHY_ONLY", "0") == "1"


def _app_services() -> bool:
    """``PILOTBOAT_BENCH_ARGO_SERVICES=0``: create the Rollouts alone, without the Service
    each app needs (the runs before 12-03 18:30 did; see :func:`_argo_app`)."""
    return os.environ.get("PILOTBOAT_BENCH_ARGO_SERVICES", "1") != "0"


def _tools() -> list[str]:
    raw = os.environ.get("PILOTBOAT_BENCH_ARGO_TOOLS", "argo-rollouts,pilotboat")
    return [t.strip() for t in raw.split(",") if t.strip()]


_PLACEMENT: dict[str, Any] = {
    "nodeSelector": {"type": NODE_LABEL},
    "tolerations": [
        {"key": "kwok.x-k8s.io/node", "operator": "Equal", "value": "fake", "effect": "NoSchedule"}
    ],
}


# --- the controllers, as processes of this machine ---------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("VmRSS not found")


def _scrape(port: int) -> dict[str, float]:
    """Sum of every sample of each series name on /metrics (labels summed away)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


class Controller(Protocol):
    """A controller under test: started for one namespace, measured, stopped."""

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def rss_bytes(self) -> int: ...

    def counters(self) -> tuple[float | None, float]:
        """(API requests sent so far, or None when it does not count them; reconciles)."""
        ...


class ArgoRolloutsProcess(ChildProcess):
    """`rollouts-controller` out of the cluster, watching only `namespace`."""

    def __init__(self, binary: Path, kubeconfig: Path, log_dir: Path, namespace: str):
        self.binary = binary
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.log_path = log_dir / "rollouts-controller.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.metrics_port = 0

    def start(self) -> None:
        self.metrics_port, healthz_port = _free_port(), _free_port()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        cmd = [
            str(self.binary),
            "--kubeconfig", str(self.kubeconfig),
            "--namespaced", "--namespace", self.namespace,
            "--leader-elect=false",
            "--metricsPort", str(self.metrics_port),
            "--healthzPort", str(healthz_port),
            *_argo_args(),
        ]  # fmt: skip
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rollouts-controller exited:\n{self.log_text()[-4000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=1).is_success:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"rollouts-controller did not serve:\n{self.log_text()[-4000:]}")

    def rss_bytes(self) -> int:
        assert self.proc is not None
        return _rss_bytes(self.proc.pid)

    def counters(self) -> tuple[float | None, float]:
        totals = _scrape(self.metrics_port)
        return (
            totals.get("controller_clientset_k8s_request_total", 0.0),
            totals.get("rollout_reconcile_count", 0.0),
        )


class PilotboatProcess:
    """`pilotboat run` for one namespace, with its /metrics on a free port."""

    def __init__(self, kubeconfig: Path, log_dir: Path, namespace: str):
        self.metrics_port = _free_port()
        self.operator = OperatorProcess(
            kubeconfig,
            log_dir,
            ["--namespace", namespace, "--metrics-port", str(self.metrics_port),
             "--metrics-address", "127.0.0.1", *_pilotboat_args()],
        )  # fmt: skip

    def start(self) -> None:
        self.operator.start()

    def stop(self) -> None:
        self.operator.stop()

    def rss_bytes(self) -> int:
        return self.operator.rss_bytes()

    def counters(self) -> tuple[float | None, float]:
        totals = _scrape(self.metrics_port)
        return (
            totals.get("pilotboat_api_requests_total", 0.0),
            totals.get("pilotboat_reconciles_total", 0.0),
        )


class CountingProxy(ChildProcess):
    """`kubectl proxy` between one controller and the API server, counting its requests.

    The same count for both tools, Kopf's watches included; it adds a
    local hop to every request, so runs with it are for counting, not for latency."""

    def __init__(self, kubeconfig: Path, log_dir: Path):
        self.kubeconfig = kubeconfig
        self.log_path = log_dir / "kubectl-proxy.log"
        self.proxy_kubeconfig = log_dir / "proxy.kubeconfig"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Path:
        """Start it; the kubeconfig that reaches the API server through it."""
        port = _free_port()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        kubectl = shutil.which("kubectl") or str(REPO / ".state" / "bin" / "kubectl")
        cmd = [kubectl, "--kubeconfig", str(self.kubeconfig), "proxy",
               "--address", "127.0.0.1", "--port", str(port), "-v=6"]  # fmt: skip
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        self.proxy_kubeconfig.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [
                        {"name": "proxy", "cluster": {"server": f"http://127.0.0.1:{port}"}}
                    ],
                    "users": [{"name": "proxy", "user": {}}],
                    "contexts": [
                        {"name": "proxy", "context": {"cluster": "proxy", "user": "proxy"}}
                    ],
                    "current-context": "proxy",
                }
            )
        )
        ok = _wait_until(lambda: "Starting to serve" in self.log_text(), 30, every=0.2)
        if ok is None:
            raise RuntimeError(f"kubectl proxy did not start:\n{self.log_text()[-2000:]}")
        return self.proxy_kubeconfig

    def requests(self) -> int:
        """Requests it has passed on so far (one `Filter accepting` line each, at -v=6)."""
        return self.log_text().count("Filter accepting ")


# --- the objects of each tool ------------------------------------------------------------


@dataclass(frozen=True)
class Tool:
    """What differs between the tools: their objects, their workload, their phases."""

    name: str
    version: str
    group: str
    plural: str
    manifest: Callable[[str, str, int], dict[str, Any]]
    app: Callable[[str, str, int], list[dict[str, Any]]]
    """Everything a user applies for one app, in order; the last is ``manifest``'s object."""
    image_patch: Callable[[str], dict[str, Any]]
    workload: str  # "replicasets" or "deployments": the kind the watch reads
    owner_kind: str
    controller: Callable[[Path, Path, str], Controller]


def _argo_container(image: str) -> dict[str, Any]:
    return {"name": "app", "image": image, "ports": [{"name": "http", "containerPort": 8080}]}


def _rollout(name: str, image: str, replicas: int) -> dict[str, Any]:
    labels = {NAME_LABEL: name}
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [_argo_container(image)],
                    **_PLACEMENT,
                },
            },
            "strategy": {
                "canary": {"steps": [{"setWeight": 20}, {"pause": {}}, {"setWeight": 50}]}
            },
        },
    }


def _app_service(name: str) -> dict[str, Any]:
    """The Service an app's traffic comes through: the one a Microservice renders for itself
    (ClusterIP, port http 8080, over both tracks' pods), which an Argo Rollouts user applies
    beside the Rollout."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": {NAME_LABEL: name}},
        "spec": {
            "type": "ClusterIP",
            "selector": {NAME_LABEL: name},
            "ports": [{"name": "http", "port": 8080, "targetPort": 8080, "protocol": "TCP"}],
        },
    }


def _argo_app(name: str, image: str, replicas: int) -> list[dict[str, Any]]:
    """What an Argo Rollouts user applies for one app: its Service, then its Rollout (Helm's
    order: Services before workloads, kinds it does not know last). A Microservice is both
    at once, the operator writing the Service; without the Service here the two tools would
    not end with the same objects, and every Service a cluster creates waits on one lock of
    the API server's address allocator (Kubernetes 1.33 on), which only Pilotboat's side
    would pay for. ``PILOTBOAT_BENCH_ARGO_SERVICES=0``: the Rollout alone."""
    rollout = _rollout(name, image, replicas)
    return [_app_service(name), rollout] if _app_services() else [rollout]


def _microservice(name: str, image: str, replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "Microservice",
        "metadata": {"name": name},
        "spec": {
            "image": image,
            "version": image.rsplit(":", 1)[1],
            "replicas": replicas,
            **_PLACEMENT,
            "rollout": {
                "canary": {
                    "steps": [
                        {"setWeight": 20},
                        {"pause": {"untilPromoted": True}},
                        {"setWeight": 50},
                    ]
                }
            },
        },
    }


def _argo_image_patch(image: str) -> dict[str, Any]:
    # A merge patch replaces the whole list: the container goes whole, ports and all.
    return {"spec": {"template": {"spec": {"containers": [_argo_container(image)]}}}}


def _pilotboat_image_patch(image: str) -> dict[str, Any]:
    return {"spec": {"image": image, "version": image.rsplit(":", 1)[1]}}


def _argo_controller(kubeconfig: Path, log_dir: Path, namespace: str) -> Controller:
    binary = Path(_argo_dir()) / "rollouts-controller"
    return ArgoRolloutsProcess(binary, kubeconfig, log_dir, namespace)


def _pilotboat_controller(kubeconfig: Path, log_dir: Path, namespace: str) -> Controller:
    return PilotboatProcess(kubeconfig, log_dir, namespace)


def _argo_dir() -> str:
    """Where build.sh keeps the controller and its CRDs; builds them the first time."""
    return subprocess.run([str(BUILD)], check=True, capture_output=True, text=True).stdout.strip()


def _argo_version() -> str:
    for line in (BUILD.parent / "go.mod").read_text().splitlines():
        if line.startswith("require github.com/argoproj/argo-rollouts "):
            return line.split()[-1]
    raise RuntimeError("no argo-rollouts version in hack/argo-rollouts/go.mod")


TOOLS: dict[str, Tool] = {
    "argo-rollouts": Tool(
        name="argo-rollouts",
        version=_argo_version(),
        group="argoproj.io",
        plural="rollouts",
        manifest=_rollout,
        app=_argo_app,
        image_patch=_argo_image_patch,
        workload="replicasets",
        owner_kind="Rollout",
        controller=_argo_controller,
    ),
    "pilotboat": Tool(
        name="pilotboat",
        version="work tree",
        group="pilotboat.dev",
        plural="microservices",
        manifest=_microservice,
        app=lambda name, image, replicas: [_microservice(name, image, replicas)],
        image_patch=_pilotboat_image_patch,
        workload="deployments",
        owner_kind="Microservice",
        controller=_pilotboat_controller,
    ),
}


# --- watching ----------------------------------------------------------------------------


@dataclass
class FirstSeen:
    """The monotonic time each key first appeared on a watch of one namespace's objects.

    `key` maps an object (a dict, as the API sends it) to a key, or None to ignore it."""

    list_call: Callable[..., Any]
    namespace: str
    key: Callable[[Mapping[str, Any]], str | None]
    times: dict[str, float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> FirstSeen:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(15)

    def _see(self, obj: Mapping[str, Any]) -> None:
        k = self.key(obj)
        if k is not None and k not in self.times:
            self.times[k] = time.monotonic()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                listing = self.list_call(self.namespace, _preload_content=False)
                body = json.loads(listing.data)
                for item in body.get("items", []):
                    self._see(item)
                version = body["metadata"]["resourceVersion"]
                while not self._stop.is_set():
                    w = kubernetes.watch.Watch()  # type: ignore[no-untyped-call]
                    for event in w.stream(  # type: ignore[no-untyped-call]
                        self.list_call,
                        self.namespace,
                        resource_version=version,
                        timeout_seconds=5,
                        allow_watch_bookmarks=True,
                    ):
                        raw = event["raw_object"]
                        version = raw.get("metadata", {}).get("resourceVersion", version)
                        if event["type"] in ("ADDED", "MODIFIED"):
                            self._see(raw)
                        if self._stop.is_set():
                            w.stop()  # type: ignore[no-untyped-call]
            except Exception:  # noqa: BLE001 - an expired watch or a hiccup: list again
                time.sleep(0.5)


def _owner(obj: Mapping[str, Any], kind: str) -> str | None:
    for ref in obj.get("metadata", {}).get("ownerReferences") or ():
        if ref.get("kind") == kind:
            return str(ref["name"])
    return None


def _workload_key(tool: Tool) -> Callable[[Mapping[str, Any]], str | None]:
    def key(obj: Mapping[str, Any]) -> str | None:
        owner = _owner(obj, tool.owner_kind)
        if tool.workload == "deployments" and owner != obj["metadata"]["name"]:
            return None  # Pilotboat's canary Deployment, `<name>-canary`
        return owner

    return key


def _pod_key(image: str) -> Callable[[Mapping[str, Any]], str | None]:
    def key(pod: Mapping[str, Any]) -> str | None:
        containers = pod.get("spec", {}).get("containers") or [{}]
        if containers[0].get("image") != image:
            return None
        name = (pod["metadata"].get("labels") or {}).get(NAME_LABEL)
        return str(name) if name else None

    return key


# --- the run -----------------------------------------------------------------------------


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def _latencies(metric: str, burst: _Phase, seen: dict[str, float]) -> dict[str, Any]:
    values = [seen[k] - t0 for k, t0 in burst.started.items() if k in seen]
    record: dict[str, Any] = {"metric": metric, "measured": len(values)}
    if values:
        record.update(
            p50=round(_percentile(values, 0.50), 3),
            p99=round(_percentile(values, 0.99), 3),
            max=round(max(values), 3),
            mean=round(statistics.fmean(values), 3),
        )
    record["seconds_until_all"] = _round(burst.seconds_until_all)
    return record


def _in_parallel(names: list[str], act: Callable[[str], None]) -> None:
    def each(part: list[str]) -> None:
        for name in part:
            act(name)

    threads = [threading.Thread(target=each, args=(names[i::CREATORS],)) for i in range(CREATORS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _wait_until(predicate: Callable[[], bool], timeout: float, every: float = 0.5) -> float | None:
    """Seconds until `predicate` held, or None if it did not within `timeout`."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if predicate():
            return time.monotonic() - t0
        time.sleep(every)
    return None


@dataclass
class _Phase:
    """One burst of writes and what the watch saw of it."""

    started: dict[str, float] = field(default_factory=dict)
    seconds_until_all: float | None = None  # every object's result seen
    seconds_until_phase: float | None = None  # every object in the phase that ends it


@dataclass
class _Readings:
    rss: dict[str, int] = field(default_factory=dict)
    requests: list[float | None] = field(default_factory=list)  # the controller's own count
    proxied: list[int] = field(default_factory=list)  # counted by the proxy, if any
    reconciles: list[float] = field(default_factory=list)

    def take(self, controller: Controller, proxy: CountingProxy | None) -> None:
        requests, reconciles = controller.counters()
        self.requests.append(requests)
        self.reconciles.append(reconciles)
        if proxy is not None:
            self.proxied.append(proxy.requests())


class _Run:
    """One tool, one N, one namespace."""

    def __init__(self, kube: Kube, tool: Tool, count: int, replicas: int):
        self.kube = kube
        self.tool = tool
        self.count = count
        self.replicas = replicas
        api = kube.api_client
        self.custom = kubernetes.client.CustomObjectsApi(api)
        self.apps = kubernetes.client.AppsV1Api(api)
        self.core = kubernetes.client.CoreV1Api(api)
        self.namespace = f"bench-{tool.name}-{count}-{secrets.token_hex(3)}"
        self.names = [f"svc-{i:04d}" for i in range(count)]
        self.scale = max(1.0, count / 100)  # timeouts grow with N

    def _phases(self) -> dict[str, int]:
        listing: Any = self.custom.list_namespaced_custom_object(
            self.tool.group, "v1alpha1", self.namespace, self.tool.plural
        )
        tally: dict[str, int] = {}
        for item in listing["items"]:
            phase = str((item.get("status") or {}).get("phase"))
            tally[phase] = tally.get(phase, 0) + 1
        return tally

    def _burst(self, act: Callable[[str], Any], seen: FirstSeen, phase: str) -> _Phase:
        """`act` on every object at once; wait until the watch saw each result, and until
        every object is in `phase`."""
        burst = _Phase()

        def timed(name: str) -> None:
            burst.started[name] = time.monotonic()
            act(name)

        t0 = time.monotonic()
        _in_parallel(self.names, timed)
        if _wait_until(lambda: len(seen.times) >= self.count, 120 * self.scale) is not None:
            burst.seconds_until_all = time.monotonic() - t0

        def in_phase() -> bool:
            return self._phases().get(phase, 0) >= self.count

        if _wait_until(in_phase, 300 * self.scale, every=2) is not None:
            burst.seconds_until_phase = time.monotonic() - t0
        return burst

    def _create(self, name: str) -> Any:
        """Create one app, as a user applies it (the clock runs from the first object)."""
        *others, body = self.tool.app(name, f"{IMAGE}:v1", self.replicas)
        for other in others:  # the Service, the only other kind an app has here
            self.core.create_namespaced_service(self.namespace, other)
        return self.custom.create_namespaced_custom_object(
            self.tool.group, "v1alpha1", self.namespace, self.tool.plural, body
        )

    def _change_image(self, name: str, tag: str = "v2") -> Any:
        return self.custom.patch_namespaced_custom_object(
            self.tool.group, "v1alpha1", self.namespace, self.tool.plural, name,
            self.tool.image_patch(f"{IMAGE}:{tag}"),
        )  # fmt: skip

    def _one_at_a_time(
        self, act: Callable[[str], Any], names: list[str], seen: FirstSeen, gap: float = 1.0
    ) -> _Phase:
        """`act` on each of `names`, one at a time `gap` seconds apart; wait until the watch
        saw each one's result."""
        singles = _Phase()
        t0 = time.monotonic()
        for name in names:
            singles.started[name] = time.monotonic()
            act(name)
            time.sleep(gap)
        if _wait_until(lambda: all(n in seen.times for n in names), 60 * self.scale) is not None:
            singles.seconds_until_all = time.monotonic() - t0
        return singles

    def measure(self, kubeconfig: Path, logs: Path, *, proxy: bool) -> Iterator[dict[str, Any]]:
        run_started, load_before = time.monotonic(), os.getloadavg()[0]
        webhooks_before = self._webhooks_registered()
        self.kube.apply({"apiVersion": "v1", "kind": "Namespace",
                         "metadata": {"name": self.namespace}})  # fmt: skip
        counting = CountingProxy(kubeconfig, logs) if proxy else None
        workload_list = (
            self.apps.list_namespaced_replica_set
            if self.tool.workload == "replicasets"
            else self.apps.list_namespaced_deployment
        )
        workloads = FirstSeen(workload_list, self.namespace, _workload_key(self.tool))
        canaries = FirstSeen(self.core.list_namespaced_pod, self.namespace, _pod_key(f"{IMAGE}:v2"))
        again = FirstSeen(self.core.list_namespaced_pod, self.namespace, _pod_key(f"{IMAGE}:v3"))
        singles, single_creates = _Phase(), _Phase()
        changed: _Phase | None = None
        readings = _Readings()
        controller: Controller | None = None
        try:
            via = counting.start() if counting else kubeconfig
            controller = self.tool.controller(via, logs, self.namespace)
            controller.start()
            time.sleep(3)
            readings.rss["idle"] = controller.rss_bytes()
            readings.take(controller, counting)
            workloads.start()
            canaries.start()
            again.start()
            created = self._burst(self._create, workloads, "Healthy")
            time.sleep(10)
            readings.rss["healthy"] = controller.rss_bytes()
            if _healthy_only():
                readings.take(controller, counting)
                phases = self._phases()
            else:
                changed = self._burst(self._change_image, canaries, "Paused")
                time.sleep(10)
                readings.rss["paused"] = controller.rss_bytes()
                readings.take(controller, counting)
                phases = self._phases()
                few = min(_singles(), self.count)
                singles = self._one_at_a_time(
                    lambda name: self._change_image(name, "v3"), self.names[:few], again
                )
                single_creates = self._one_at_a_time(
                    self._create, [f"one-{i:04d}" for i in range(few)], workloads
                )
        finally:
            workloads.stop()
            canaries.stop()
            again.stop()
            deleted = self._delete_namespace()
            if controller is not None:
                controller.stop()
            if counting is not None:
                counting.stop()
        yield from self._records(created, workloads, changed, canaries, readings, phases)
        if singles.started:
            yield {
                **self._common(),
                "via_proxy": proxy,
                **_latencies("single_image_change_to_canary_pod_seconds", singles, again.times),
                "gap_seconds": 1.0,
            }
        if single_creates.started:
            yield {
                **self._common(),
                "via_proxy": proxy,
                **_latencies("single_create_to_workload_seconds", single_creates, workloads.times),
                "gap_seconds": 1.0,
            }
        yield {
            **self._common(),
            "metric": "run_seconds",
            "seconds": round(time.monotonic() - run_started, 1),
            "namespace_deleted": deleted,
            "via_proxy": proxy,
            # The machine's 1-minute load before and after: others may share the cluster.
            "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            # Admission webhooks already registered before the run (another operator's, or
            # left behind): the API server weighs each against every write they match.
            "webhooks_before": webhooks_before,
        }

    def _common(self) -> dict[str, Any]:
        common = {"tool": self.tool.name, "tool_version": self.tool.version,
                  "objects": self.count, "replicas": self.replicas,
                  # The kinds created for each app, in order.
                  "app": [o["kind"] for o in self.tool.app("x", f"{IMAGE}:v1", 1)]}  # fmt: skip
        if self.tool.name == "argo-rollouts" and _argo_args():
            common["controller_args"] = " ".join(_argo_args())
        if self.tool.name == "pilotboat" and _pilotboat_args():
            common["controller_args"] = " ".join(_pilotboat_args())
        return common

    def _records(
        self,
        created: _Phase,
        workloads: FirstSeen,
        changed: _Phase | None,
        canaries: FirstSeen,
        readings: _Readings,
        phases: dict[str, int],
    ) -> Iterator[dict[str, Any]]:
        common = {**self._common(), "via_proxy": bool(readings.proxied)}
        yield {
            **common,
            **_latencies("create_to_workload_seconds", created, workloads.times),
            "seconds_until_all_healthy": _round(created.seconds_until_phase),
            **({"phases_at_end": phases} if changed is None else {}),
        }
        if changed is not None:
            yield {
                **common,
                **_latencies("image_change_to_canary_pod_seconds", changed, canaries.times),
                "seconds_until_all_paused": _round(changed.seconds_until_phase),
                "phases_at_end": phases,
            }
        yield {
            **common,
            "metric": "controller_rss_bytes",
            **{f"rss_{when}_mib": round(rss / 2**20, 1) for when, rss in readings.rss.items()},
        }
        yield {**common, **_requests(readings, self.count)}

    def _webhooks_registered(self) -> int:
        """Webhooks of the cluster's admission configurations, mutating and validating."""
        return sum(
            len(configuration.get("webhooks") or [])
            for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration")
            for configuration in self.kube.list(kind, None)
        )

    def _delete_namespace(self) -> bool:
        """Delete with the controller still running (it may hold finalizers); True once gone."""
        self.kube.delete("Namespace", None, self.namespace)
        gone = _wait_until(
            lambda: self.kube.get("Namespace", None, self.namespace) is None,
            600 + self.count,
            every=2,
        )
        return gone is not None


def _round(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 1)


def _requests(readings: _Readings, count: int) -> dict[str, Any]:
    """Requests to the API server between the first and last readings, per reconcile."""
    reconciles = readings.reconciles[-1] - readings.reconciles[0]
    record: dict[str, Any] = {"metric": "api_requests_per_reconcile", "reconciles": int(reconciles)}

    def per(requests: float) -> dict[str, Any]:
        return {
            "per_reconcile": round(requests / reconciles, 2) if reconciles else None,
            "per_object": round(requests / count, 2),
        }

    own = readings.requests
    if own[0] is not None and own[-1] is not None:
        record.update(measured=True, requests=int(own[-1] - own[0]), **per(own[-1] - own[0]))
    if readings.proxied:
        proxied = readings.proxied[-1] - readings.proxied[0]
        by_proxy = {f"{key}_via_proxy": value for key, value in per(proxied).items()}
        record.update(measured=True, requests_via_proxy=proxied, **by_proxy)
    if "measured" not in record:
        record.update(
            measured=False,
            why="the controller's /metrics has no request counter",
        )
    return record


# --- fake nodes of the bench's own -------------------------------------------------------


def _nodes(core: kubernetes.client.CoreV1Api) -> list[dict[str, Any]]:
    response: Any = core.list_node(label_selector=f"type={NODE_LABEL}", _preload_content=False)
    items: list[dict[str, Any]] = json.loads(response.data)["items"]
    return items


def _bench_nodes(kube: Kube, count: int) -> list[str]:
    """KWOK nodes labelled type=kwok-bench with room for `count` pods; their names."""
    names = [f"pilotboat-bench-kwok-{i}" for i in range(math.ceil(count / NODE_PODS))]
    core = kubernetes.client.CoreV1Api(kube.api_client)
    existing = {n["metadata"]["name"] for n in _nodes(core)}
    room = {"cpu": "64", "memory": "512Gi", "pods": str(NODE_PODS)}
    for name in names:
        if name in existing:
            continue
        node: Any = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {
                    "type": NODE_LABEL,
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                },
            },
            "spec": {
                "taints": [{"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}]
            },
            # Taken only on create; kwok keeps it and reports the node Ready.
            "status": {"allocatable": room, "capacity": room},
        }
        core.create_node(node)

    def ready() -> bool:
        up = {
            n["metadata"]["name"]
            for n in _nodes(core)
            for c in (n.get("status") or {}).get("conditions") or ()
            if c["type"] == "Ready" and c["status"] == "True"
        }
        return set(names) <= up

    if _wait_until(ready, 60) is None:
        raise RuntimeError(f"fake nodes {names} not Ready in 60s: is kwok running?")
    return names


def _delete_bench_nodes(kube: Kube) -> None:
    core = kubernetes.client.CoreV1Api(kube.api_client)
    for node in _nodes(core):
        core.delete_node(node["metadata"]["name"])


def _install_argo_crds(kube: Kube) -> None:
    import yaml

    crds = sorted((Path(_argo_dir()) / "crds").glob("*.yaml"))
    for path in crds:
        kube.apply(yaml.safe_load(path.read_text()))
    names = [yaml.safe_load(p.read_text())["metadata"]["name"] for p in crds]

    def established() -> bool:
        for name in names:
            crd = kube.get("CustomResourceDefinition", None, name) or {}
            conditions = (crd.get("status") or {}).get("conditions") or []
            if not any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
                return False
        return True

    if _wait_until(established, 60) is None:
        raise RuntimeError(f"Argo Rollouts CRDs not established: {names}")


def argo_rollouts(kube: Kube, kubeconfig: Path) -> Iterator[dict[str, Any]]:
    """Both tools at each N, one after the other; see the module's docstring."""
    replicas = int(os.environ.get("PILOTBOAT_BENCH_ARGO_REPLICAS", "1"))
    counts, tools = _counts(), _tools()
    proxy = os.environ.get("PILOTBOAT_BENCH_ARGO_PROXY", "0") == "1"
    if "argo-rollouts" in tools:
        _install_argo_crds(kube)
    # Stable and canary pods of every object at the pause, a surge's worth to spare, and the
    # pods of the objects created one at a time at the end.
    per_object = 1.25 if _healthy_only() else 2 * 1.25
    _bench_nodes(kube, math.ceil((max(counts) * per_object + _singles()) * replicas))
    try:
        for count in counts:
            for name in tools:
                run = _Run(kube, TOOLS[name], count, replicas)
                yield from run.measure(kubeconfig, LOGS / run.namespace, proxy=proxy)
    finally:
        _delete_bench_nodes(kube)


BENCHMARKS: dict[str, Callable[[Kube, Path], Iterator[dict[str, Any]]]] = {
    "argo_rollouts": argo_rollouts,
}
