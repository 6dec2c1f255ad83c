"""The handlers' passes against the API server in memory (`pilotboat.testing.FakeKube`).

Each case runs the real handler function (`reconcile_microservice`, the flag files, an
OwnedDatabase, a MigrationApproval) on a fake that answers as the API server does
(resourceVersion, 404, 409, managedFields), and checks what the pass wrote: which objects,
with which field manager, how many status writes. The cluster tests run the same handlers
on a real API server; these run in milliseconds.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from pilotboat import API_VERSION
from pilotboat.core import reasons
from pilotboat.core.workload import (
    ANNOTATION_REVISION,
    LABEL_VERSION,
    deployment_name,
)
from pilotboat.handlers import cache, context
from pilotboat.handlers.approvals import sync_approval
from pilotboat.handlers.children import CREATE_ONLY
from pilotboat.handlers.context import Reconcile, Runtime
from pilotboat.handlers.databases import reconcile_owned_database
from pilotboat.handlers.flags import on_feature_flag_event, on_microservice_for_its_flags
from pilotboat.handlers.loop import LookAgain
from pilotboat.handlers.microservice import reconcile_microservice
from pilotboat.handlers.webhooks import rendered_children_check
from pilotboat.testing import FakeKube, Write

NS = "shop"
NOW = 1_800_000_000.0
STABLE, CANARY = deployment_name("orders", "stable"), deployment_name("orders", "canary")
STEPS = [{"setWeight": 25}, {"pause": {"untilPromoted": True}}]


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    """A fresh API server in memory, and the operator's runtime on it."""
    fake = FakeKube()
    before = context._runtime
    context.configure_runtime(Runtime(kube=fake))
    cache.children.clear()  # what an earlier test's API server held is not this one's
    cache.owners.clear()
    fake.watch(watch_feeds_the_caches)
    yield fake
    context._runtime = before
    cache.children.clear()
    cache.owners.clear()


def watch_feeds_the_caches(kind: str, obj: dict[str, Any], deleted: bool) -> None:
    """What the operator's watches keep: its labelled children, and the Microservices."""
    if kind == "Microservice":
        cache.owners.seen(kind, obj, deleted=deleted)
    elif kind in ("Deployment", "Service"):  # the cache keeps only the labelled ones
        cache.children.seen(kind, obj, deleted=deleted)


def people(kube: FakeKube) -> FakeKube:
    """The same store, written as a person's kubectl does."""
    return kube.acting_as("kubectl")


def microservice(name: str = "orders", version: str = "v1", **spec: Any) -> dict[str, Any]:
    body = {"image": f"localhost/pilotboat/echo:{version}", "version": version, "replicas": 4,
            "ports": [{"name": "http", "port": 8080}], **spec}  # fmt: skip
    return {"apiVersion": API_VERSION, "kind": "Microservice",
            "metadata": {"name": name, "namespace": NS}, "spec": body}  # fmt: skip


def reconcile(kube: FakeKube, name: str = "orders", now: float = NOW) -> list[Write]:
    """One pass over the Microservice as the API server has it now; the writes it made."""
    body = kube.get("Microservice", NS, name)
    assert body is not None
    start = len(kube.writes)
    reconcile_microservice(kube, body, Reconcile.start(kube, body), now=now)
    return kube.writes[start:]


def controller_reports(kube: FakeKube, name: str, ready: int | None = None) -> None:
    """The Deployment controller's status: every desired replica updated and ready."""
    dep = kube.get("Deployment", NS, name)
    assert dep is not None
    replicas = dep["spec"]["replicas"]
    ready = replicas if ready is None else ready
    status = {"observedGeneration": dep["metadata"]["generation"], "replicas": replicas,
              "updatedReplicas": replicas, "readyReplicas": ready, "availableReplicas": ready}
    kube.acting_as("kube-controller-manager").merge_patch(
        "Deployment", NS, name, {"status": status}, subresource="status")  # fmt: skip


def status_writes(writes: list[Write]) -> list[Write]:
    return [w for w in writes if w.subresource == "status"]


def child_writes(writes: list[Write]) -> list[tuple[str, str, str, str]]:
    return [(w.verb, w.kind, w.name, w.field_manager) for w in writes if w.subresource is None]


def status(kube: FakeKube, name: str = "orders") -> dict[str, Any]:
    body = kube.get("Microservice", NS, name)
    assert body is not None
    return dict(body.get("status") or {})


def condition(kube: FakeKube, type_: str, name: str = "orders") -> tuple[str, str]:
    found = next(c for c in status(kube, name)["conditions"] if c["type"] == type_)
    return found["status"], found["reason"]


def released(kube: FakeKube) -> None:
    """orders v1 created, stable and ready: the state a release starts from."""
    people(kube).create(microservice(rollout={"canary": {"steps": STEPS}}))
    reconcile(kube)
    controller_reports(kube, STABLE)
    reconcile(kube)
    assert status(kube)["phase"] == "Healthy"


def new_version(kube: FakeKube, version: str = "v2") -> None:
    people(kube).merge_patch("Microservice", NS, "orders", {"spec": {
        "version": version, "image": f"localhost/pilotboat/echo:{version}"}})  # fmt: skip


def command(kube: FakeKube, name: str, token: str = "t1") -> None:
    people(kube).merge_patch("Microservice", NS, "orders", {"status": {"commands": {
        name: token, f"{name}By": "alice"}}}, subresource="status")  # fmt: skip


# --- the fake answers as the API server does ----------------------------------------------


def test_the_fake_answers_404_409_and_moves_resource_versions(kube: FakeKube) -> None:
    created = kube.create({"apiVersion": "v1", "kind": "ConfigMap",
                           "metadata": {"name": "a", "namespace": NS}, "data": {"k": "1"}})
    first = created["metadata"]["resourceVersion"]
    with pytest.raises(ApiException) as conflict:
        kube.create(created)
    assert conflict.value.status == 409
    with pytest.raises(ApiException) as missing:
        kube.merge_patch("ConfigMap", NS, "b", {"data": {"k": "2"}})
    assert missing.value.status == 404
    same = kube.merge_patch("ConfigMap", NS, "a", {"data": {"k": "1"}})
    assert same["metadata"]["resourceVersion"] == first, "a write that changes nothing"
    moved = kube.merge_patch("ConfigMap", NS, "a", {"data": {"k": "2"}})
    assert int(moved["metadata"]["resourceVersion"]) > int(first)
    with pytest.raises(ApiException) as stale:
        kube.merge_patch("ConfigMap", NS, "a",
                         {"metadata": {"resourceVersion": first}, "data": {"k": "3"}})
    assert stale.value.status == 409
    assert kube.delete("ConfigMap", NS, "a") and not kube.delete("ConfigMap", NS, "a")


def test_the_fake_keeps_status_to_its_subresource_and_names_who_wrote_it(kube: FakeKube) -> None:
    people(kube).create(microservice())
    people(kube).merge_patch("Microservice", NS, "orders", {"status": {"phase": "Degraded"}})
    assert status(kube) == {}, "status goes through the status subresource only"
    people(kube).merge_patch("Microservice", NS, "orders", {"status": {"phase": "Degraded"}},
                             subresource="status")  # fmt: skip
    body = kube.get("Microservice", NS, "orders")
    assert body is not None and body["metadata"]["generation"] == 1
    managers = {m["manager"]: m["fieldsV1"] for m in body["metadata"]["managedFields"]
                if m.get("subresource") == "status"}  # fmt: skip
    assert managers == {"kubectl": {"f:status": {"f:phase": {}}}}


# --- reconcile_microservice ----------------------------------------------------------------


def test_create_writes_the_stable_deployment_and_the_service_as_pilotboat(kube: FakeKube) -> None:
    people(kube).create(microservice())
    writes = reconcile(kube)
    assert sorted(child_writes(writes)) == [  # no pods yet: written side by side
        ("apply", "Deployment", STABLE, "pilotboat"),
        ("apply", "Service", "orders", "pilotboat"),
    ]
    assert [(w.verb, w.field_manager) for w in status_writes(writes)] == [("patch", "pilotboat")]
    stable = kube.get("Deployment", NS, STABLE)
    assert stable is not None
    assert stable["spec"]["replicas"] == 4
    assert stable["metadata"]["labels"][LABEL_VERSION] == "v1"
    assert stable["metadata"]["ownerReferences"][0]["name"] == "orders"
    assert status(kube)["phase"] == "Progressing"
    assert {e["reason"] for e in kube.events} >= {"ServiceCreated", "DeploymentCreated"}


class _Meeting(FakeKube):
    """A fake whose Deployment and Service applies each wait (up to 5 s) for the other to
    have begun: written one after the other, neither meets the other."""

    def __init__(self) -> None:
        super().__init__()
        self.arrived = {"Deployment": threading.Event(), "Service": threading.Event()}
        self.met: dict[str, bool] = {}

    def apply(self, obj: dict[str, Any], **kw: Any) -> dict[str, Any]:
        kind = obj["kind"]
        if kind in self.arrived and not kw.get("dry_run"):
            self.arrived[kind].set()
            other = "Service" if kind == "Deployment" else "Deployment"
            self.met[kind] = self.arrived[other].wait(timeout=5)
        return super().apply(obj, **kw)


def test_a_first_deploy_writes_its_deployment_and_service_side_by_side() -> None:
    """No pods exist yet, so no traffic must move first: the pass makes the two writes at
    once, one round trip to the API server instead of two."""
    fake = _Meeting()
    before = context._runtime
    context.configure_runtime(Runtime(kube=fake))
    cache.children.clear()
    cache.owners.clear()
    fake.watch(watch_feeds_the_caches)
    try:
        people(fake).create(microservice())
        reconcile(fake)
        assert fake.met == {"Deployment": True, "Service": True}
    finally:
        context._runtime = before
        cache.children.clear()
        cache.owners.clear()


@pytest.mark.parametrize("refused", ["Deployment", "Service", "both"])
def test_a_first_deploy_refused_on_either_side_names_the_child_in_the_plans_order(
    kube: FakeKube, refused: str
) -> None:
    people(kube).create(microservice())
    if refused in ("Deployment", "both"):
        kube.refuse("Deployment", STABLE, 422, "spec.template: Invalid value")
    if refused in ("Service", "both"):
        kube.refuse("Service", "orders", 422, "spec.ports: Invalid value")
    writes = reconcile(kube)
    assert condition(kube, reasons.READY) == ("False", reasons.CHILD_REJECTED)
    named = "Deployment" if refused in ("Deployment", "both") else "Service"
    assert f"the {named} " in status(kube)["message"], status(kube)["message"]
    assert (kube.get("Deployment", NS, STABLE) is None) == (refused != "Service")
    assert len(status_writes(writes)) == 1


def migration_for(service: str, version: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION, "kind": "SchemaMigration",
        "metadata": {"name": "add-total", "namespace": NS},
        "spec": {"database": "orders-db", "requiredBy": {"service": service, "version": version},
                 "expand": {"sql": "ALTER TABLE orders ADD COLUMN total bigint"}},
    }  # fmt: skip


def test_a_migration_the_first_version_requires_holds_the_first_deploy(kube: FakeKube) -> None:
    """The first pass asks for the SchemaMigrations at its start, beside the children: what
    it finds there still holds the release."""
    people(kube).create(migration_for("orders", "v1"))
    people(kube).create(microservice())
    writes = reconcile(kube)
    assert child_writes(writes) == []
    assert "SchemaMigration add-total: expand not applied yet" in status(kube)["message"]
    kube.acting_as("pilotboat").merge_patch("SchemaMigration", NS, "add-total", {"status": {
        "appliedPhases": [{"phase": "expand"}]}}, subresource="status")  # fmt: skip
    reconcile(kube)  # no longer a first pass: listed when the release starts, as before
    assert kube.get("Deployment", NS, STABLE) is not None


def test_a_pass_with_nothing_new_writes_nothing(kube: FakeKube) -> None:
    released(kube)
    assert reconcile(kube) == []


def test_a_version_change_starts_the_canary_at_the_first_steps_weight(kube: FakeKube) -> None:
    released(kube)
    new_version(kube)
    started = reconcile(kube)  # the canary is created at the first step's weight at once
    assert child_writes(started) == [("apply", "Deployment", CANARY, "pilotboat")]
    assert (status(kube)["canaryWeight"], status(kube)["currentStepIndex"]) == (25, 0)
    assert reasons.ROLLOUT_STARTED in [e["reason"] for e in kube.events]
    writes = reconcile(kube)  # the start asks to be looked at again at once: the step waits
    assert child_writes(writes) == []
    canary = kube.get("Deployment", NS, CANARY)
    assert canary is not None
    assert canary["spec"]["replicas"] == 1, "25 % of 4 replicas"
    assert canary["metadata"]["labels"][LABEL_VERSION] == "v2"
    stable = kube.get("Deployment", NS, STABLE)
    assert stable is not None and stable["metadata"]["labels"][LABEL_VERSION] == "v1"
    now = status(kube)
    assert (now["phase"], now["canaryWeight"], now["currentStepIndex"]) == ("Progressing", 25, 0)
    assert [len(status_writes(p)) for p in (started, writes)] == [1, 1]


def test_a_foreign_child_is_refused_and_never_written(kube: FakeKube) -> None:
    people(kube).create({"apiVersion": "apps/v1", "kind": "Deployment",
                         "metadata": {"name": STABLE, "namespace": NS},
                         "spec": {"replicas": 1}})  # fmt: skip
    people(kube).create(microservice())
    before = len(kube.writes)
    with pytest.raises(LookAgain):  # the first pass asks nothing: its create-only write is refused
        reconcile(kube)
    assert [(w.verb, w.kind) for w in kube.writes[before:]] in (
        [], [("apply", "Service"), ("delete", "Service")],  # the Service went beside it
    )
    assert kube.get("Service", NS, "orders") is None, "nothing of the pass is left"
    writes = reconcile(kube)
    assert child_writes(writes) == []
    assert condition(kube, reasons.READY) == ("False", reasons.CHILD_NOT_OWNED)
    foreign = kube.get("Deployment", NS, STABLE)
    assert foreign is not None and foreign["spec"] == {"replicas": 1}
    assert [(e["reason"], e["type"]) for e in kube.events] == [
        (reasons.CHILD_NOT_OWNED, "Warning")
    ]


def test_a_first_pass_asks_for_no_child_and_only_creates(kube: FakeKube) -> None:
    """A new Microservice's children do not exist: its first pass reads none of them and
    writes each with a server-side apply that only creates (a resourceVersion no object
    has), so a name taken meanwhile is refused by the API server, never written over."""
    people(kube).create(microservice())
    asked = gets(kube)
    applied: list[dict[str, Any]] = []
    apply = kube.apply

    def recording(obj: dict[str, Any], **kw: Any) -> dict[str, Any]:
        applied.append(obj)
        return apply(obj, **kw)

    kube.apply = recording  # type: ignore[method-assign]
    writes = reconcile(kube)
    assert [key for key in asked if key[0] in ("Deployment", "Service")] == []
    assert sorted(child_writes(writes)) == [("apply", "Deployment", STABLE, "pilotboat"),
                                            ("apply", "Service", "orders", "pilotboat")]
    assert {o["kind"]: o["metadata"]["resourceVersion"] for o in applied} == {
        "Deployment": CREATE_ONLY, "Service": CREATE_ONLY}
    assert status(kube)["observedGeneration"] == 1
    asked.clear()
    reconcile(kube)  # a later pass asks for what the cache lacks, as before
    assert ("Deployment", CANARY) in asked


def gets(kube: FakeKube) -> list[tuple[str, str]]:
    """Record every GET the handlers make from now on, as (kind, name)."""
    asked: list[tuple[str, str]] = []
    read = kube.get

    def get(kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        asked.append((kind, name))
        return read(kind, namespace, name)

    kube.get = get  # type: ignore[method-assign]
    return asked


def test_a_child_found_absent_is_not_asked_for_again_on_every_pass(kube: FakeKube) -> None:
    released(kube)  # its passes found no canary
    asked = gets(kube)
    reconcile(kube)
    reconcile(kube)
    assert ("Deployment", CANARY) not in asked
    new_version(kube)
    asked.clear()
    writes = reconcile(kube)  # creating it: not asked, written create-only
    assert ("Deployment", CANARY) not in asked
    assert child_writes(writes) == [("apply", "Deployment", CANARY, "pilotboat")]


def test_a_foreign_child_made_after_the_last_pass_is_refused_and_never_written(
    kube: FakeKube,
) -> None:
    """No watch event tells of an object without the operator's label: the canary found
    absent passes ago is created by a write that only creates, which the API server refuses."""
    released(kube)
    people(kube).create({"apiVersion": "apps/v1", "kind": "Deployment",
                         "metadata": {"name": CANARY, "namespace": NS},
                         "spec": {"replicas": 1}})  # fmt: skip
    new_version(kube)
    before = len(kube.writes)
    with pytest.raises(LookAgain):
        reconcile(kube)
    assert kube.writes[before:] == []  # neither the canary nor status
    writes = reconcile(kube)
    assert child_writes(writes) == []
    assert condition(kube, reasons.READY) == ("False", reasons.CHILD_NOT_OWNED)
    foreign = kube.get("Deployment", NS, CANARY)
    assert foreign is not None and foreign["spec"] == {"replicas": 1}


def test_events_posted_aside_are_all_posted_before_the_status_they_explain(
    kube: FakeKube,
) -> None:
    """The operator posts a pass's Events on other threads while the pass goes on; the
    status write waits for them, so `kubectl describe` never shows a status unexplained."""
    order: list[str] = []
    post, patch = kube.event, kube.merge_patch

    def event(involved: dict[str, Any], **kw: Any) -> None:
        time.sleep(0.05)  # an API server taking its time
        order.append(f"event {kw['reason']} on {threading.current_thread().name}")
        post(involved, **kw)

    def merge_patch(kind: str, *args: Any, **kw: Any) -> dict[str, Any]:
        order.append(f"status of {kind}" if kw.get("subresource") == "status" else "patch")
        return patch(kind, *args, **kw)

    kube.event = event  # type: ignore[method-assign]
    kube.merge_patch = merge_patch  # type: ignore[method-assign]
    people(kube).create(microservice())
    body = kube.get("Microservice", NS, "orders")
    assert body is not None
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="events") as poster:
        rc = Reconcile.start(kube, body, poster=poster)
        reconcile_microservice(kube, body, rc, now=NOW)
    events = [o for o in order if o.startswith("event")]
    assert len(events) == 3 and all(" on events_" in e for e in events), order
    assert order[-1] == "status of Microservice", order


def test_promote_past_the_pause_makes_stable_run_the_new_revision(kube: FakeKube) -> None:
    released(kube)
    new_version(kube)
    reconcile(kube)  # the canary starts
    reconcile(kube)  # at 25 %
    controller_reports(kube, CANARY)
    reconcile(kube, now=NOW + 1)  # the weight reached: on to the pause
    reconcile(kube, now=NOW + 1)
    assert (status(kube)["phase"], status(kube)["currentStepIndex"]) == ("Paused", 1)
    command(kube, "promote")
    passes = [reconcile(kube, now=NOW + 2)]  # past the pause: all steps passed
    assert status(kube)["lastCommand"]["name"] == "promote"
    passes.append(reconcile(kube, now=NOW + 3))  # promoting
    canary = kube.get("Deployment", NS, CANARY)
    assert canary is not None
    revision = canary["metadata"]["annotations"][ANNOTATION_REVISION]
    stable = kube.get("Deployment", NS, STABLE)
    assert stable is not None
    assert stable["metadata"]["annotations"][ANNOTATION_REVISION] == revision
    assert (stable["metadata"]["labels"][LABEL_VERSION], stable["spec"]["replicas"]) == ("v2", 4)
    controller_reports(kube, STABLE)
    for second in range(4, 10):
        passes.append(reconcile(kube, now=NOW + second))
        if status(kube)["phase"] == "Healthy":
            break
    assert (status(kube)["phase"], status(kube)["stableVersion"]) == ("Healthy", "v2")
    assert kube.get("Deployment", NS, CANARY) is None, "the canary goes once promoted"
    assert all(len(status_writes(p)) <= 1 for p in passes), "status at most once per pass"
    assert all(len(status_writes(p)) == 1 for p in passes if child_writes(p))


def test_an_api_server_refusal_holds_the_release_with_the_field(kube: FakeKube) -> None:
    people(kube).create(microservice())
    kube.refuse("Deployment", STABLE, 422, "spec.template: Invalid value")
    writes = reconcile(kube)
    assert kube.get("Deployment", NS, STABLE) is None
    assert condition(kube, reasons.READY) == ("False", reasons.CHILD_REJECTED)
    assert "spec.template: Invalid value" in status(kube)["message"]
    assert len(status_writes(writes)) == 1


def test_gateway_routing_weights_the_route_once_the_canary_is_ready(kube: FakeKube) -> None:
    route = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
             "metadata": {"name": "orders-route", "namespace": NS},
             "spec": {"rules": [{"backendRefs": [{"name": "orders-stable", "port": 8080}]}]}}
    people(kube).create(route)
    gateway = {"gatewayAPI": {"httpRoute": "orders-route", "port": 8080}}
    people(kube).create(microservice(rollout={"canary": {"steps": STEPS,
                                                         "trafficRouting": gateway}}))
    reconcile(kube)
    assert {s["metadata"]["name"] for s in kube.list("Service", NS)} == {
        "orders", "orders-stable", "orders-canary"}  # fmt: skip
    controller_reports(kube, STABLE)
    reconcile(kube)
    new_version(kube)
    reconcile(kube)
    reconcile(kube)
    weights = kube.get("HTTPRoute", NS, "orders-route")
    assert weights is not None
    refs = weights["spec"]["rules"][0]["backendRefs"]
    assert [(r["name"], r["weight"]) for r in refs] == [("orders-stable", 100),
                                                        (CANARY, 0)]  # fmt: skip
    controller_reports(kube, CANARY)
    writes = reconcile(kube, now=NOW + 1)
    assert ("patch", "HTTPRoute", "orders-route", "pilotboat") in child_writes(writes)
    weights = kube.get("HTTPRoute", NS, "orders-route")
    assert weights is not None
    refs = weights["spec"]["rules"][0]["backendRefs"]
    assert [(r["name"], r["weight"]) for r in refs] == [("orders-stable", 75),
                                                        (CANARY, 25)]  # fmt: skip
    assert status(kube)["actualWeight"] == 25


# --- the other kinds ---------------------------------------------------------------------


def test_a_flag_edit_renders_the_services_flag_file(kube: FakeKube) -> None:
    flag = {"apiVersion": API_VERSION, "kind": "FeatureFlag",
            "metadata": {"name": "new-checkout", "namespace": NS},
            "spec": {"key": "checkout.v2", "variants": {"on": True, "off": False},
                     "defaultVariant": "off"}}  # fmt: skip
    people(kube).create(flag)
    people(kube).create(microservice("payments", flags=["new-checkout"]))
    on_feature_flag_event(body=kube.get("FeatureFlag", NS, "new-checkout"))
    cm = kube.get("ConfigMap", NS, "payments-flags")
    assert cm is not None
    assert '"checkout.v2"' in cm["data"]["flags.json"]
    assert [w.field_manager for w in kube.writes if w.kind == "ConfigMap"] == ["pilotboat"]
    written = kube.get("FeatureFlag", NS, "new-checkout")
    assert written is not None and written["status"]["consumers"] == ["payments"]


class CountingReads:
    """`kube` with its reads counted by kind."""

    def __init__(self, kube: FakeKube) -> None:
        self.kube, self.gets = kube, Counter[str]()

    def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        self.gets[kind] += 1
        return self.kube.get(kind, namespace, name)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.kube, name)


def test_a_service_without_flags_costs_one_read_and_a_flag_file_is_still_removed(
    kube: FakeKube,
) -> None:
    counting = CountingReads(kube)
    context.configure_runtime(Runtime(kube=counting))  # type: ignore[arg-type]
    people(kube).create(microservice("plain"))
    for _ in range(5):  # its status writes, its children's changes: events without flags
        on_microservice_for_its_flags(event={"type": "MODIFIED"},
                                      body=kube.get("Microservice", NS, "plain"))
    assert counting.gets["ConfigMap"] == 1

    flag = {"apiVersion": API_VERSION, "kind": "FeatureFlag",
            "metadata": {"name": "new-checkout", "namespace": NS},
            "spec": {"key": "checkout.v2", "variants": {"on": True, "off": False},
                     "defaultVariant": "off"}}  # fmt: skip
    people(kube).create(flag)
    people(kube).merge_patch("Microservice", NS, "plain", {"spec": {"flags": ["new-checkout"]}})
    on_microservice_for_its_flags(event={"type": "MODIFIED"},
                                  body=kube.get("Microservice", NS, "plain"))
    assert kube.get("ConfigMap", NS, "plain-flags") is not None
    # It stops reading flags: its file goes, though the service was once without one
    people(kube).merge_patch("Microservice", NS, "plain", {"spec": {"flags": None}})
    on_microservice_for_its_flags(event={"type": "MODIFIED"},
                                  body=kube.get("Microservice", NS, "plain"))
    assert kube.get("ConfigMap", NS, "plain-flags") is None


class NoEngine:
    """A DatabaseEngine that must not be called: the pass stops before any database."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the engine was asked to {name}")


def test_an_owned_database_on_a_missing_server_is_refused_before_any_database(
    kube: FakeKube,
) -> None:
    owned = {"apiVersion": API_VERSION, "kind": "OwnedDatabase",
             "metadata": {"name": "orders-db", "namespace": NS},
             "spec": {"owner": "orders", "serverRef": {"name": "main"}}}  # fmt: skip
    people(kube).create(owned)
    body = kube.get("OwnedDatabase", NS, "orders-db")
    assert body is not None
    reconcile_owned_database(kube, body, Reconcile.start(kube, body), NoEngine())  # type: ignore[arg-type]
    written = kube.get("OwnedDatabase", NS, "orders-db")
    assert written is not None
    assert written["status"]["phase"] == "Refused"
    ready = next(c for c in written["status"]["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", reasons.DATABASE_SERVER_NOT_FOUND)
    assert "spec.serverRef.name" in ready["message"]
    assert "finalizers" not in written["metadata"]
    assert [w.kind for w in kube.writes if w.field_manager == "pilotboat"] == ["OwnedDatabase"]


def test_an_approval_of_a_missing_migration_does_not_count(kube: FakeKube) -> None:
    approval = {"apiVersion": API_VERSION, "kind": "MigrationApproval",
                "metadata": {"name": "ok", "namespace": NS},
                "spec": {"migration": "add-column", "approver": "bob"}}  # fmt: skip
    people(kube).create(approval)
    body = kube.get("MigrationApproval", NS, "ok")
    assert body is not None
    assert sync_approval(kube, body, None, enforced_since=None) is None
    written = kube.get("MigrationApproval", NS, "ok")
    assert written is not None
    assert written["status"]["valid"] is False
    valid = written["status"]["conditions"][0]
    assert (valid["status"], valid["reason"]) == ("False", reasons.MIGRATION_NOT_FOUND)
    assert [(w.subresource, w.field_manager) for w in kube.writes[1:]] == [("status", "pilotboat")]


def test_a_forged_status_field_reads_as_absent_and_is_written_back(kube: FakeKube) -> None:
    released(kube)
    people(kube).merge_patch("Microservice", NS, "orders", {"status": {"phase": "Degraded"}},
                             subresource="status")  # fmt: skip
    writes = reconcile(kube)
    assert [(w.verb, w.field_manager) for w in status_writes(writes)] == [("patch", "pilotboat")]
    assert status(kube)["phase"] == "Healthy"


def test_a_pass_starts_from_the_cache_never_older_than_its_own_last_status_write(
    kube: FakeKube,
) -> None:
    from pilotboat.handlers.microservice import _loop

    counting = CountingReads(kube)
    context.configure_runtime(Runtime(kube=counting))  # type: ignore[arg-type]
    people(kube).create(microservice())
    created = kube.get("Microservice", NS, "orders")
    assert created is not None
    _loop._pass(NS, "orders", None)  # one pass, nothing scheduled after it
    written = kube.get("Microservice", NS, "orders")
    assert written is not None and written["status"]["phase"] == "Progressing"
    assert counting.gets["Microservice"] == 0  # the watch delivered it: no GET

    # The watch's event for the object before the status write comes late: it is older
    # than what the write returned, so the next pass still starts from the write.
    cache.owners.seen("Microservice", created)
    found = cache.owners.get(counting, "Microservice", NS, "orders")  # type: ignore[arg-type]
    assert found is not None and found["status"]["phase"] == "Progressing"
    assert counting.gets["Microservice"] == 0

    cache.owners.seen("Microservice", written, deleted=True)  # gone: asked of the API server
    cache.owners.get(counting, "Microservice", NS, "orders")  # type: ignore[arg-type]
    assert counting.gets["Microservice"] == 1


def test_a_status_writes_own_watch_event_starts_no_pass_and_anything_newer_does(
    kube: FakeKube, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pilotboat.handlers import microservice as handler

    queued: list[str] = []
    monkeypatch.setattr(handler, "_reconcile_guarded",
                        lambda namespace, name, logger=None, **_: queued.append(name))  # fmt: skip

    def delivered(obj: dict[str, Any]) -> None:
        event: Any = {"type": "MODIFIED", "object": obj}
        asyncio.run(handler.on_microservice_event(event=event, body=obj, logger=None))  # type: ignore[arg-type]

    people(kube).create(microservice())
    before = kube.get("Microservice", NS, "orders")
    assert before is not None
    reconcile(kube)  # writes the children and the status
    written = kube.get("Microservice", NS, "orders")
    assert written is not None and written["status"]["phase"] == "Progressing"
    delivered(written)
    assert queued == []  # the pass that wrote it saw all of it
    delivered(written)  # the same version once more (a watch restarted): looked at again
    assert queued == ["orders"]

    # A person's command lands between a pass's read and its status write: the write
    # returns it, so its event is news even if the command's own event was folded into it.
    command(kube, "promote")
    reconcile_microservice(kube, before, Reconcile.start(kube, before), now=NOW + 1)
    after = kube.get("Microservice", NS, "orders")
    assert after is not None and after["status"]["commands"]["promote"] == "t1"
    delivered(after)
    assert queued == ["orders", "orders"]


# --- analysis under a route --------------------------------------------------------------------


class RoutedTraffic:
    """A metric provider for a release routed at 10 %: 100 requests a second in all, the one
    canary pod gets 10 a second, each of the four stable pods 22.5 (what the route gives
    them), as request counters per pod; it remembers the range queries it was asked."""

    def __init__(self, canary_revision: str) -> None:
        self.canary_revision = canary_revision
        self.ranges: list[str] = []

    def query(self, expression: str, at: Any) -> float | None:
        return 400.0  # the canary's requests in the window: above minSampleSize

    def query_range(self, expression: str, start: Any, end: Any, step: float) -> list[Any]:
        from pilotboat.core.analysis import SampleSeries

        self.ranges.append(expression)
        points = int((end - start).total_seconds() // step) + 1
        noise = [0.0, 0.3, -0.2, 0.1, -0.3, 0.2, 0.0, -0.1, 0.2, -0.2, 0.1]

        def counter(per_second: float) -> tuple[float, ...]:
            total, values = 1000.0, [1000.0]
            for i in range(points - 1):
                total += (per_second + noise[i % len(noise)]) * step
                values.append(total)
            return tuple(values)

        if f'revision="{self.canary_revision}"' in expression:
            return [SampleSeries("orders-canary-0", counter(10.0))]
        return [SampleSeries(f"orders-stable-{i}", counter(22.5)) for i in range(4)]


def test_a_routed_canarys_traffic_is_judged_over_the_share_the_route_gives_it(
    kube: FakeKube,
) -> None:
    route = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
             "metadata": {"name": "orders-route", "namespace": NS},
             "spec": {"rules": [{"backendRefs": [{"name": "orders-stable", "port": 8080}]}]}}
    people(kube).create(route)
    canary = {"steps": [{"setWeight": 10}, {"analysis": {"intervals": 1}}],
              "trafficRouting": {"gatewayAPI": {"httpRoute": "orders-route", "port": 8080}},
              "analysis": {"interval": "40s", "minSampleSize": 20,
                           "prometheus": {"address": "http://prometheus.test:9090"},
                           "signals": {"traffic": {}},
                           "judge": {"method": "mannWhitney", "step": "4s"}}}  # fmt: skip
    people(kube).create(microservice(rollout={"canary": canary}))
    reconcile(kube)
    controller_reports(kube, STABLE)
    reconcile(kube)
    new_version(kube)
    reconcile(kube)
    reconcile(kube)
    controller_reports(kube, CANARY)
    reconcile(kube, now=NOW + 1)
    assert status(kube)["actualWeight"] == 10
    revision = kube.get("Deployment", NS, CANARY)["spec"]["template"]["metadata"]["labels"][
        "pilotboat.dev/revision"]  # fmt: skip
    provider = RoutedTraffic(revision)
    context.runtime().providers["http://prometheus.test:9090"] = provider
    for second in (2, 3, 60, 61, 62):  # the analysis step starts, then its interval passes
        reconcile(kube, now=NOW + second)
    assert provider.ranges, "the judge asked for no samples"
    (traffic,) = status(kube)["analysis"]["history"]
    assert traffic["signal"] == "traffic" and "routed share (canary 10%)" in traffic["message"]
    assert traffic["verdict"] == "Successful", traffic["message"]
    assert traffic["value"] == pytest.approx(100, rel=0.05)  # the canary's over its share
    assert status(kube)["release"]["promoting"] is True  # the analysis passed: promoted


def test_pod_and_microservice_events_reach_migration_handlers_only_when_waited_on() -> None:
    from pilotboat.core.workload import LABEL_NAME
    from pilotboat.handlers import migrations

    pod: Any = {"kind": "Pod", "metadata": {"namespace": NS, "name": "orders-7f9-x2",
                                            "labels": {LABEL_NAME: "orders"}}}  # fmt: skip
    service: Any = microservice()
    service["metadata"]["namespace"] = NS
    try:
        assert not migrations._labelled_service_waited_on(body=pod)
        assert not migrations._microservice_waited_on(body=service)
        migrations._index(NS, "add-total", {"requiredBy": {"service": "orders", "version": "v2"}})
        assert migrations._labelled_service_waited_on(body=pod)
        assert migrations._microservice_waited_on(body=service)
        migrations._index(NS, "add-total", None)  # the migration is gone
        assert not migrations._labelled_service_waited_on(body=pod)
    finally:
        migrations._index(NS, "add-total", None)


def test_a_first_deploy_writes_the_status_its_writes_leave_and_the_next_pass_writes_none(
    kube: FakeKube,
) -> None:
    """The first pass creates the Deployment: its status says so (not "does not exist
    yet"), so the pass the new Deployment's events start has no status of its own to write."""
    people(kube).create(microservice())
    first = reconcile(kube)
    assert len(status_writes(first)) == 1
    assert status(kube)["message"] == "stable is rolling out v1"
    available = next(c for c in status(kube)["conditions"] if c["type"] == "Available")
    assert "does not exist" not in available["message"]
    assert {e["reason"] for e in kube.events} >= {"DeploymentCreated", "ServiceCreated"}
    assert status_writes(reconcile(kube)) == []


def test_a_first_pass_takes_the_schema_migrations_admission_asked_for(kube: FakeKube) -> None:
    """The admission webhook that dry-runs a new Microservice's children asks for the
    namespace's SchemaMigrations beside them; the object's first pass takes that answer
    (by UID) and asks the API server nothing before its first Deployment."""
    people(kube).create(migration_for("orders", "v1"))
    people(kube).create(microservice())
    body = kube.get("Microservice", NS, "orders")
    assert body is not None
    listed: list[str] = []
    list_ = kube.list

    def recording(kind: str, *args: Any, **kw: Any) -> list[dict[str, Any]]:
        listed.append(kind)
        return list_(kind, *args, **kw)

    kube.list = recording  # type: ignore[method-assign]
    asyncio.run(rendered_children_check(body=body, warnings=[], operation="CREATE"))
    assert listed == ["SchemaMigration"]
    writes = reconcile(kube)
    assert listed == ["SchemaMigration"], "the pass listed again"
    assert child_writes(writes) == [], "the migration admission saw holds the first deploy"
    assert "SchemaMigration add-total: expand not applied yet" in status(kube)["message"]

    people(kube).create(microservice("billing"))  # no webhook ran for it: the pass asks
    reconcile(kube, "billing")
    assert listed == ["SchemaMigration", "SchemaMigration"]
