"""Feature flags on the local control plane: each service's flag file, setFlag steps moving
it with the canary, rollback restoring it, the kill switch, and invalid flags refused."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from pilotboat import API_VERSION
from tests.manifests import microservice
from tests.story import Story, phase_is

pytestmark = pytest.mark.usefixtures("operator")

HALF = {"fractional": [["on", 0], ["off", 100]]}


def feature_flag(name: str, **spec: Any) -> dict[str, Any]:
    body = {"variants": {"on": True, "off": False}, "defaultVariant": "off", **spec}
    return {"apiVersion": API_VERSION, "kind": "FeatureFlag", "metadata": {"name": name},
            "spec": body}  # fmt: skip


def flags_file(story: Story, service: str) -> dict[str, Any] | None:
    cm = story.get("ConfigMap", f"{service}-flags")
    return json.loads(cm["data"]["flags.json"]) if cm else None


def split_of(story: Story, service: str, key: str) -> Any:
    doc = flags_file(story, service) or {}
    entry = (doc.get("flags") or {}).get(key) or {}
    return entry.get("targeting", {}).get("fractional")


def wait_split(story: Story, service: str, key: str, expected: Any, what: str) -> None:
    story.wait_for("Microservice", service, lambda _: split_of(story, service, key) == expected,
                   timeout=60, what=what)  # fmt: skip


def test_each_service_gets_its_flags_file_mounted_in_both_tracks(story: Story) -> None:
    story.given(feature_flag("new-checkout", key="checkout.v2", targeting=HALF))
    story.given(microservice("payments", flags=["new-checkout"]))
    cm = story.wait_for("ConfigMap", "payments-flags", lambda c: c is not None, what="rendered")
    assert cm is not None
    doc = json.loads(cm["data"]["flags.json"])
    assert doc == {"flags": {"checkout.v2": {
        "state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "off",
        "targeting": HALF}}}  # fmt: skip
    assert cm["metadata"]["ownerReferences"][0]["name"] == "payments"
    dep = story.wait_for("Deployment", "payments", lambda d: d is not None, what="created")
    assert dep is not None
    pod = dep["spec"]["template"]["spec"]
    assert pod["volumes"][0]["configMap"]["name"] == "payments-flags"
    assert pod["containers"][0]["volumeMounts"][0]["mountPath"] == "/etc/pilotboat/flags"
    ff = story.wait_for(
        "FeatureFlag", "new-checkout",
        lambda f: ((f or {}).get("status") or {}).get("consumers") == ["payments"],
        what="consumed by payments",
    )  # fmt: skip
    assert ff is not None and ff["status"]["served"] == {"payments": {"on": 0, "off": 100}}


def test_setflag_steps_move_the_split_and_a_rollback_restores_it(story: Story) -> None:
    steps = [
        {"setWeight": 25},
        {"setFlag": {"flag": "new-checkout", "variants": {"on": 10, "off": 90}}},
        {"pause": {"untilPromoted": True}},
        {"setFlag": {"flag": "new-checkout", "variants": {"on": 50, "off": 50}}},
        {"pause": {"untilPromoted": True}},
    ]

    def svc(version: str) -> dict[str, Any]:
        return microservice("payments", version=version, replicas=4, flags=["new-checkout"],
                            rollout={"canary": {"steps": steps}})  # fmt: skip

    story.given(feature_flag("new-checkout", targeting=HALF), svc("v1"))
    story.wait_for("Microservice", "payments", phase_is("Healthy"), timeout=90, what="Healthy")
    stable_revision = story.get("Deployment", "payments")["metadata"]["annotations"]  # type: ignore[index]

    story.apply(svc("v2"))
    story.wait_for("Microservice", "payments", phase_is("Paused", 2), timeout=90, what="paused")
    wait_split(story, "payments", "new-checkout", [["on", 10], ["off", 90]], "at 10%")
    story.patch_status_command("payments", "promote")
    story.wait_for("Microservice", "payments", phase_is("Paused", 4), timeout=90, what="paused")
    wait_split(story, "payments", "new-checkout", [["on", 50], ["off", 50]], "at 50%")
    ff = story.wait_for(
        "FeatureFlag", "new-checkout",
        lambda f: ((f or {}).get("status") or {}).get("served", {}).get("payments")
        == {"on": 50, "off": 50}, what="serving 50%",
    )  # fmt: skip
    assert ff is not None

    story.patch_status_command("payments", "abort")
    story.wait_for("Microservice", "payments", phase_is("Degraded"), timeout=60, what="aborted")
    wait_split(story, "payments", "new-checkout", HALF["fractional"], "back to the flag's split")
    ms = story.get("Microservice", "payments")
    assert ms is not None and not ms["status"].get("flagOverrides")
    # the flag moved, the pods did not: the stable template is the one v1 runs
    assert story.get("Deployment", "payments")["metadata"]["annotations"] == stable_revision  # type: ignore[index]
    reasons = [e["reason"] for e in story.events("payments")]
    assert reasons.count("FlagSet") == 2


def test_a_promoted_split_stays_until_the_flag_itself_changes(story: Story) -> None:
    steps = [{"setFlag": {"flag": "f", "variants": {"on": 100, "off": 0}}}, {"setWeight": 50}]

    def svc(version: str) -> dict[str, Any]:
        return microservice("orders", version=version, flags=["f"],
                            rollout={"canary": {"steps": steps}})  # fmt: skip

    story.given(feature_flag("f", targeting=HALF), svc("v1"))
    story.wait_for("Microservice", "orders", phase_is("Healthy"), timeout=90, what="Healthy")
    story.apply(svc("v2"))
    ms = story.wait_for(
        "Microservice", "orders",
        lambda m: phase_is("Healthy")(m) and m["status"]["stableVersion"] == "v2",  # type: ignore[index]
        timeout=120, what="v2 promoted",
    )  # fmt: skip
    assert ms is not None
    assert [o["scope"] for o in ms["status"]["flagOverrides"]] == ["promoted"]
    wait_split(story, "orders", "f", [["on", 100], ["off", 0]], "kept at 100%")
    story.apply(feature_flag("f", targeting={"fractional": [["on", 100], ["off", 0]]}))
    story.wait_for("Microservice", "orders",
                   lambda m: not ((m or {}).get("status") or {}).get("flagOverrides"),
                   timeout=60, what="override ended by the flag's edit")  # fmt: skip


def test_the_kill_switch_takes_effect_without_a_release(story: Story) -> None:
    story.given(feature_flag("f", targeting=HALF), microservice("cart", flags=["f"]))
    story.wait_for("Microservice", "cart", phase_is("Healthy"), timeout=90, what="Healthy")
    template = story.get("Deployment", "cart")["spec"]["template"]  # type: ignore[index]
    story.patch("FeatureFlag", "f", {"spec": {"state": "DISABLED"}})
    story.wait_for("ConfigMap", "cart-flags",
                   lambda c: json.loads(c["data"]["flags.json"])["flags"]["f"]["state"]  # type: ignore[index]
                   == "DISABLED", timeout=30, what="disabled")  # fmt: skip
    assert story.get("Deployment", "cart")["spec"]["template"] == template  # type: ignore[index]
    events = [e["reason"] for e in story.events("cart")]
    assert "RolloutStarted" not in events


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"defaultVariant": "maybe"}, "spec.defaultVariant"),
        ({"variants": {"on": True, "off": "no"}}, "spec.variants"),
        ({"targeting": {"fractional": [["on", 10], ["off", 80]]}}, "spec.targeting.fractional"),
        ({"targeting": {"iff": [True, "on", "off"]}}, "spec.targeting.iff"),
    ],
    ids=["default", "types", "percentages", "jsonlogic"],
)
def test_an_invalid_flag_is_refused_at_admission_naming_the_field(
    story: Story, spec: dict[str, Any], field: str
) -> None:
    with pytest.raises(ApiException) as refused:
        story.kube.create({**feature_flag("bad", **spec), "metadata": {
            "name": "bad", "namespace": story.namespace}})  # fmt: skip
    assert refused.value.status == 422, refused.value.body
    assert field in str(refused.value.body)
