"""The operator's own observability: /metrics in Prometheus' format after a release whose
analysis could not measure (paused, then aborted) and a migration held by its gates, and
/healthz, /readyz."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from kubernetes.client.exceptions import ApiException
from prometheus_client.parser import text_string_to_metric_families

from pilotboat.adapters.kube import Kube
from pilotboat.handlers.webhooks import webhook_configuration_name
from pilotboat.testing import OperatorProcess
from tests.cluster.test_migrations import given_database_with_orders, schema_migration, workload
from tests.cluster.test_query_admission import TYPO
from tests.fixtures.postgres import PostgresServer
from tests.manifests import microservice
from tests.story import Story


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def observed_operator(kubeconfig: Path, private_namespace: str, kube: Kube, tmp_path: Path
                      ) -> Iterator[tuple[OperatorProcess, str]]:
    port = _free_port()
    proc = OperatorProcess(kubeconfig, tmp_path, [
        "--namespace", private_namespace, "--metrics-port", str(port),
        "--metrics-address", "127.0.0.1"])
    proc.start()
    yield proc, f"http://127.0.0.1:{port}"
    proc.stop()
    name = webhook_configuration_name([private_namespace], None)
    kube.delete("MutatingWebhookConfiguration", None, name)
    kube.delete("ValidatingWebhookConfiguration", None, name)


def samples(base: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = httpx.get(f"{base}/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(response.text)
            for s in family.samples}


def value(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
          ) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def test_metrics_after_a_paused_and_aborted_release_and_a_held_migration(
    observed_operator: tuple[OperatorProcess, str], kube: Kube, private_namespace: str,
    postgres_server: PostgresServer,
) -> None:
    _, base = observed_operator
    assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200
    assert httpx.get(f"{base}/readyz", timeout=5).status_code == 200
    assert httpx.get(f"{base}/nothing", timeout=5).status_code == 404
    build = [dict(labels) for (name, labels), v in samples(base).items()
             if name == "pilotboat_build_info" and v == 1]
    assert len(build) == 1 and build[0]["api_version"] == "pilotboat.dev/v1alpha1", build
    assert build[0]["version"] not in ("", "unknown"), build
    story = Story(kube, private_namespace)

    # A release whose analysis cannot reach its Prometheus: an error, and a rollback.
    rollout = {"canary": {
        "steps": [{"setWeight": 50}, {"analysis": {"intervals": 2}}, {"setWeight": 100}],
        "analysis": {"interval": "1s", "consecutiveErrorLimit": 1,
                     "prometheus": {"address": "http://127.0.0.1:1"}}}}
    story.given(microservice("cart", version="v1", rollout=rollout))
    story.wait_for("Microservice", "cart", lambda o: ((o or {}).get("status") or {}).get(
        "phase") == "Healthy", timeout=90)
    story.apply(microservice("cart", version="v2", rollout=rollout))
    story.wait_for("Microservice", "cart", lambda o: ((o or {}).get("status") or {}).get(
        "phase") == "Paused", timeout=90, what="paused by its analysis")
    found = samples(base)
    assert value(found, "pilotboat_analyses_total", verdict="Error") >= 1
    assert value(found, "pilotboat_releases", phase="Paused") == 1
    assert value(found, "pilotboat_canary_weight", namespace=private_namespace,
                 service="cart") == 50
    # What the canary receives follows its ready pods: 1 of 2 once the canary pod is ready
    deadline = time.monotonic() + 30
    while value(samples(base), "pilotboat_canary_actual_weight", namespace=private_namespace,
                service="cart") != 50:
        assert time.monotonic() < deadline, samples(base)
        time.sleep(0.5)
    story.patch_status_command("cart", "abort")
    story.wait_for("Microservice", "cart", lambda o: ((o or {}).get("status") or {}).get(
        "phase") == "Degraded", timeout=90, what="rolled back")

    # A migration whose contract waits for the old version to go, then for an approval.
    given_database_with_orders(story, postgres_server)
    story.given(workload("v1", 1))
    story.wait_for("Deployment", "orders-v1",
                   lambda d: ((d or {}).get("status") or {}).get("readyReplicas") == 1)
    story.given(schema_migration())
    story.wait_for("SchemaMigration", "customer-column",
                   lambda o: ((o or {}).get("status") or {}).get("phase") == "Expanded")
    story.given(workload("v2", 1), workload("v1", 0))
    story.wait_for("SchemaMigration", "customer-column",
                   lambda o: ((o or {}).get("status") or {}).get("phase") == "AwaitingContract",
                   timeout=60)
    found = samples(base)
    assert value(found, "pilotboat_reconciles_total", kind="Microservice", result="ok") >= 3
    assert value(found, "pilotboat_reconciles_total", kind="SchemaMigration", result="ok") >= 2
    # Every request of the operator's client is counted: reads answered, writes accepted
    assert value(found, "pilotboat_api_requests_total", method="GET", code="2xx") > 0
    assert value(found, "pilotboat_api_requests_total", method="PATCH", code="2xx") > 0
    count = value(found, "pilotboat_reconcile_duration_seconds_count", kind="Microservice")
    assert count == value(found, "pilotboat_reconcile_duration_seconds_bucket",
                          kind="Microservice", le="+Inf") > 0
    assert value(found, "pilotboat_releases", phase="Degraded") == 1
    assert value(found, "pilotboat_releases", phase="Healthy") == 0
    # One series per Microservice, for its phase now (the earlier phases' series are gone)
    assert value(found, "pilotboat_release_phase", namespace=private_namespace, service="cart",
                 phase="Degraded") == 1
    assert not [labels for (name, labels) in found if name == "pilotboat_release_phase"
                and ("service", "cart") in labels and ("phase", "Degraded") not in labels]
    assert value(found, "pilotboat_canary_weight", namespace=private_namespace,
                 service="cart") == 0
    assert value(found, "pilotboat_analyses_total", verdict="Error") >= 1
    assert value(found, "pilotboat_migration_gates_blocked", gate="Approved",
                 reason="NotApproved") == 1
    # ... and per migration, so the approval alert can name it.
    assert value(found, "pilotboat_migration_blocked", namespace=private_namespace,
                 migration="customer-column", gate="Approved", reason="NotApproved") == 1
    phases = [dict(labels)["phase"] for (name, labels), v in found.items()
              if name == "pilotboat_migration_phase" and v == 1
              and ("migration", "customer-column") in labels]
    assert len(phases) == 1 and phases[0] != "Expanded", phases  # its phase now, one series
    assert value(found, "pilotboat_migration_phase_duration_seconds_count",
                 phase="Expanded") == 1

    story.delete("Microservice", "cart")
    story.wait_gone("Microservice", "cart")
    story.wait_for("Microservice", "cart", lambda _: value(
        samples(base), "pilotboat_releases", phase="Degraded") == 0, what="forgotten")


def _until_the_webhooks_are_called(base: str, story: Story) -> None:
    """Until the API server calls this operator's webhooks (their configuration is new)."""
    deadline, version = time.monotonic() + 60, 0
    while _reviews(base)["microservice-children"] == 0:
        assert time.monotonic() < deadline, "the children webhook was never called"
        version += 1
        story.apply(microservice("warm", version=f"v{version}", replicas=0))
        time.sleep(0.5)


@pytest.fixture
def called(
    observed_operator: tuple[OperatorProcess, str], kube: Kube, private_namespace: str,
) -> tuple[str, Story]:
    """The operator's metrics address and a story, once the API server calls its webhooks."""
    _, base = observed_operator
    story = Story(kube, private_namespace)
    _until_the_webhooks_are_called(base, story)
    return base, story


def test_a_new_microservice_s_first_pass_takes_the_schema_migrations_admission_asked_for(
    called: tuple[str, Story],
) -> None:
    base, story = called
    story.wait_for("Microservice", "warm", lambda o: ((o or {}).get("status") or {}).get(
        "observedGeneration"), what="the warm-up's first pass")

    def lists() -> tuple[float, float]:
        found = samples(base)
        return tuple(value(found, "pilotboat_first_pass_schema_migrations_total", source=source)
                     for source in ("admission", "pass"))  # type: ignore[return-value]

    before = lists()
    story.given(microservice("fresh", version="v1", replicas=0))
    story.wait_for("Microservice", "fresh", lambda o: ((o or {}).get("status") or {}).get(
        "observedGeneration") == 1, what="its first pass")
    admission, passes = (now - then for now, then in zip(lists(), before, strict=True))
    assert (admission, passes) == (1, 0)


def _reviews(base: str) -> dict[str, float]:
    return {webhook: value(samples(base), "pilotboat_admission_review_duration_seconds_count",
                           webhook=webhook)
            for webhook in ("microservice-children", "database-claim", "microservice-queries")}


def test_a_microservice_s_webhooks_are_called_only_when_they_have_something_to_check(
    called: tuple[str, Story], kube: Kube, private_namespace: str,
) -> None:
    base, story = called

    def after(change: Callable[[], object]) -> dict[str, float]:
        before = _reviews(base)
        change()
        time.sleep(1)  # a review the API server would make is answered before the write returns
        return {webhook: n - before[webhook] for webhook, n in _reviews(base).items()}

    # A create: its children are dry-run; no database claimed and no analysis signals
    assert after(lambda: story.given(microservice("plain", replicas=0))) == {
        "microservice-children": 1, "database-claim": 0, "microservice-queries": 0}
    # Labels alone render the same children: nothing to check
    assert after(lambda: kube.merge_patch("Microservice", private_namespace, "plain", {
        "metadata": {"labels": {"team": "payments"}}})) == {
        "microservice-children": 0, "database-claim": 0, "microservice-queries": 0}
    # A spec with analysis signals and a claimed database: every check is made
    signals = {"canary": {"steps": [{"setWeight": 50}], "analysis": {
        "signals": {"errors": {"maxRatio": 0.05}}}}}
    assert after(lambda: story.apply(microservice(
        "plain", replicas=0, rollout=signals, database={"ownedDatabase": "orders"}))) == {
        "microservice-children": 1, "database-claim": 1, "microservice-queries": 1}
    # ... and a bad query is still refused, naming its field
    bad = {"canary": {"steps": [{"setWeight": 50}], "analysis": {
        "signals": {"errors": {"maxRatio": 0.05, "query": TYPO}}}}}
    with pytest.raises(ApiException) as refused:
        kube.apply(microservice("plain", replicas=0, rollout=bad) | {
            "metadata": {"name": "plain", "namespace": private_namespace}})
    assert "spec.rollout.canary.analysis.signals.errors.query" in str(refused.value.body)
