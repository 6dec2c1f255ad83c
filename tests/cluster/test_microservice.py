"""The Microservice reconciler against the real local control plane (pods on KWOK nodes)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from click.testing import CliRunner

from pilotboat import API_VERSION
from pilotboat.adapters.kube import Kube
from pilotboat.cli.main import main as cli
from pilotboat.testing import OperatorProcess
from tests.manifests import microservice
from tests.story import Story

pytestmark = pytest.mark.usefixtures("operator")


def _ready_pods(story: Story, name: str, version: str) -> list[dict[str, Any]]:
    pods = story.kube.list(
        "Pod",
        story.namespace,
        labels={"app.kubernetes.io/name": name, "app.kubernetes.io/version": version},
    )
    return [
        p
        for p in pods
        if p.get("status", {}).get("phase") == "Running"
        and not p["metadata"].get("deletionTimestamp")
        and any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in p.get("status", {}).get("conditions", []) or []
        )
    ]


def test_a_microservice_gets_a_deployment_a_service_and_ready_pods(story: Story) -> None:
    story.given(microservice("catalog", version="v1", replicas=3))

    ms = story.wait_condition("Microservice", "catalog", "Ready", timeout=90)

    assert ms["status"]["observedGeneration"] == ms["metadata"]["generation"]
    assert ms["status"]["phase"] == "Healthy"
    assert ms["status"]["stableVersion"] == "v1"
    assert ms["status"]["readyReplicas"] == 3
    deployment = story.get("Deployment", "catalog")
    assert deployment is not None
    assert deployment["metadata"]["labels"]["pilotboat.dev/track"] == "stable"
    assert deployment["metadata"]["labels"]["app.kubernetes.io/version"] == "v1"
    owner = deployment["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"]) == (
        "Microservice",
        "catalog",
        ms["metadata"]["uid"],
    )
    replicasets = story.kube.list(
        "ReplicaSet", story.namespace, labels={"app.kubernetes.io/name": "catalog"}
    )
    assert len(replicasets) == 1
    assert len(_ready_pods(story, "catalog", "v1")) == 3
    service = story.get("Service", "catalog")
    assert service is not None
    assert service["spec"]["selector"] == {"app.kubernetes.io/name": "catalog"}
    assert service["spec"]["ports"][0]["port"] == 8080
    reasons = {e["reason"] for e in story.events("catalog")}
    assert {"DeploymentCreated", "ServiceCreated", "Stable"} <= reasons, reasons


def test_children_follow_replicas_and_image_changes(story: Story) -> None:
    story.given(microservice("inventory", version="v1", replicas=2))
    story.wait_condition("Microservice", "inventory", "Ready", timeout=90)

    story.patch("Microservice", "inventory", {"spec": {"replicas": 4}})
    ms = story.wait_condition("Microservice", "inventory", "Ready", timeout=90)
    assert ms["status"]["readyReplicas"] == 4
    assert len(_ready_pods(story, "inventory", "v1")) == 4

    story.patch(
        "Microservice",
        "inventory",
        {"spec": {"version": "v2", "image": "localhost/pilotboat/echo:v2"}},
    )
    ms = story.wait_for(
        "Microservice",
        "inventory",
        lambda o: bool(
            o
            and o.get("status", {}).get("stableVersion") == "v2"
            and o["status"].get("observedGeneration") == o["metadata"]["generation"]
        ),
        timeout=120,
        what="stable at v2",
    )
    assert ms is not None and ms["status"]["phase"] == "Healthy"
    container = story.get("Deployment", "inventory")["spec"]["template"]["spec"]["containers"][0]  # type: ignore[index]
    assert container["image"] == "localhost/pilotboat/echo:v2"
    story.wait_for(
        "Deployment",
        "inventory",
        lambda _: (
            len(_ready_pods(story, "inventory", "v2")) == 4
            and not _ready_pods(story, "inventory", "v1")
        ),
        timeout=120,
        what="running 4 pods of v2 and none of v1",
    )


def test_deleting_a_microservice_removes_its_children(story: Story) -> None:
    story.given(microservice("shipping", replicas=2))
    story.wait_condition("Microservice", "shipping", "Ready", timeout=90)

    story.delete("Microservice", "shipping")

    story.wait_gone("Microservice", "shipping")
    story.wait_gone("Deployment", "shipping", timeout=90)
    story.wait_gone("Service", "shipping", timeout=90)
    story.wait_for(
        "Pod",
        "-",
        lambda _: (
            not story.kube.list(
                "Pod", story.namespace, labels={"app.kubernetes.io/name": "shipping"}
            )
        ),
        timeout=90,
        what="without pods",
    )


def test_a_deleted_child_is_recreated(story: Story) -> None:
    story.given(microservice("notifications", replicas=1))
    story.wait_condition("Microservice", "notifications", "Ready", timeout=90)
    uid = story.get("Deployment", "notifications")["metadata"]["uid"]  # type: ignore[index]

    story.kube.delete("Deployment", story.namespace, "notifications")

    new = story.wait_for(
        "Deployment",
        "notifications",
        lambda d: bool(
            d and d["metadata"]["uid"] != uid and not d["metadata"].get("deletionTimestamp")
        ),
        timeout=60,
        what="recreated",
    )
    assert new is not None


# Who may write the spec of the objects a team declares: the tests' own applier (it stands in
# for Git, kubectl apply, Argo CD) and the release commands (`kubectl pilotboat promote|abort|
# retry`, manager kubectl-pilotboat; they write status only, but they are the user's). The
# operator writes with manager `pilotboat`, and Kopf under it as `kopf`: neither may own a
# field of spec. A write without a field manager is named after the client's User-Agent, so
# a spec merge-patched with the bare kubernetes client shows up as `OpenAPI-Generator` (or
# `python-requests`, `kopf`, ...): any of them fails this test. Proven by adding to it,
# after the release, `CustomObjectsApi(story.kube.api_client).patch_namespaced_custom_object(
# "pilotboat.dev", "v1alpha1", story.namespace, "microservices", "payments",
# {"spec": {"replicas": 3}})`.
USER_MANAGERS = {"pilotboat-tests", "kubectl-pilotboat"}


def _fields(entry: dict[str, Any]) -> set[str]:
    return set(entry.get("fieldsV1") or {})


def spec_writers(obj: dict[str, Any]) -> dict[str, list[str]]:
    """Manager → the spec fields (top level) it owns, over every managedFields entry."""
    writers: dict[str, list[str]] = {}
    for entry in obj["metadata"].get("managedFields") or []:
        spec = (entry.get("fieldsV1") or {}).get("f:spec")
        if spec is not None:
            owned = sorted(k.removeprefix("f:") for k in spec if k != ".")
            writers.setdefault(entry["manager"], []).extend(owned)
    return writers


def assert_only_users_wrote_spec(obj: dict[str, Any]) -> None:
    what = f"{obj['kind']} {obj['metadata']['name']}"
    writers = spec_writers(obj)
    assert "pilotboat-tests" in writers, f"{what}: the applier owns none of spec? {writers}"
    others = {m: fields for m, fields in writers.items() if m not in USER_MANAGERS}
    assert not others, f"{what}: spec fields owned by managers other than the user's: {others}"
    for entry in obj["metadata"].get("managedFields") or []:
        if entry["manager"] in USER_MANAGERS or entry.get("subresource") == "status":
            continue
        # the operator (pilotboat) writes status only; Kopf may keep its finalizer and
        # annotations in metadata
        assert entry["manager"] != "pilotboat", f"{what}: pilotboat wrote besides status: {entry}"
        assert _fields(entry) <= {"f:metadata"}, f"{what}: written besides metadata: {entry}"


def test_the_operator_never_writes_the_spec(story: Story, kubeconfig: Any) -> None:
    """A whole release, with a RolloutPolicy and a FeatureFlag it moves, promoted with the
    CLI: afterwards only the user's managers own any field of the three objects' specs, and
    the operator's entries are all on the status subresource."""
    policy = {
        "apiVersion": API_VERSION,
        "kind": "RolloutPolicy",
        "metadata": {"name": "steady"},
        "spec": {
            "steps": [
                {"setWeight": 50},
                {"setFlag": {"flag": "express", "variants": {"on": 50, "off": 50}}},
                {"pause": {"untilPromoted": True}},
            ]
        },
    }
    flag = {
        "apiVersion": API_VERSION,
        "kind": "FeatureFlag",
        "metadata": {"name": "express"},
        "spec": {"variants": {"on": True, "off": False}, "defaultVariant": "off"},
    }

    def payments(version: str) -> dict[str, Any]:
        return microservice("payments", version=version, replicas=2, flags=["express"],
                            rollout={"rolloutPolicyRef": "steady"})

    story.given(policy, flag, payments("v1"))
    story.wait_condition("Microservice", "payments", "Ready", timeout=90)
    story.apply(payments("v2"))
    def status(obj: dict[str, Any] | None) -> dict[str, Any]:
        return (obj or {}).get("status") or {}

    story.wait_for("Microservice", "payments", lambda o: status(o).get("phase") == "Paused",
                   timeout=90, what="paused at the policy's last step")
    promoted = CliRunner().invoke(
        cli, ["promote", "payments", "-n", story.namespace, "--kubeconfig", str(kubeconfig)]
    )
    assert promoted.exit_code == 0, promoted.output
    story.wait_for("Microservice", "payments",
                   lambda o: (status(o).get("phase"), status(o).get("stableVersion"))
                   == ("Healthy", "v2"), timeout=120, what="promoted to v2")
    ff = story.wait_for("FeatureFlag", "express", lambda f: bool(status(f).get("consumers")),
                        what="with its consumer in status")

    ms = story.get("Microservice", "payments")
    assert ms is not None and ff is not None
    managers = {(e["manager"], e.get("subresource")) for e in ms["metadata"]["managedFields"]}
    assert ("pilotboat", "status") in managers, managers  # the operator did write, as itself
    assert ("kubectl-pilotboat", "status") in managers, managers  # and so did the CLI
    for obj in (ms, story.get("RolloutPolicy", "steady"), ff):
        assert obj is not None
        assert_only_users_wrote_spec(obj)


def test_logs_are_json_with_the_object_and_a_correlation_id(
    story: Story, operator: OperatorProcess
) -> None:
    story.given(microservice("orders", replicas=1))
    story.wait_condition("Microservice", "orders", "Ready", timeout=90)

    records = [
        r
        for r in operator.log_records()
        if (r.get("object") or {}).get("name") == "orders"
        and (r.get("object") or {}).get("namespace") == story.namespace
    ]
    assert records, "no log line names the object"
    assert all(
        r.get("correlation_id")
        for r in records
        if r.get("logger") == "pilotboat" or "correlation_id" in r
    )
    assert any(r.get("reason") == "DeploymentCreated" and r.get("correlation_id") for r in records)


@pytest.mark.parametrize(
    "crash_at",
    ["microservice.after-deployment", "microservice.after-service", "microservice.before-status"],
)
def test_a_crash_at_any_point_converges_without_duplicates(
    kube: Kube, private_namespace: str, kubeconfig: Any, tmp_path: Any, crash_at: str
) -> None:
    story = Story(kube, private_namespace)
    own = OperatorProcess(kubeconfig, tmp_path, ["--namespace", private_namespace])
    own.start(env={"PILOTBOAT_CRASH_AT": crash_at}, wait_live=False)
    story.given(microservice("catalog", replicas=2))

    assert own.wait_exit(timeout=60) == 86, own.log_text()[-3000:]
    own.start()
    try:
        ms = story.wait_condition("Microservice", "catalog", "Ready", timeout=90)
        time.sleep(2)  # room for any duplicate work to show
    finally:
        own.stop()

    assert ms["status"]["readyReplicas"] == 2
    assert len(kube.list("Deployment", private_namespace)) == 1
    assert len(kube.list("ReplicaSet", private_namespace)) == 1
    assert len(kube.list("Service", private_namespace)) == 1
    created = [e for e in story.events("catalog") if e["reason"] == "DeploymentCreated"]
    assert len(created) == 1, [e["message"] for e in created]
