"""The shop's manifests (examples/shop/*.yaml) put into one namespace, and its releases.

The manifests are applied as they are, with three adjustments that belong to this machine:
the namespace; the OwnedDatabases' server (a DatabaseServer of this namespace's own for the
demo's PostgreSQL on the pod gateway, which the operator on the host reaches too; its admin
Secret in the operator's namespace); and, when there is no cluster DNS, each service's
``*_URL`` variables pointing at ClusterIPs (the Services are created first, with the spec the
operator gives them). A release is what a team does in Git: change ``version`` (and the
variables that go with it) and apply.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import yaml
from examples.shop.demo.infra import POD_GATEWAY, REPO, Infra
from psycopg import sql

from pilotboat.adapters.kube import Kube

__all__ = ["SHOP_DIR", "Shop", "TimedOut"]

# Where the manifests are read from; PILOTBOAT_DEMO_MANIFESTS points elsewhere (a variant).
SHOP_DIR = Path(os.environ.get("PILOTBOAT_DEMO_MANIFESTS", REPO / "examples" / "shop"))
URL_ENV = {"catalog": "CATALOG_URL", "inventory": "INVENTORY_URL",
           "payments": "PAYMENTS_URL", "shipping": "SHIPPING_URL",
           "notifications": "NOTIFICATIONS_URL", "orders": "ORDERS_URL"}
SERVER = "shop-postgres"  # the DatabaseServer the manifests name
OPERATOR_NAMESPACE = "pilotboat-system"  # where the operator (pilotboat run's default) reads it
MIGRATION_FILE = "orders-migration.yaml"
FLAGS_FILE = "flags.yaml"
# The namespace enforces the Pod Security Standard "restricted": the shop's pods, as the
# operator renders them from the manifests' pod templates, must pass it or never start.
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted",
              "pod-security.kubernetes.io/enforce-version": "latest"}
ORDER = ("Secret", "ConfigMap", "RolloutPolicy", "FeatureFlag", "OwnedDatabase", "Microservice")


class TimedOut(AssertionError):
    pass


def load(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


class Shop:
    def __init__(self, kube: Kube, namespace: str, infra: Infra, say: Callable[[str], None],
                 steps: list[dict[str, Any]] | None = None,
                 max_latency: float | None = None):
        """The e2e test's shorter story: `steps` replace the manifests' canary steps, and
        `max_latency` their latency thresholds (seconds at the quantile)."""
        self.kube, self.namespace, self.infra, self.say = kube, namespace, infra, say
        self.steps = steps
        self.max_latency = max_latency
        self.desired: dict[str, dict[str, Any]] = {}  # Microservice name -> what we applied
        self.urls: dict[str, str] = {}

    # --- the namespace ------------------------------------------------------------------
    def create_namespace(self) -> None:
        self.kube.apply({"apiVersion": "v1", "kind": "Namespace",
                         "metadata": {"name": self.namespace,
                                      "labels": {"pilotboat.dev/demo": "shop", **RESTRICTED}}})
        deadline = time.monotonic() + 30
        while self.kube.get("ServiceAccount", self.namespace, "default") is None:
            if time.monotonic() > deadline:
                raise TimedOut("no default ServiceAccount")
            time.sleep(0.2)

    def exists(self) -> bool:
        return self.kube.get("Namespace", None, self.namespace) is not None

    def remove(self, timeout: float = 180, grace: float = 20) -> None:
        """Delete the namespace and the databases: the next story starts from v1.

        An operator watching the namespace drops each database and removes its finalizer;
        after `grace` seconds (no operator, or one that does not watch a terminating
        namespace) the finalizers are removed here and the databases dropped below."""
        self.kube.delete("Namespace", None, self.namespace)
        start = time.monotonic()
        while self.exists():
            waited = time.monotonic() - start
            if waited > timeout:
                raise TimedOut(f"namespace {self.namespace} still terminating after {timeout}s")
            if waited > grace:
                for odb in self.kube.list("OwnedDatabase", self.namespace):
                    if odb["metadata"].get("finalizers"):
                        self.kube.merge_patch("OwnedDatabase", self.namespace,
                                              odb["metadata"]["name"],
                                              {"metadata": {"finalizers": None}})
            time.sleep(0.5)
        self.drop_databases()

    def drop_databases(self) -> None:
        """Databases and roles a previous run in this namespace left (reclaimPolicy Retain)."""
        prefix = self.namespace.replace("-", "_") + "\\_%"
        role_prefix = "pb\\_" + self.namespace.replace("-", "_") + "\\_%"
        with psycopg.connect(self.infra.postgres.dsn(), autocommit=True) as conn:
            for (name,) in conn.execute(
                    "SELECT datname FROM pg_database WHERE datname LIKE %s", (prefix,)):
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                             .format(sql.Identifier(name)))
            for (name,) in conn.execute(
                    "SELECT rolname FROM pg_roles WHERE rolname LIKE %s", (role_prefix,)):
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))

    # --- manifests ----------------------------------------------------------------------
    def manifests(self) -> list[dict[str, Any]]:
        docs: list[dict[str, Any]] = []
        for path in sorted(SHOP_DIR.glob("*.yaml")):
            if path.name in (MIGRATION_FILE, FLAGS_FILE):
                continue
            docs.extend(load(path))
        return [self._localize(d) for d in docs if d.get("kind") in ORDER]

    def migration(self) -> dict[str, Any]:
        docs = [d for d in load(SHOP_DIR / MIGRATION_FILE) if d.get("kind") == "SchemaMigration"]
        return self._localize(docs[0])

    def _localize(self, doc: dict[str, Any]) -> dict[str, Any]:
        doc = copy.deepcopy(doc)
        doc.setdefault("metadata", {})["namespace"] = self.namespace
        if doc["kind"] == "OwnedDatabase":
            doc["spec"]["serverRef"] = {"name": self.server_name}
        canary = ((doc.get("spec") or {}).get("rollout") or {}).get("canary")
        if doc["kind"] == "Microservice" and self.steps and canary and canary.get("steps"):
            canary["steps"] = copy.deepcopy(self.steps)
        latency = (((canary or {}).get("analysis") or {}).get("signals") or {}).get("latency")
        if doc["kind"] == "Microservice" and self.max_latency and latency:
            latency["maxSeconds"] = self.max_latency
            latency.pop("maxRatioToStable", None)
        return doc

    # --- deploying ----------------------------------------------------------------------
    def deploy(self) -> list[str]:
        """Apply everything; returns the Microservices' names."""
        self._apply_server()
        docs = self.manifests()
        services = [d for d in docs if d["kind"] == "Microservice"]
        if not self.infra.dns:
            self._precreate_services(services)
        for ms in services:
            self._set_urls(ms)
            self.desired[ms["metadata"]["name"]] = ms
        for kind in ORDER:
            for doc in docs:
                if doc["kind"] == kind:
                    self.kube.apply(doc if kind != "Microservice"
                                    else self.desired[doc["metadata"]["name"]])
        return [ms["metadata"]["name"] for ms in services]

    @property
    def server_name(self) -> str:
        """This namespace's DatabaseServer: `shop-postgres` for the demo's own namespace."""
        return SERVER if self.namespace == "shop" else f"{self.namespace}-postgres"

    def _apply_server(self) -> None:
        """What the platform team does once: the admin Secret in the operator's namespace,
        and a DatabaseServer (the demo's PostgreSQL has no TLS) that admits this namespace."""
        pg = self.infra.postgres
        secret = f"{self.server_name}-admin"
        if self.kube.get("Namespace", None, OPERATOR_NAMESPACE) is None:
            self.kube.apply({"apiVersion": "v1", "kind": "Namespace",
                             "metadata": {"name": OPERATOR_NAMESPACE}})
        self.kube.apply({"apiVersion": "v1", "kind": "Secret",
                         "metadata": {"name": secret, "namespace": OPERATOR_NAMESPACE},
                         "type": "Opaque",
                         "stringData": {"username": pg.user, "password": pg.password}})
        self.kube.apply({"apiVersion": "pilotboat.dev/v1alpha1", "kind": "DatabaseServer",
                         "metadata": {"name": self.server_name},
                         "spec": {"host": POD_GATEWAY, "port": pg.port,
                                  "tls": {"mode": "disable"},
                                  "adminSecretRef": {"name": secret},
                                  "allowedNamespaces": [self.namespace]}})

    def _precreate_services(self, services: list[dict[str, Any]]) -> None:
        """Without DNS, the ClusterIPs must be known before the pods start: create the
        Services with the spec the operator renders (it takes them over; same fields)."""
        for ms in services:
            name = ms["metadata"]["name"]
            ports = [{"name": p.get("name", "http"), "port": p["port"],
                      "targetPort": p.get("targetPort", p["port"]),
                      "protocol": p.get("protocol", "TCP")} for p in ms["spec"]["ports"]]
            svc = self.kube.apply({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name, "namespace": self.namespace,
                             "labels": {"app.kubernetes.io/name": name,
                                        "app.kubernetes.io/managed-by": "pilotboat"}},
                "spec": {"type": "ClusterIP", "selector": {"app.kubernetes.io/name": name},
                         "ports": ports}})
            self.urls[name] = f"http://{svc['spec']['clusterIP']}:{ports[0]['port']}"

    def _set_urls(self, ms: dict[str, Any]) -> None:
        env = ms["spec"].setdefault("env", [])
        have = {e["name"]: e for e in env}
        for service, var in URL_ENV.items():
            if self.infra.dns:
                if var not in have:
                    env.append({"name": var, "value": f"http://{service}:8080"})
            elif service in self.urls:
                if var in have:
                    have[var]["value"] = self.urls[service]
                else:
                    env.append({"name": var, "value": self.urls[service]})

    # --- releases -----------------------------------------------------------------------
    def release(self, name: str, version: str, env: Mapping[str, str | None] | None = None,
                annotations: Mapping[str, str | None] | None = None) -> dict[str, Any]:
        """Change `name`'s version (and env: None removes a variable) and apply it."""
        ms = copy.deepcopy(self.desired[name])
        ms["spec"]["version"] = version
        current = {e["name"]: e for e in ms["spec"].get("env") or []}
        for key, value in (env or {}).items():
            if value is None:
                current.pop(key, None)
            else:
                current[key] = {"name": key, "value": value}
        ms["spec"]["env"] = list(current.values())
        if annotations:
            meta = ms["metadata"].setdefault("annotations", {})
            for key, value in annotations.items():
                if value is None:
                    meta.pop(key, None)
                else:
                    meta[key] = value
        self.desired[name] = ms
        return self.kube.apply(ms)

    # --- looking ------------------------------------------------------------------------
    def status(self, name: str) -> dict[str, Any]:
        return dict((self.kube.get("Microservice", self.namespace, name) or {})
                    .get("status") or {})

    def wait(self, name: str, what: str, check: Callable[[dict[str, Any]], bool],
             timeout: float, fail: Callable[[dict[str, Any]], str | None] | None = None,
             ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = self.status(name)
            if check(status):
                return status
            problem = fail(status) if fail else None
            if problem:
                raise TimedOut(f"{name}: {problem} (waiting for {what})")
            time.sleep(0.5)
        raise TimedOut(f"{name} is not {what} after {timeout:.0f}s: phase "
                       f"{status.get('phase')}, message {status.get('message')!r}")

    def wait_healthy(self, names: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = list(names)
        while pending:
            for name in list(pending):
                st = self.status(name)
                if st.get("phase") == "Healthy" and st.get("readyReplicas") == st.get(
                        "replicas") and st.get("replicas"):
                    pending.remove(name)
            if pending and time.monotonic() > deadline:
                detail = "; ".join(f"{n}: {self.status(n).get('message')}" for n in pending)
                raise TimedOut(f"not Healthy after {timeout:.0f}s: {detail}")
            time.sleep(0.5)

    def cluster_ip(self, name: str) -> str:
        svc = self.kube.get("Service", self.namespace, name)
        if svc is None:
            raise TimedOut(f"no Service {name}")
        return str(svc["spec"]["clusterIP"])

    def url(self, name: str) -> str:
        return f"http://{self.cluster_ip(name)}:8080"

    def databases(self) -> dict[str, str]:
        """service -> database name, from the OwnedDatabases' status."""
        out = {}
        for odb in self.kube.list("OwnedDatabase", self.namespace):
            owner = odb["spec"]["owner"]
            name = (odb.get("status") or {}).get("databaseName")
            if name:
                out[owner] = name
        return out

    def skus(self) -> tuple[list[str], list[str]]:
        """What customers buy: the catalog's products that inventory holds plenty of, and
        those it holds few of (a limited edition: later orders are cancelled, out of stock)."""
        products = self._get(f"{self.url('catalog')}/products")
        stock = {p["sku"]: int(self._get(f"{self.url('inventory')}/stock/{p['sku']}")
                               .get("available", 0)) for p in products}
        return ([s for s, n in stock.items() if n >= 10_000],
                [s for s, n in stock.items() if n < 10_000])

    @staticmethod
    def _get(url: str, timeout: float = 60) -> Any:
        """GET JSON, retried while the Service's endpoints are being programmed."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                response = httpx.get(url, timeout=10)
                response.raise_for_status()
                return response.json()
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def events(self, name: str | None = None, since: float = 0) -> list[dict[str, Any]]:
        out = []
        for e in self.kube.list("Event", self.namespace):
            obj = e.get("involvedObject") or {}
            if obj.get("kind") not in ("Microservice", "SchemaMigration", "MigrationApproval"):
                continue
            if name is not None and obj.get("name") != name:
                continue
            if event_time(e) + 1 < since:
                continue
            out.append(e)
        return sorted(out, key=lambda e: (event_time(e), int(
            (e.get("metadata") or {}).get("resourceVersion") or 0)))


def event_time(event: Mapping[str, Any]) -> float:
    meta = event.get("metadata") or {}
    for value in (event.get("lastTimestamp"), event.get("eventTime"),
                  event.get("firstTimestamp"), meta.get("creationTimestamp")):
        if value:
            text = str(value).replace("Z", "+00:00")
            try:
                return datetime.fromisoformat(text).timestamp()
            except ValueError:
                continue
    return 0.0
