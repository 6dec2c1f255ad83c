"""The numbered examples (examples/0*/), each applied as its README says and brought to the
state its README documents, with real pods on the real node `pilotboat-real`.

Each test loads the example's manifests from its folder (never a copy of them) and follows
its README: every command of the README's ``sh`` blocks is taken, in order, either run as
written (``kubectl …`` with the real kubectl, ``kubectl pilotboat …`` with the `pilotboat`
program the plugin is) in the test's namespace, or done by the test where the README's
command names something of the reader's machine (the Prometheus address, the PostgreSQL
server and its password), as the example's README says. A test fails when a README command
is left out, taken out of order, or fails; when a manifest no longer applies; and when the
documented state is not reached.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from tests.cluster.test_databases import SESSION_LABELS, admin_secret, secret_values
from tests.cluster.test_real_node import NODE, real_node  # noqa: F401 (a fixture: skips without the node)
from tests.conftest import STATE
from tests.fixtures.postgres import PostgresServer
from tests.fixtures.prometheus import LocalPrometheus
from tests.story import Story

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("operator", "real_node")]

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
PILOTBOAT = Path(sys.executable).parent / "pilotboat"
KUBECTL = STATE / "bin" / "kubectl"
SHORT_NAMES = {"msvc": "Microservice", "smig": "SchemaMigration", "odb": "OwnedDatabase",
               "featureflag": "FeatureFlag", "pod": "Pod"}  # fmt: skip


@dataclass
class Example:
    """One numbered example: its manifests, and the commands of its README in order.

    `take` and `run` consume the README's commands one by one, so a test that skips a
    command, or takes one out of order, fails; `finish` fails while any is left."""

    folder: Path
    story: Story
    kubeconfig: Path
    commands: list[str] = field(init=False)
    taken: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.commands = readme_commands(self.folder / "README.md")

    def manifests(self, filename: str) -> list[dict[str, Any]]:
        text = (self.folder / filename).read_text()
        return [doc for doc in yaml.safe_load_all(text) if doc]

    def take(self, command: str) -> str:
        """The README's next command, which must start with `command`."""
        assert self.taken < len(self.commands), (
            f"{self.folder.name}/README.md has no command left; the test expected {command!r}"
        )
        line = self.commands[self.taken]
        assert line.startswith(command), (
            f"{self.folder.name}/README.md: next command is {line!r}, the test expected "
            f"{command!r}"
        )
        self.taken += 1
        return line

    def apply(
        self, command: str, edit: Callable[[dict[str, Any]], None] | None = None
    ) -> list[dict[str, Any]]:
        """`kubectl apply -f FILE`: FILE's objects applied in the test's namespace, each passed
        through `edit` first (the README says what the test changes)."""
        line = self.take(command)
        args = shlex.split(line)
        assert args[:3] == ["kubectl", "apply", "-f"] and len(args) == 4, line
        objects = self.manifests(args[3])
        for obj in objects:
            if edit is not None:
                edit(obj)
            self.story.apply(obj)
        return objects

    def run(self, command: str, timeout: float = 180) -> str:
        """Run the README's next command as written, in the test's namespace; its stdout."""
        line = self.take(command)
        args = shlex.split(line)
        assert args[0] == "kubectl", line
        where = ["--kubeconfig", str(self.kubeconfig), "-n", self.story.namespace]
        argv = (
            [str(PILOTBOAT), *args[2:], *where]
            if args[1:2] == ["pilotboat"]
            else [str(KUBECTL), *args[1:], *where]
        )
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, env=env, check=False
        )
        if done.returncode != 0:
            raise AssertionError(
                f"`{line}` exited {done.returncode}: {done.stderr.strip()}\n"
                + self.describe(args)
            )
        return done.stdout

    def describe(self, args: list[str]) -> str:
        """The object a command names (`msvc/catalog`, or `msvc catalog`) and the pods of the
        namespace, for a failure to explain itself."""
        words = [a for a in args[2:] if not a.startswith("-")]
        named = words[0].split("/", 1) if words and "/" in words[0] else words[:2]
        lines = []
        if len(named) == 2 and named[0] in SHORT_NAMES:
            lines.append(self.story.describe(SHORT_NAMES[named[0]], named[1]))
        for dep in self.story.kube.list("Deployment", self.story.namespace):
            lines.append(f"deployment {dep['metadata']['name']}: "
                         f"{dep['metadata'].get('labels', {}).get('app.kubernetes.io/version')} "
                         f"spec.replicas={dep['spec'].get('replicas')} status={dep.get('status')}")
        for pod in self.story.kube.list("Pod", self.story.namespace):
            state = [
                f"{c['name']}: {next(iter(c.get('state') or {}), '?')} "
                f"{(c.get('state') or {}).get('waiting', {}).get('message', '')}"
                for c in (pod.get("status") or {}).get("containerStatuses") or []
            ]
            lines.append(f"pod {pod['metadata']['name']} on {pod['spec'].get('nodeName')}: "
                         f"{pod['status'].get('phase')} ready="
                         f"{condition(pod, 'Ready').get('status')} {state}")
        return "\n".join(lines)

    def psql(self, command: str = "psql") -> list[tuple[Any, ...]]:
        """`psql "$(kubectl get secret NAME … uri …)" -c SQL`: SQL run as the database's owner,
        with the `uri` of Secret NAME; the rows it returns (none for a statement)."""
        line = self.take(command)
        secret = re.search(r"kubectl get secret (\S+)", line)
        args = shlex.split(line)
        assert secret and "{.data.uri}" in line and args[2] == "-c", line
        uri = secret_values(self.story, secret.group(1))["uri"]
        with psycopg.connect(uri, autocommit=True) as conn:
            cursor = conn.execute(args[3].encode())
            return cursor.fetchall() if cursor.description else []

    def finish(self) -> None:
        left = self.commands[self.taken :]
        assert not left, f"{self.folder.name}/README.md commands the test did not follow: {left}"


def readme_commands(readme: Path) -> list[str]:
    """The commands of a README's ``sh`` blocks, in order: comments and blank lines left out,
    lines ending in a backslash joined to the next."""
    blocks = re.findall(r"^```sh\n(.*?)^```", readme.read_text(), flags=re.S | re.M)
    commands: list[str] = []
    pending = ""
    for block in blocks:
        for raw in block.splitlines():
            line = pending + raw.strip()
            pending = ""
            if line.endswith("\\"):
                pending = line[:-1] + " "
                continue
            line = _without_comment(line)
            if line:
                commands.append(line)
    return commands


def _without_comment(line: str) -> str:
    """`line` without a trailing comment: a `#` at its start or after a blank."""
    return re.sub(r"(^|\s)#(\s.*)?$", "", line).strip()


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return {}


def pods_of(story: Story, service: str) -> list[dict[str, Any]]:
    pods = story.kube.list("Pod", story.namespace, labels={"app.kubernetes.io/name": service})
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def example(name: str, story: Story, kubeconfig: Path) -> Example:
    return Example(EXAMPLES / name, story, kubeconfig)


def running_on_the_real_node(story: Story, service: str, version: str, count: int) -> bool:
    """Exactly `count` pods of `service` run, all of `version`, ready, on the real node."""
    pods = pods_of(story, service)
    return len(pods) == count and all(
        p["metadata"]["labels"].get("app.kubernetes.io/version") == version
        and p["spec"].get("nodeName") == NODE
        and condition(p, "Ready").get("status") == "True"
        for p in pods
    )


def assert_stable(ms: dict[str, Any] | None, version: str) -> dict[str, Any]:
    """`ms` is Healthy with `version` stable, as its Ready condition says too; its status."""
    status: dict[str, Any] = (ms or {}).get("status") or {}
    assert (status.get("phase"), status.get("stableVersion")) == ("Healthy", version), status
    ready = condition(ms, "Ready")
    assert (ready.get("status"), ready.get("reason"), ready.get("message")) == (
        "True", "Stable", f"{version} is stable"), ready  # fmt: skip
    return status


def test_01_canary_is_promoted_to_v2_by_a_person(story: Story, kubeconfig: Path) -> None:
    ex = example("01-canary", story, kubeconfig)

    ex.apply("kubectl apply -f microservice.yaml")
    ex.run("kubectl wait msvc/catalog --for=jsonpath='{.status.phase}'=Healthy")
    assert_stable(story.get("Microservice", "catalog"), "v1")
    story.wait_for("Microservice", "catalog", lambda _: running_on_the_real_node(
        story, "catalog", "v1", 4), timeout=90, what="4 ready pods of v1 on the real node")
    ex.run("kubectl patch msvc catalog")
    ex.run("kubectl wait msvc/catalog --for=jsonpath='{.status.currentStepIndex}'=3")
    ex.run("kubectl wait msvc/catalog --for=jsonpath='{.status.phase}'=Paused")

    paused = story.get("Microservice", "catalog")
    status = (paused or {})["status"]
    assert (status["phase"], status["canaryVersion"], status["canaryWeight"]) == \
        ("Paused", "v2", 50), status
    assert "waiting for `kubectl pilotboat promote`" in status["pauseReason"]
    assert condition(paused, "Paused")["status"] == "True"
    assert len([p for p in pods_of(story, "catalog")
                if p["metadata"]["labels"]["app.kubernetes.io/version"] == "v2"]) == 2

    ex.run("kubectl pilotboat promote catalog")
    ex.run("kubectl wait msvc/catalog --for=jsonpath='{.status.phase}'=Healthy")
    ex.finish()

    ms = story.get("Microservice", "catalog")
    status = assert_stable(ms, "v2")
    assert not status.get("canaryVersion") and not status.get("canaryWeight"), status
    assert condition(ms, "Progressing")["status"] == "False"
    assert condition(ms, "Paused")["status"] == "False"
    story.wait_for("Microservice", "catalog", lambda _: running_on_the_real_node(
        story, "catalog", "v2", 4), timeout=90, what="4 ready pods of v2 on the real node")


def test_02_canary_analysis_promotes_v2_on_the_signals_prometheus_reads(
    story: Story, kubeconfig: Path, prometheus: LocalPrometheus
) -> None:
    ex = example("02-canary-analysis", story, kubeconfig)

    def at_this_prometheus(obj: dict[str, Any]) -> None:  # the README: the test's Prometheus
        obj["spec"]["rollout"]["canary"]["analysis"]["prometheus"]["address"] = prometheus.url

    ex.apply("kubectl apply -f microservice.yaml", at_this_prometheus)
    ex.run("kubectl wait msvc/payments --for=jsonpath='{.status.phase}'=Healthy")
    ex.apply("kubectl apply -f traffic.yaml")
    ex.run("kubectl wait pod/payments-traffic --for=condition=Ready")
    ex.run("kubectl patch msvc payments")
    analysing = story.wait_for(
        "Microservice", "payments",
        lambda o: ((o or {}).get("status") or {}).get("currentStepIndex") == 1,
        timeout=120, what="analysing at step 2")  # fmt: skip
    assert (analysing or {})["status"]["canaryWeight"] == 50
    ex.run("kubectl wait msvc/payments --for=jsonpath='{.status.stableVersion}'=v2", timeout=300)
    ex.run("kubectl wait msvc/payments --for=jsonpath='{.status.phase}'=Healthy")
    ex.run("kubectl delete pod payments-traffic")
    ex.finish()

    ms = story.get("Microservice", "payments")
    status = assert_stable(ms, "v2")
    passed = [e["message"] for e in story.events("payments") if e["reason"] == "AnalysisPassed"]
    assert len(passed) == 1 and re.search(r"2 of [23] checks passed", passed[0]), passed
    assert "error ratio 0.0% <= 5.0%" in passed[0] and "p99 latency" in passed[0], passed
    assert not [e for e in story.events("payments") if e["reason"] == "RolledBack"]
    history = [(h["signal"], h["verdict"]) for h in status["analysis"]["history"]]
    for signal in ("errors", "latency"):  # a first interval short of requests is inconclusive
        assert history.count((signal, "Successful")) == 2, history
    assert {verdict for _, verdict in history} <= {"Successful", "Inconclusive"}, history
    story.wait_for("Microservice", "payments", lambda _: running_on_the_real_node(
        story, "payments", "v2", 2), timeout=90, what="2 ready pods of v2 on the real node")


@pytest.fixture
def databases_released(story: Story) -> Iterator[None]:
    """After the test, its OwnedDatabases deleted while the operator and the PostgreSQL
    server still run: left to the namespace's deletion, their finalizer would outlive both
    and hold the namespace in Terminating."""
    yield
    for odb in story.kube.list("OwnedDatabase", story.namespace):
        story.delete("OwnedDatabase", odb["metadata"]["name"])
        story.wait_gone("OwnedDatabase", odb["metadata"]["name"], timeout=60)


@pytest.mark.usefixtures("databases_released")
def test_03_owned_database_migration_expands_releases_and_contracts_on_approval(
    story: Story, kubeconfig: Path, postgres_server: PostgresServer
) -> None:
    ex = example("03-owned-database-migration", story, kubeconfig)

    # The README: a DatabaseServer of the test's own for its PostgreSQL and its namespace.
    server = f"{story.namespace}-pg"
    secret = admin_secret(postgres_server, f"{story.namespace}-pg-admin")

    def the_tests_server(obj: dict[str, Any]) -> None:
        obj["metadata"].update(name=server, labels=SESSION_LABELS)
        obj["spec"].update(host=postgres_server.host, port=postgres_server.port,
                           allowedNamespaces=[story.namespace])
        obj["spec"]["adminSecretRef"]["name"] = secret["metadata"]["name"]

    def on_this_server(obj: dict[str, Any]) -> None:
        obj["spec"]["serverRef"]["name"] = server

    ex.take("kubectl create secret generic pg-admin -n pilotboat-system")
    story.kube.apply(secret)
    ex.apply("kubectl apply -f server.yaml", the_tests_server)
    ex.apply("kubectl apply -f database.yaml", on_this_server)
    ex.apply("kubectl apply -f microservice.yaml")
    ex.run("kubectl wait odb/orders-db --for=condition=Ready")
    ex.run("kubectl wait msvc/orders --for=jsonpath='{.status.phase}'=Healthy")
    odb = story.get("OwnedDatabase", "orders-db")
    assert (odb or {})["status"]["phase"] == "Ready"
    ex.psql()  # orders v1's table and its first orders

    ex.apply("kubectl apply -f migration.yaml")
    ex.run("kubectl patch msvc orders")
    ex.run("kubectl wait smig/orders-customer-column --for=condition=ExpandApplied")
    mig = story.get("SchemaMigration", "orders-customer-column")
    assert [p["phase"] for p in (mig or {})["status"]["appliedPhases"]] == ["expand", "backfill"]
    assert (mig or {})["status"]["backfill"]["rowsProcessed"] == 2
    assert (mig or {})["status"]["phase"] == "Expanded"
    assert condition(mig, "OldVersionsGone")["reason"] == "OldVersionsRunning"
    ex.run("kubectl wait msvc/orders --for=jsonpath='{.status.stableVersion}'=v2")
    ex.run("kubectl wait smig/orders-customer-column --for=condition=VerifyHolds")
    waiting = story.get("SchemaMigration", "orders-customer-column")
    assert (waiting or {})["status"]["phase"] == "AwaitingContract"
    for gate in ("ExpandApplied", "OldVersionsGone", "SoakElapsed", "VerifyHolds"):
        assert condition(waiting, gate)["status"] == "True", (gate, condition(waiting, gate))
    assert condition(waiting, "Approved")["reason"] == "NotApproved"

    ex.run("kubectl pilotboat approve orders-customer-column")
    ex.run("kubectl wait smig/orders-customer-column --for=jsonpath='{.status.phase}'=Contracted")
    rows = ex.psql()
    ex.finish()

    assert rows == [(1, "Ada Lovelace"), (2, "Alan Turing")]
    mig = story.get("SchemaMigration", "orders-customer-column")
    applied = (mig or {})["status"]["appliedPhases"]
    assert [p["phase"] for p in applied] == ["expand", "backfill", "contract"]
    ready = condition(mig, "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "Contracted"), ready
    contracted = [e["message"] for e in story.events("orders-customer-column")
                  if e["reason"] == "ContractApplied"]  # fmt: skip
    assert len(contracted) == 1 and "approved by kubernetes-admin" in contracted[0], contracted
    assert "kubernetes-admin" in applied[2]["appliedBy"], applied
    assert_stable(story.get("Microservice", "orders"), "v2")
    assert running_on_the_real_node(story, "orders", "v2", 2)


def test_04_feature_flag_moves_with_the_release_and_stays_after_promotion(
    story: Story, kubeconfig: Path
) -> None:
    ex = example("04-feature-flag", story, kubeconfig)

    ex.apply("kubectl apply -f flag.yaml")
    ex.apply("kubectl apply -f microservice.yaml")
    ex.run("kubectl wait msvc/checkout --for=jsonpath='{.status.phase}'=Healthy")
    assert split_in(ex.run("kubectl get configmap checkout-flags")) == [["on", 0], ["off", 100]]
    ff = story.wait_for("FeatureFlag", "express-checkout",
                        lambda f: ((f or {}).get("status") or {}).get("served")
                        == {"checkout": {"on": 0, "off": 100}}, what="serving checkout off")
    assert (ff or {})["status"]["consumers"] == ["checkout"]

    ex.run("kubectl patch msvc checkout")
    ex.run("kubectl wait msvc/checkout --for=jsonpath='{.status.currentStepIndex}'=2")
    ex.run("kubectl wait msvc/checkout --for=jsonpath='{.status.phase}'=Paused")
    ex.run("kubectl wait featureflag/express-checkout")
    served = json.loads(ex.run("kubectl get featureflag express-checkout"))
    assert served == {"checkout": {"on": 50, "off": 50}}
    paused = story.get("Microservice", "checkout")
    assert (paused or {})["status"]["canaryWeight"] == 50
    assert condition(paused, "Paused")["status"] == "True"
    assert split_in(flags_json(story, "checkout")) == [["on", 50], ["off", 50]]

    ex.run("kubectl pilotboat promote checkout")
    ex.run("kubectl wait msvc/checkout --for=jsonpath='{.status.phase}'=Healthy")
    after = ex.run("kubectl get configmap checkout-flags")
    ex.finish()

    assert split_in(after) == [["on", 50], ["off", 50]]
    status = assert_stable(story.get("Microservice", "checkout"), "v2")
    assert [o["scope"] for o in status["flagOverrides"]] == ["promoted"]
    assert [e["reason"] for e in story.events("checkout")].count("FlagSet") == 1


def flags_json(story: Story, service: str) -> str:
    cm = story.get("ConfigMap", f"{service}-flags")
    return str((cm or {})["data"]["flags.json"])


def split_in(flags_file: str, key: str = "express-checkout") -> Any:
    """The fractional split of flag `key` in a flags.json."""
    return json.loads(flags_file)["flags"][key]["targeting"]["fractional"]


def test_every_numbered_example_is_followed_here_and_passes_the_linter(kubeconfig: Path) -> None:
    folders = sorted(p.name for p in EXAMPLES.glob("[0-9][0-9]-*") if p.is_dir())
    followed = {name.split("_")[1] for name in globals() if re.match(r"test_\d\d_", name)}
    assert folders and {f[:2] for f in folders} == followed, (folders, followed)
    linted = subprocess.run([str(PILOTBOAT), "lint", *(str(EXAMPLES / f) for f in folders)],
                            capture_output=True, text=True, check=False)  # fmt: skip
    assert linted.returncode == 0, linted.stdout + linted.stderr
    assert linted.stdout.strip().endswith("0 problem(s)"), linted.stdout
