"""Fixtures shared by every test.

- Tests under tests/core are marked `core`, tests/cluster `cluster`, tests/e2e `e2e`.
- `kubeconfig`: the local control plane (`hack/cluster.sh up`), or the cluster that
  PILOTBOAT_KUBECONFIG points at (kind, k3d, a cloud).
- `kube`: a `pilotboat.adapters.kube.Kube` on it, with the CRDs from crds/ applied.
- `namespace`: a fresh namespace per test, deleted afterwards.
- `operator`: the operator as a real subprocess (`pilotboat run`), shared by the session;
  tests may kill and restart it.
- Under `CI=true` or `PILOTBOAT_STRICT=1` (`make test`) a skip or an xfail is a failure with
  its reason, except on a cluster chosen with PILOTBOAT_KUBECONFIG (tests/fixtures/strict.py).
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import kubernetes
import pytest
import urllib3
import yaml
from hypothesis import settings

from pilotboat.adapters.kube import Kube
from pilotboat.handlers.webhooks import webhook_configuration_name
from pilotboat.testing import OperatorProcess
from tests.story import Story

REPO = Path(__file__).resolve().parents[1]
STATE = Path(os.environ.get("PILOTBOAT_STATE", REPO / ".state"))

# Property tests judge what the code answers, never how fast: with `make test` the cluster,
# PostgreSQL and Prometheus share two cores with them, and a 200 ms deadline per example
# failed a correct property under that load. A real counterexample is printed with the blob
# that replays it.
settings.register_profile("pilotboat", deadline=None, print_blob=True)
settings.load_profile("pilotboat")

pytest_plugins = [
    "tests.fixtures.strict",
    "tests.fixtures.postgres",
    "tests.fixtures.prometheus",
    "tests.fixtures.gateway",
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).relative_to(REPO).parts
        if len(parts) > 1 and parts[0] == "tests" and parts[1] in {"core", "cluster", "e2e"}:
            item.add_marker(getattr(pytest.mark, parts[1]))
    # It stops the cluster and every server, so it runs last (sort keeps the others' order).
    last = REPO / "tests" / "e2e" / "test_stop_everything.py"
    items.sort(key=lambda item: Path(str(item.fspath)) == last)


@pytest.fixture(scope="session")
def kubeconfig() -> Path:
    given = os.environ.get("PILOTBOAT_KUBECONFIG")
    if given:
        return Path(given)
    subprocess.run([str(REPO / "hack" / "cluster.sh"), "up"], check=True)
    return STATE / "kubeconfig"


def _wait_established(kube: Kube, names: list[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    pending = set(names)
    while pending and time.monotonic() < deadline:
        for name in list(pending):
            crd = kube.get("CustomResourceDefinition", None, name) or {}
            conds = crd.get("status", {}).get("conditions", []) or []
            if any(c["type"] == "Established" and c["status"] == "True" for c in conds):
                pending.discard(name)
        time.sleep(0.2)
    if pending:
        raise RuntimeError(f"CRDs not established: {sorted(pending)}")


def _wait_enforced(api: kubernetes.client.ApiClient, timeout: float = 60) -> None:
    """Until the API server enforces the approver-identity policy (a new policy takes a
    moment): a dry-run approval naming someone else must be refused."""
    custom = kubernetes.client.CustomObjectsApi(api)
    forged = {"apiVersion": "pilotboat.dev/v1alpha1", "kind": "MigrationApproval",
              "metadata": {"generateName": "enforced-"},
              "spec": {"migration": "none", "approver": "nobody-at-all", "checksum": "0" * 64}}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            custom.create_namespaced_custom_object(
                "pilotboat.dev", "v1alpha1", "default", "migrationapprovals", forged,
                dry_run="All")
        except kubernetes.client.exceptions.ApiException as exc:
            if exc.status == 403 and "spec.approver" in str(exc.body):
                return
        time.sleep(0.5)
    raise RuntimeError(f"the admission policy pilotboat-approver-identity is not enforced "
                       f"after {timeout:.0f}s")


@pytest.fixture(scope="session")
def kube_api(kubeconfig: Path) -> Iterator[kubernetes.client.ApiClient]:
    api = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
    kube = Kube(api, field_manager="pilotboat-tests")
    names = []
    for path in sorted((REPO / "crds").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        kube.apply(crd)
        names.append(crd["metadata"]["name"])
    _wait_established(kube, names)
    # Installed with the CRDs: the admission policies that make identity the API server's.
    policies = REPO / "manifests" / "crds" / "pilotboat-admission-policies.yaml"
    for doc in yaml.safe_load_all(policies.read_text()):
        kube.apply(doc)
    _wait_enforced(api)
    yield api
    api.close()


# The namespace every test operator (`pilotboat run` without --operator-namespace) reads its
# platform Secrets in: DatabaseServer admin and CA Secrets, owner credentials.
OPERATOR_NAMESPACE = "pilotboat-system"


@pytest.fixture(scope="session")
def kube(kube_api: kubernetes.client.ApiClient) -> Kube:
    kube = Kube(kube_api, field_manager="pilotboat-tests")
    if kube.get("Namespace", None, OPERATOR_NAMESPACE) is None:
        try:
            kube.create({"apiVersion": "v1", "kind": "Namespace",
                         "metadata": {"name": OPERATOR_NAMESPACE}})  # fmt: skip
        except kubernetes.client.exceptions.ApiException as exc:
            if exc.status != 409:  # another session made it meanwhile
                raise
    return kube


# The shared operator watches only this session's t<id>-* namespaces (so two test sessions
# on one cluster never act on each other's objects); tests that run an operator of their
# own (to crash it on purpose) use x<id>-* namespaces, which only that operator sees.
SESSION = secrets.token_hex(2)
SHARED_OPERATOR_NAMESPACES = f"t{SESSION}-*"


def _make_namespace(kube: Kube, request: pytest.FixtureRequest, prefix: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{prefix}{SESSION}-{slug}"[:58].rstrip("-") + f"-{secrets.token_hex(2)}"
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": {"pilotboat.dev/test": "true"}},
        }
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the ServiceAccount controller must have run
        if _has_default_sa(kube, name):
            break
        time.sleep(0.2)
    return name


@pytest.fixture
def namespace(kube: Kube, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace that the shared operator watches."""
    name = _make_namespace(kube, request, "t")
    yield name
    kube.delete("Namespace", None, name)


@pytest.fixture
def private_namespace(kube: Kube, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace that the shared operator ignores."""
    name = _make_namespace(kube, request, "x")
    yield name
    kube.delete("Namespace", None, name)


def _wait_for_admission(kube: Kube, proc: OperatorProcess, timeout: float = 120) -> None:
    """Until the shared operator's webhooks answer: it registers them after it is live, and
    the API server takes a moment to use a new configuration, so the first test of a session
    could otherwise be admitted without them. Probed with a server-side dry run (nothing is
    stored) of a Microservice whose Deployment the API server would refuse."""
    probe_ns = f"t{SESSION}-admission-probe"
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": probe_ns, "labels": {"pilotboat.dev/test": "true"}}})
    probe = {"apiVersion": "pilotboat.dev/v1alpha1", "kind": "Microservice",
             "metadata": {"name": "probe", "namespace": probe_ns},
             "spec": {"image": "localhost/pilotboat/echo:v1", "version": "v1",
                      "env": [{"name": "A=B", "value": "x"}]}}
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                kube.apply(probe, dry_run=True)
            except kubernetes.client.exceptions.ApiException as exc:
                if exc.status == 422 and "spec.env[0].name" in str(exc.body):
                    return
            assert time.monotonic() < deadline, (
                f"the shared operator's webhooks did not answer within {timeout:.0f} s:\n"
                f"{proc.log_text()[-3000:]}")
            time.sleep(1)
    finally:
        kube.delete("Namespace", None, probe_ns)


def _has_default_sa(kube: Kube, namespace: str) -> bool:
    return kube.get("ServiceAccount", namespace, "default") is not None


@pytest.fixture
def story(kube: Kube, namespace: str) -> Story:
    return Story(kube, namespace)


@pytest.fixture(scope="session")
def operator(kubeconfig: Path, kube: Kube) -> Iterator[OperatorProcess]:
    log_dir = STATE / "logs" / f"operator-{time.strftime('%Y%m%d-%H%M%S')}"
    proc = OperatorProcess(kubeconfig, log_dir, ["--namespace", SHARED_OPERATOR_NAMESPACES])
    proc.start()
    _wait_for_admission(kube, proc)
    yield proc
    proc.stop()
    # This session's DatabaseServers (cluster-scoped) and their Secrets in the operator's
    # namespace (tests/cluster/test_databases.py labels them). In `make test` the last test
    # (tests/e2e/test_stop_everything.py) has stopped the cluster, and them with it.
    session = {"pilotboat.dev/test-session": SESSION}
    try:
        servers = kube.list("DatabaseServer", None, labels=session)
        secrets_ = kube.list("Secret", OPERATOR_NAMESPACE, labels=session)
    except urllib3.exceptions.HTTPError:
        return  # the API server is gone
    # Its webhook configurations: an operator leaves them when it stops, and one for a
    # glob no Namespace owns, so no garbage collector takes them. Left on a long-lived
    # local cluster, the API server would test their namespace conditions on every
    # Microservice write from then on (and `make bench` would measure that).
    configuration = webhook_configuration_name([SHARED_OPERATOR_NAMESPACES], None)
    for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
        kube.delete(kind, None, configuration)
    for server in servers:
        kube.delete("DatabaseServer", None, server["metadata"]["name"])
    for secret in secrets_:
        kube.delete("Secret", OPERATOR_NAMESPACE, secret["metadata"]["name"])
