"""Rendering a Microservice's children: pure, so every case is a table row."""

from __future__ import annotations

import doctest
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

import pilotboat.core.conditions
import pilotboat.core.readiness
import pilotboat.core.workload
from pilotboat.api import MicroserviceSpec
from pilotboat.core.conditions import DesiredCondition, set_conditions
from pilotboat.core.readiness import track_health
from pilotboat.core.workload import (
    Owner,
    pod_revision,
    render_deployment,
    render_service,
    revision_of,
    source_field,
    template_hash,
)

OWNER = Owner("payments", "shop", "uid-1")


def spec(**overrides: object) -> MicroserviceSpec:
    return MicroserviceSpec.model_validate(
        {"image": "shop/payments:2", "version": "v2", **overrides}
    )


@pytest.mark.parametrize(
    "module", [pilotboat.core.conditions, pilotboat.core.readiness, pilotboat.core.workload]
)
def test_docstring_examples_hold(module: object) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)  # type: ignore[arg-type]
    assert result.attempted > 0 and result.failed == 0


def test_the_stable_deployment_carries_labels_owner_and_placement() -> None:
    d = render_deployment(
        OWNER,
        spec(
            nodeSelector={"type": "real"},
            env=[{"name": "A", "value": "1"}],
            imagePullPolicy="Never",
        ),
        track="stable",
        replicas=3,
    )
    assert d["metadata"]["name"] == "payments"
    assert d["spec"]["replicas"] == 3
    assert d["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "payments",
        "pilotboat.dev/track": "stable",
    }
    labels = d["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/version"] == "v2"
    assert d["metadata"]["ownerReferences"][0] == {
        "apiVersion": "pilotboat.dev/v1alpha1",
        "kind": "Microservice",
        "name": "payments",
        "uid": "uid-1",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    pod = d["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"type": "real"}
    container = pod["containers"][0]
    assert container["image"] == "shop/payments:2"
    assert container["imagePullPolicy"] == "Never"
    assert {"name": "A", "value": "1"} in container["env"]
    assert {"name": "SERVICE_VERSION", "value": "v2"} in container["env"]


def test_the_canary_deployment_has_its_own_name_and_selector() -> None:
    d = render_deployment(OWNER, spec(), track="canary", replicas=1)
    assert d["metadata"]["name"] == "payments-canary"
    assert d["spec"]["selector"]["matchLabels"]["pilotboat.dev/track"] == "canary"


def test_the_service_selects_both_tracks_unless_told_one() -> None:
    both = render_service(OWNER, spec(ports=[{"name": "http", "port": 80, "targetPort": 8080}]))
    assert both["spec"]["selector"] == {"app.kubernetes.io/name": "payments"}
    assert both["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}
    ]
    canary = render_service(OWNER, spec(), name="payments-canary", track="canary")
    assert canary["spec"]["selector"]["pilotboat.dev/track"] == "canary"


def test_a_readiness_probe_defaults_to_the_first_port() -> None:
    d = render_deployment(
        OWNER, spec(readinessProbe={"path": "/ready"}), track="stable", replicas=1
    )
    probe = d["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    assert probe["httpGet"] == {"path": "/ready", "port": "http"}


@given(st.integers(0, 1000), st.integers(0, 1000), st.sampled_from(["stable", "canary"]))
def test_the_revision_ignores_replicas_and_track(a: int, b: int, track: str) -> None:
    s = spec()
    ra = render_deployment(OWNER, s, track="stable", replicas=a)["metadata"]["annotations"]
    rb = render_deployment(OWNER, s, track=track, replicas=b)["metadata"]["annotations"]  # type: ignore[arg-type]
    assert ra == rb == {"pilotboat.dev/revision": revision_of("payments", s)}


@pytest.mark.parametrize(
    "change",
    [{"image": "shop/payments:3"}, {"version": "v3"}, {"env": [{"name": "A", "value": "2"}]}],
)
def test_the_revision_changes_with_what_runs(change: dict[str, object]) -> None:
    t1 = render_deployment(OWNER, spec(), track="stable", replicas=1)["spec"]["template"]
    t2 = render_deployment(OWNER, spec(**change), track="stable", replicas=1)["spec"]["template"]
    assert template_hash(t1) != template_hash(t2)
    assert revision_of("payments", spec()) != revision_of("payments", spec(**change))


@pytest.mark.parametrize(
    ("change", "same_revision"),
    [
        ({"image": "shop/payments:3"}, False),  # image only, same version
        ({"env": [{"name": "A", "value": "2"}]}, False),  # env only, same version
        ({"resources": {"limits": {"cpu": "1"}}}, False),
        ({"replicas": 7}, True),  # scaling is not a release
    ],
)
@pytest.mark.parametrize("track", ["stable", "canary"])
def test_the_pods_carry_their_revision_as_a_label_outside_the_selector(
    change: dict[str, object], same_revision: bool, track: str
) -> None:
    before = render_deployment(OWNER, spec(), track=track, replicas=1)  # type: ignore[arg-type]
    after = render_deployment(OWNER, spec(**change), track=track, replicas=1)  # type: ignore[arg-type]
    for d, s in ((before, spec()), (after, spec(**change))):
        labels = d["spec"]["template"]["metadata"]["labels"]
        revision = labels["pilotboat.dev/revision"]
        assert revision == revision_of("payments", s) == d["metadata"]["annotations"][
            "pilotboat.dev/revision"
        ]
        assert len(revision) <= 63
        assert labels["app.kubernetes.io/version"] == "v2"
        assert labels["pilotboat.dev/track"] == track
        assert "pilotboat.dev/revision" not in d["spec"]["selector"]["matchLabels"]
        assert pod_revision(d) == labels["pilotboat.dev/revision"]
    revisions = [pod_revision(d) for d in (before, after)]
    assert (revisions[0] == revisions[1]) is same_revision


def test_the_revision_is_the_digest_of_the_template_without_its_own_label() -> None:
    d = render_deployment(OWNER, spec(), track="stable", replicas=1)
    template = d["spec"]["template"]
    revision = template["metadata"]["labels"].pop("pilotboat.dev/revision")
    assert template_hash(template) == revision
    assert pod_revision(d) == ""  # a Deployment whose pods have no label


@pytest.mark.parametrize(
    ("status", "generation", "complete", "reason"),
    [
        ({}, 1, False, "DeploymentPending"),
        (
            {
                "observedGeneration": 1,
                "replicas": 2,
                "updatedReplicas": 1,
                "readyReplicas": 2,
                "availableReplicas": 2,
            },
            1,
            False,
            "RollingOut",
        ),
        (
            {
                "observedGeneration": 1,
                "replicas": 3,
                "updatedReplicas": 2,
                "readyReplicas": 2,
                "availableReplicas": 2,
            },
            1,
            False,
            "RollingOut",
        ),
        (
            {
                "observedGeneration": 1,
                "replicas": 2,
                "updatedReplicas": 2,
                "readyReplicas": 2,
                "availableReplicas": 2,
            },
            1,
            True,
            "ReplicasReady",
        ),
        (
            {
                "observedGeneration": 1,
                "replicas": 2,
                "updatedReplicas": 2,
                "readyReplicas": 2,
                "availableReplicas": 2,
            },
            2,
            False,
            "DeploymentPending",
        ),
        (
            {
                "observedGeneration": 1,
                "conditions": [
                    {
                        "type": "Progressing",
                        "status": "False",
                        "reason": "ProgressDeadlineExceeded",
                        "message": "too slow",
                    }
                ],
            },
            1,
            False,
            "ProgressDeadlineExceeded",
        ),
    ],
)
def test_track_health(
    status: dict[str, object], generation: int, complete: bool, reason: str
) -> None:
    deployment = {"metadata": {"generation": generation}, "spec": {"replicas": 2}, "status": status}
    health = track_health(deployment, "v1")
    assert (health.complete, health.reason) == (complete, reason)


def test_zero_replicas_is_complete_when_seen() -> None:
    d = {
        "metadata": {"generation": 1},
        "spec": {"replicas": 0},
        "status": {"observedGeneration": 1},
    }
    assert track_health(d, "v1").complete


@given(st.lists(st.sampled_from(["True", "False", "Unknown"]), min_size=1, max_size=8))
def test_transition_time_moves_only_when_status_flips(statuses: list[str]) -> None:
    conditions: list[dict[str, object]] = []
    for i, status in enumerate(statuses):
        before = next((c for c in conditions if c["type"] == "Ready"), None)
        conditions = set_conditions(
            conditions,
            [DesiredCondition("Ready", status, "R", "m")],  # type: ignore[arg-type]
            generation=i,
            now=f"t{i}",
        )
        after = conditions[0]
        assert len(conditions) == 1
        if before is None or before["status"] != status:
            assert after["lastTransitionTime"] == f"t{i}"
        else:
            assert after["lastTransitionTime"] == before["lastTransitionTime"]
        assert after["observedGeneration"] == i


def test_route_mirror_keeps_other_filters_and_what_the_server_stored() -> None:
    from pilotboat.core.traffic import route_mirror

    header = {"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": []}}
    stored = {
        "type": "RequestMirror",
        "requestMirror": {
            "backendRef": {"group": "", "kind": "Service", "name": "c-canary", "port": 80},
            "percent": 10,
        },
    }
    rules = [
        {"backendRefs": [{"name": "c-stable", "port": 80}], "filters": [header, stored]},
        {"backendRefs": [{"name": "other", "port": 80}]},
    ]
    same = route_mirror(rules, stable="c-stable", canary="c-canary", port=80, percent=10)
    assert same == rules
    moved = route_mirror(rules, stable="c-stable", canary="c-canary", port=80, percent=30)
    assert moved[0]["filters"][0] == header
    assert moved[0]["filters"][1]["requestMirror"]["percent"] == 30
    assert moved[1] == rules[1]
    off = route_mirror(rules, stable="c-stable", canary="c-canary", port=80, percent=0)
    assert off[0]["filters"] == [header]


@pytest.mark.parametrize(
    ("kind", "field", "env_count", "source"),
    [
        ("Service", "metadata.name", 0, "metadata.name"),
        ("Deployment", "metadata.name", 0, "metadata.name"),
        ("Service", "spec.ports[1].port", 0, "spec.ports[1].port"),
        ("Service", "spec.ports[1].name", 0, "spec.ports[1].name"),
        ("Deployment", "spec.template.spec.containers[0].image", 0, "spec.image"),
        ("Deployment", "spec.template.spec.containers[0].imagePullPolicy", 0,
         "spec.imagePullPolicy"),
        ("Deployment", "spec.template.spec.containers[0].env[0].name", 1, "spec.env[0].name"),
        ("Deployment", "spec.template.spec.containers[0].env[3].name", 1, None),  # the operator's
        ("Deployment", "spec.template.spec.containers[0].resources.limits[cpu]", 0,
         "spec.resources.limits[cpu]"),
        ("Deployment", "spec.template.spec.containers[0].readinessProbe.httpGet.port", 0,
         "spec.readinessProbe.port"),
        ("Deployment", "spec.template.spec.containers[0].ports[0].containerPort", 0,
         "spec.ports[0]"),
        ("Deployment", "spec.template.spec.nodeSelector", 0, "spec.nodeSelector"),
        ("Deployment", "spec.template.spec.tolerations[0].effect", 0,
         "spec.tolerations[0].effect"),
        ("Deployment", "spec.template.metadata.labels", 0, "spec.version"),
        ("Deployment", "spec.selector", 0, None),
        ("Service", "spec.template.spec.containers[0].image", 0, None),
    ],
)
def test_a_refused_child_field_is_told_as_the_microservice_field_it_comes_from(
    kind: str, field: str, env_count: int, source: str | None
) -> None:
    assert source_field(kind, field, env_count=env_count) == source


# --- the full pod template --------------------------------------------------------------

TEMPLATE = {
    "metadata": {"labels": {"team": "ledger", "pilotboat.dev/track": "forged"},
                 "annotations": {"prometheus.io/port": "9090"}},
    "spec": {
        "serviceAccountName": "ledger",
        "securityContext": {"runAsNonRoot": True},
        "volumes": [{"name": "scratch", "emptyDir": {}}],
        "containers": [
            {"name": "ledger", "image": "registry.example/ledger:1", "args": ["--serve"],
             "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "t", "key": "k"}}},
                     {"name": "SERVICE_VERSION", "value": "mine"}],
             "ports": [{"name": "admin", "containerPort": 9090}],
             "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
             "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080}}},
            {"name": "sidecar", "image": "registry.example/proxy:2"},
        ],
    },
}


def templated(**overrides: object) -> MicroserviceSpec:
    return MicroserviceSpec.model_validate({"version": "v1", "template": TEMPLATE, **overrides})


def test_the_template_is_kept_and_the_short_fields_fill_in_its_first_container() -> None:
    deployment = render_deployment(OWNER, templated(env=[{"name": "MODE", "value": "x"}],
                                                    flags=["kill-switch"]),
                                   track="canary", replicas=1)
    pod = deployment["spec"]["template"]
    assert pod["metadata"]["labels"]["team"] == "ledger"
    assert pod["metadata"]["labels"]["pilotboat.dev/track"] == "canary"  # the operator's wins
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == "9090"  # the user's wins
    spec_ = pod["spec"]
    assert spec_["serviceAccountName"] == "ledger" and spec_["securityContext"] == {
        "runAsNonRoot": True}
    assert [c["name"] for c in spec_["containers"]] == ["ledger", "sidecar"]
    assert spec_["containers"][1] == {"name": "sidecar", "image": "registry.example/proxy:2"}
    main = spec_["containers"][0]
    assert main["image"] == "registry.example/ledger:1" and main["args"] == ["--serve"]
    assert [p["name"] for p in main["ports"]] == ["admin", "http"]
    names = [e["name"] for e in main["env"]]
    assert names[:2] == ["TOKEN", "MODE"] and names.count("SERVICE_VERSION") == 1
    assert {e["name"]: e.get("value") for e in main["env"]}["SERVICE_VERSION"] == "v1"
    assert [v["name"] for v in spec_["volumes"]] == ["scratch", "pilotboat-flags"]
    assert [m["name"] for m in main["volumeMounts"]] == ["scratch", "pilotboat-flags"]
    assert main["livenessProbe"] == {"httpGet": {"path": "/healthz", "port": 8080}}
    assert TEMPLATE["spec"]["containers"][0]["env"][1]["value"] == "mine"  # input untouched


def test_a_short_field_overrides_the_template() -> None:
    deployment = render_deployment(OWNER, templated(image="registry.example/ledger:2",
                                                    readinessProbe={"path": "/ready"}),
                                   track="stable", replicas=1)
    main = deployment["spec"]["template"]["spec"]["containers"][0]
    assert main["image"] == "registry.example/ledger:2"
    assert main["readinessProbe"]["httpGet"]["path"] == "/ready"


def test_a_template_change_is_a_new_revision_and_no_template_keeps_the_old_one() -> None:
    changed = {**TEMPLATE, "spec": {**TEMPLATE["spec"], "volumes": []}}
    assert revision_of("ledger", templated()) != revision_of(
        "ledger", MicroserviceSpec.model_validate({"version": "v1", "template": changed}))
    plain = spec()
    assert plain.template is None
    assert revision_of("payments", plain) == revision_of("payments", spec())


@pytest.mark.parametrize(("document", "words"), [
    ({"version": "v1"}, "image: required unless spec.template.spec.containers[0].image"),
    ({"version": "v1", "template": {"spec": {"containers": []}}}, "spec.containers"),
    ({"version": "v1", "image": "a:1", "template": {"spec": {"containers": [{"image": "x"}]}}},
     "spec.containers[0].name: required"),
    ({"version": "v1", "image": "a:1", "template": {"spec": {"containers": [
        {"name": "a"}, {"name": "a"}]}}}, "spec.containers[1].name: 'a' is used twice"),
    ({"version": "v1", "env": [{"name": "TOKEN", "value": "x"}], "template": TEMPLATE},
     "env[0].name: 'TOKEN' is also set in spec.template.spec.containers[0].env"),
])
def test_a_template_that_cannot_make_a_pod_is_refused_naming_the_field(
    document: dict[str, object], words: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(words)):
        MicroserviceSpec.model_validate(document)


@pytest.mark.parametrize(("field", "source"), [
    ("spec.template.spec.containers[0].ports[0].containerPort",
     "spec.template.spec.containers[0].ports[0].containerPort"),
    ("spec.template.spec.containers[0].ports[1].containerPort", "spec.ports[0]"),
    ("spec.template.spec.containers[0].env[0].valueFrom",
     "spec.template.spec.containers[0].env[0].valueFrom"),
    ("spec.template.spec.containers[0].env[2].name", "spec.env[0].name"),
    ("spec.template.spec.containers[0].env[5].name", None),
    ("spec.template.spec.containers[0].image", "spec.template.spec.containers[0].image"),
    ("spec.template.spec.containers[0].livenessProbe.httpGet.port",
     "spec.template.spec.containers[0].livenessProbe.httpGet.port"),
    ("spec.template.spec.containers[1].imagee", "spec.template.spec.containers[1].imagee"),
    ("spec.template.spec.volumes[0].name", "spec.template.spec.volumes[0].name"),
    ("spec.template.spec.nodeSelector", "spec.template.spec.nodeSelector"),
])
def test_a_refused_field_of_a_templated_deployment_is_named_where_the_user_wrote_it(
    field: str, source: str | None
) -> None:
    ms = MicroserviceSpec.model_validate({
        "version": "v1", "env": [{"name": "MODE", "value": "x"}],
        "template": {**TEMPLATE, "spec": {**TEMPLATE["spec"], "containers": [
            {**TEMPLATE["spec"]["containers"][0],  # type: ignore[dict-item]
             "env": TEMPLATE["spec"]["containers"][0]["env"][:1] + [  # type: ignore[index]
                 {"name": "OTHER", "value": "y"}]},
            TEMPLATE["spec"]["containers"][1]]}}})  # type: ignore[index]
    assert source_field("Deployment", field, env_count=1, spec=ms) == source
