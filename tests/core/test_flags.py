"""Feature flags without a cluster: what a flag may be, the file a service gets, and a real
evaluation of that file by OpenFeature's flagd provider in file mode."""

from __future__ import annotations

import doctest
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openfeature import api as openfeature
from openfeature.contrib.provider.flagd import FlagdProvider
from openfeature.evaluation_context import EvaluationContext

import pilotboat.api.flag
import pilotboat.api.targeting
import pilotboat.core.flags
from pilotboat.api import CanaryStep, FeatureFlagSpec, MicroserviceSpec
from pilotboat.api.flag import feature_flag_problems
from pilotboat.core.flags import (
    FlagOverride,
    flags_environment,
    render_flags,
    settle_overrides,
    with_split,
)
from pilotboat.core.rollout import Observations, ReleaseState, decide
from pilotboat.core.workload import Owner, render_deployment, revision_of

BOOL = {"on": True, "off": False}


@pytest.mark.parametrize(
    "module", [pilotboat.api.flag, pilotboat.api.targeting, pilotboat.core.flags]
)
def test_docstring_examples_hold(module: Any) -> None:
    assert doctest.testmod(module).failed == 0


@pytest.mark.parametrize(
    ("spec", "field", "words"),
    [
        ({"variants": BOOL, "defaultVariant": "maybe"}, "spec.defaultVariant", "keys of variants"),
        ({"variants": {"on": True, "off": "no"}, "defaultVariant": "off"}, "spec.variants",
         "one JSON type"),
        ({"variants": {"on": None, "off": False}, "defaultVariant": "off"}, "spec.variants.on",
         "null"),
        ({"variants": BOOL, "defaultVariant": "off",
          "targeting": {"fractional": [["on", 10], ["off", 80]]}},
         "spec.targeting.fractional", "sum to 100, not 90"),
        ({"variants": BOOL, "defaultVariant": "off",
          "targeting": {"if": [{"==": [1, 1]}, {"fractional": [["on", 60], ["off", 60]]}, "off"]}},
         "spec.targeting.if[1].fractional", "sum to 100, not 120"),
        ({"variants": BOOL, "defaultVariant": "off",
          "targeting": {"fractional": [["blue", 50], ["off", 50]]}},
         "spec.targeting.fractional[0]", "'blue' is not one of the variants"),
        ({"variants": BOOL, "defaultVariant": "off",
          "targeting": {"fractional": [["on", "50%"], ["off", 50]]}},
         "spec.targeting.fractional[0]", "[variant name, percent]"),
        ({"variants": BOOL, "defaultVariant": "off", "targeting": {"regex": ["a", "b"]}},
         "spec.targeting.regex", "unknown JsonLogic operator"),
        ({"variants": BOOL, "defaultVariant": "off",
          "targeting": {"if": [{"var": "x"}, "on"], "and": []}},
         "spec.targeting", "exactly one operator"),
        ({"variants": BOOL, "defaultVariant": "off", "targeting": {"fractional": []}},
         "spec.targeting.fractional", "at least one"),
        ({"variants": BOOL, "defaultVariant": "off", "state": "ON"}, "spec.state", "ENABLED"),
    ],
    ids=lambda v: v if isinstance(v, str) and v.startswith("spec") else "",
)  # fmt: skip
def test_a_flag_flagd_could_not_serve_is_refused_naming_the_field(
    spec: dict[str, Any], field: str, words: str
) -> None:
    problems = feature_flag_problems(spec)
    assert any(p.startswith(field + ":") and words in p for p in problems), problems


@pytest.mark.parametrize(
    "targeting",
    [
        None,
        {},
        {"fractional": [["on", 10], ["off", 90]]},
        {"fractional": [{"var": "email"}, ["on", 100], ["off", 0]]},
        {"fractional": [{"cat": [{"var": "$flagd.flagKey"}, {"var": "user"}]}, ["on", 50],
                        ["off", 50]]},
        {"if": [{"ends_with": [{"var": "email"}, "@shop.example"]}, "on",
                {"fractional": [["on", 25], ["off", 75]]}]},
        {"if": [{"sem_ver": [{"var": "app"}, ">=", "2.0.0"]}, "on", "off"]},
        {"if": [{"starts_with": [{"var": "region"}, "eu-"]}, "on", "off"]},
        {"if": [{"in": [{"var": "tier"}, ["gold", "platinum"]]}, "on", "off"]},
    ],
)  # fmt: skip
def test_valid_targeting_is_accepted(targeting: dict[str, Any] | None) -> None:
    assert feature_flag_problems({"variants": BOOL, "defaultVariant": "off",
                                  "targeting": targeting}) == []  # fmt: skip


def flag(**spec: Any) -> FeatureFlagSpec:
    return FeatureFlagSpec.model_validate({"variants": BOOL, "defaultVariant": "off", **spec})


def test_a_split_moves_the_fractional_rule_and_keeps_the_rest() -> None:
    targeting = {
        "if": [{"ends_with": [{"var": "email"}, "@shop"]}, "on",
               {"fractional": [{"var": "email"}, ["on", 0], ["off", 100]]}]
    }  # fmt: skip
    moved = with_split(targeting, {"on": 30, "off": 70})
    assert moved["if"][:2] == targeting["if"][:2]
    assert moved["if"][2] == {"fractional": [{"var": "email"}, ["on", 30], ["off", 70]]}
    with pytest.raises(ValueError, match="no fractional"):
        with_split({"if": [True, "on", "off"]}, {"on": 1, "off": 99})


def test_the_file_holds_each_flag_under_its_key_and_reports_what_it_cannot_apply() -> None:
    flags = {
        "checkout": flag(key="new-checkout", targeting={"fractional": [["on", 0], ["off", 100]]}),
        "banner": flag(targeting={"if": [True, "on", "off"]}),
        "ghost": None,
    }
    overrides = [
        FlagOverride("checkout", {"on": 10, "off": 90}, "release", "v2"),
        FlagOverride("banner", {"on": 10, "off": 90}, "release", "v2"),
        FlagOverride("elsewhere", {"on": 10, "off": 90}, "release", "v2"),
    ]
    previous = {"flags": {"ghost": {"state": "ENABLED", "variants": BOOL, "defaultVariant": "on"}}}
    rendered = render_flags(["checkout", "banner", "ghost"], flags, overrides, previous)
    doc = rendered.document["flags"]
    assert set(doc) == {"new-checkout", "banner", "ghost"}
    assert doc["new-checkout"]["targeting"] == {"fractional": [["on", 10], ["off", 90]]}
    assert doc["banner"]["targeting"] == {"if": [True, "on", "off"]}  # left as declared
    assert doc["ghost"] == previous["flags"]["ghost"]  # the last good one stays
    assert rendered.served["checkout"] == {"on": 10, "off": 90}
    assert len(rendered.problems) == 3
    assert json.loads(rendered.text()) == rendered.document


def test_the_kill_switch_is_rendered_whatever_the_split() -> None:
    rendered = render_flags(
        ["f"], {"f": flag(state="DISABLED")}, [FlagOverride("f", {"on": 100}, "release")]
    )
    assert rendered.document["flags"]["f"]["state"] == "DISABLED"
    assert rendered.served["f"] == {}


def test_promotion_keeps_the_final_split_until_the_flag_changes() -> None:
    release = [FlagOverride("f", {"on": 100, "off": 0}, "release", "v2")]
    after = settle_overrides(release, {}, version="v2", promoted=True, bases={"f": "b1"})
    assert after == [FlagOverride("f", {"on": 100, "off": 0}, "promoted", "v2", "b1")]
    # the next release moves it again, and rolls back to it
    during = settle_overrides(after, {"f": {"on": 20, "off": 80}}, version="v3",
                              promoted=False, bases={"f": "b1"})  # fmt: skip
    assert [o.scope for o in during] == ["promoted", "release"]
    rolled_back = settle_overrides(during, {}, version="v3", promoted=False, bases={"f": "b1"})
    assert rolled_back == after
    # an edit of the flag's variants or targeting ends it
    assert settle_overrides(after, {}, version="v3", promoted=False, bases={"f": "b2"}) == []


def test_flag_content_stays_out_of_the_pod_template() -> None:
    spec = MicroserviceSpec.model_validate(
        {"image": "shop/pay:1", "version": "v1", "flags": ["new-checkout"]}
    )
    dep = render_deployment(Owner("pay", "ns", "uid"), spec, track="canary", replicas=1)
    pod = dep["spec"]["template"]["spec"]
    assert pod["volumes"] == [{"name": "pilotboat-flags", "configMap": {"name": "pay-flags"}}]
    assert pod["containers"][0]["volumeMounts"][0]["mountPath"] == "/etc/pilotboat/flags"
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["FLAGD_OFFLINE_FLAG_SOURCE_PATH"] == "/etc/pilotboat/flags/flags.json"
    without = spec.model_copy(update={"flags": None})
    assert "volumes" not in render_deployment(
        Owner("pay", "ns", "uid"), without, track="stable", replicas=1
    )["spec"]["template"]["spec"]
    assert revision_of("pay", spec) == revision_of("pay", spec)


# --- setFlag in the release state machine --------------------------------------------------


def steps(*raw: dict[str, Any]) -> list[CanaryStep]:
    return [CanaryStep.model_validate(s) for s in raw]


OBS = Observations(
    desired_revision="new", stable_revision="old", stable_ready=True, canary_revision="new",
    canary_ready_replicas=4,
)  # fmt: skip
STEPS = steps(
    {"setWeight": 25},
    {"setFlag": {"flag": "f", "variants": {"on": 10, "off": 90}}},
    {"pause": {"untilPromoted": True}},
    {"setFlag": {"flag": "f", "variants": {"on": 50, "off": 50}}},
)


def run(state: ReleaseState, obs: Observations = OBS, now: float = 10.0) -> Any:
    return decide(STEPS, state, obs, version="v2", stable_version="v1", replicas=4, now=now)


def test_a_setflag_step_records_the_split_and_moves_on() -> None:
    d = run(ReleaseState(revision="new", step_index=1, canary_weight=25))
    assert d.state.flag_overrides == {"f": {"on": 10, "off": 90}}
    assert d.state.step_index == 2 and d.requeue_after == 0
    assert [e.reason for e in d.events] == ["FlagSet"]
    again = run(ReleaseState(revision="new", step_index=3, flag_overrides=d.state.flag_overrides))
    assert again.state.flag_overrides == {"f": {"on": 50, "off": 50}}


def test_rollback_and_a_new_release_drop_the_release_splits() -> None:
    moved = ReleaseState(revision="new", step_index=2, flag_overrides={"f": {"on": 10, "off": 90}})
    aborted = run(moved, Observations(**{**OBS.__dict__, "commands": {"abort": "t1"}}))
    assert aborted.phase == "Degraded" and aborted.state.flag_overrides == {}
    restarted = run(replace_revision(moved, "older"))
    assert restarted.state.flag_overrides == {}


def replace_revision(state: ReleaseState, revision: str) -> ReleaseState:
    from dataclasses import replace

    return replace(state, revision=revision)


def test_promotion_is_reported_once_the_stable_track_took_the_canary() -> None:
    promoting = ReleaseState(revision="new", promoting=True, flag_overrides={"f": {"on": 50}})
    done = run(promoting, Observations(desired_revision="new", stable_revision="new",
                                       stable_ready=True))  # fmt: skip
    assert done.phase == "Healthy" and done.promoted
    assert not run(ReleaseState(), Observations("new", "new", True)).promoted


# --- a real evaluation, by the flagd provider in file mode, as a service would -------------


@pytest.fixture
def flag_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = tmp_path / "flags.json"
    for var in flags_environment():  # the environment the pods get, pointed at this file
        value = str(path) if var["name"] == "FLAGD_OFFLINE_FLAG_SOURCE_PATH" else var["value"]
        monkeypatch.setenv(var["name"], value)
    yield path
    openfeature.shutdown()


def served_shares(path: Path, document: dict[str, Any], key: str, n: int) -> Counter[Any]:
    path.write_text(json.dumps(document))
    openfeature.set_provider_and_wait(FlagdProvider())
    client = openfeature.get_client()
    counts: Counter[Any] = Counter()
    for i in range(n):
        counts[client.get_boolean_value(key, False, EvaluationContext(f"user-{i}"))] += 1
    openfeature.shutdown()
    return counts


@pytest.mark.parametrize("percent_on", [0, 10, 50, 90, 100])
def test_the_served_split_matches_the_declared_one(flag_file: Path, percent_on: int) -> None:
    n = 4000
    spec = flag(key="new-checkout", targeting={"fractional": [["on", 50], ["off", 50]]})
    rendered = render_flags(
        ["checkout"],
        {"checkout": spec},
        [FlagOverride("checkout", {"on": percent_on, "off": 100 - percent_on}, "release")],
    )
    counts = served_shares(flag_file, rendered.document, "new-checkout", n)
    share = counts[True] / n
    p = percent_on / 100
    tolerance = 4 * (p * (1 - p) / n) ** 0.5 + 1e-9  # four standard deviations
    assert abs(share - p) <= tolerance, (share, p)


def test_a_disabled_flag_serves_the_code_default(flag_file: Path) -> None:
    spec = flag(state="DISABLED", defaultVariant="on")
    rendered = render_flags(["f"], {"f": spec})
    counts = served_shares(flag_file, rendered.document, "f", 50)
    assert counts == Counter({False: 50})  # the default the code passes, not "on"
