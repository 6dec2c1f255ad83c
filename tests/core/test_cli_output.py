"""What `pilotboat get` prints for fixed Microservices (table, wide, json, yaml, name), what
`--watch` prints again, and the verdict `pilotboat status --wait` waits for: pure functions
over the status fixtures the operator really wrote (tests/fixtures/status)."""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from pilotboat.cli.errors import CommandError
from pilotboat.cli.get import changed_rows, release_row, render, step_label
from pilotboat.cli.progress import (
    ReleaseProgress,
    duration_option,
    release_progress,
    wait_for_release,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "status" / "microservice"
NOW = _dt.datetime(2026, 11, 26, 3, 0, tzinfo=_dt.UTC)


def fixture(file: str, namespace: str = "shop", created: str = "2026-11-26T02:59:30Z",
            **meta: Any) -> dict[str, Any]:
    ms = json.loads((FIXTURES / f"{file}.json").read_text())
    ms["metadata"] |= {"namespace": namespace, "creationTimestamp": created, **meta}
    return ms


PAUSED = fixture("paused.Suspended", name="cart")
RELEASED = fixture("released.Healthy", name="search", created="2026-11-24T03:00:00Z")


def rows() -> list[dict[str, Any]]:
    return [release_row(PAUSED, NOW), release_row(RELEASED, NOW)]


def test_a_row_counts_steps_from_1_and_ready_of_desired() -> None:
    assert release_row(PAUSED, NOW) == {
        "namespace": "shop", "name": "cart", "version": "v2", "stable": "v1", "canary": "v2",
        "phase": "Paused", "step": "2/2", "weight": 25, "actualWeight": 0, "ready": "2/2",
        "message": "step 2/2 (pause): waiting for `kubectl pilotboat promote`", "age": "30s"}
    healthy = release_row(RELEASED, NOW)
    assert (healthy["step"], healthy["age"], healthy["ready"]) == (None, "2d", "2/2")


def test_ready_is_of_the_desired_replicas_and_a_policys_step_is_a_number() -> None:
    ms = fixture("paused.Suspended", name="cart")
    ms["spec"]["replicas"] = 5
    ms["spec"]["rollout"] = {"rolloutPolicyRef": {"name": "standard"}}
    ms["status"] |= {"readyReplicas": 3, "currentStepIndex": 0}
    row = release_row(ms, NOW)
    assert (row["ready"], row["step"]) == ("3/5", "1")


@pytest.mark.parametrize(("index", "steps", "label"), [
    (None, 4, None), (0, 4, "1/4"), (3, 4, "4/4"),
    (4, 4, "4/4"),  # past the last step: the release is being promoted
    (1, 0, "2"),  # the steps are a RolloutPolicy's
])
def test_step_label(index: int | None, steps: int, label: str | None) -> None:
    assert step_label(index, [{"setWeight": 10}] * steps) == label


def test_table() -> None:
    assert [click.unstyle(line) for line in render(rows(), "table")] == [
        "NAME     VERSION   STABLE   PHASE     STEP   WEIGHT   READY   AGE",
        "cart     v2        v1       Paused    2/2    25%      2/2     30s",
        "search   v1        v1       Healthy   -      0%       2/2     2d",
    ]


def test_table_of_every_namespace_and_without_its_header() -> None:
    lines = render(rows(), "table", all_namespaces=True, header=False)
    assert [click.unstyle(line).split()[:2] for line in lines] == [["shop", "cart"],
                                                                    ["shop", "search"]]


def test_the_phase_is_coloured_without_moving_the_columns() -> None:
    lines = render(rows(), "table")
    assert "\x1b[33mPaused\x1b[0m    2/2" in lines[1]
    assert [click.unstyle(line) for line in lines] == lines[:1] + [
        "cart     v2        v1       Paused    2/2    25%      2/2     30s",
        "search   v1        v1       Healthy   -      0%       2/2     2d"]


def test_wide_adds_canary_actual_weight_and_message() -> None:
    lines = [click.unstyle(line) for line in render(rows(), "wide")]
    assert lines[0].split()[-3:] == ["CANARY", "ACTUAL", "MESSAGE"]
    assert lines[1].endswith("v2       0%       step 2/2 (pause): waiting for `kubectl "
                             "pilotboat promote`")
    assert lines[2].endswith("-        0%       v1 is stable")


def test_name() -> None:
    assert render(rows(), "name") == ["microservice.pilotboat.dev/cart",
                                      "microservice.pilotboat.dev/search"]


def test_json_and_yaml_say_the_same() -> None:
    (as_json,) = render(rows(), "json")
    (as_yaml,) = render(rows(), "yaml")
    assert json.loads(as_json) == yaml.safe_load(as_yaml) == {"items": rows()}
    assert as_yaml.startswith("items:\n- namespace: shop\n  name: cart\n  version: v2\n")


def test_watch_prints_one_document_per_object() -> None:
    docs = render(rows(), "yaml", listing=False)
    assert [yaml.safe_load(d)["name"] for d in docs] == ["cart", "search"]
    assert all(d.startswith("---\n") for d in docs)
    assert [json.loads(d)["name"] for d in render(rows(), "json", listing=False)] == [
        "cart", "search"]


def test_a_change_is_a_new_row_or_another_word_but_not_age_alone() -> None:
    before = {(r["namespace"], r["name"]): r for r in rows()}
    older = [r | {"age": "3d"} for r in rows()]
    assert changed_rows(before, older) == []
    promoted = [rows()[0] | {"phase": "Healthy", "step": None}, rows()[1]]
    assert [r["name"] for r in changed_rows(before, promoted)] == ["cart"]
    added = [*rows(), rows()[1] | {"name": "payments"}]
    assert [r["name"] for r in changed_rows(before, added)] == ["payments"]


def test_an_unknown_output_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown output"):
        render(rows(), "xml")


def behind(ms: dict[str, Any]) -> dict[str, Any]:
    ms["metadata"]["generation"] = ms["status"]["observedGeneration"] + 1
    return ms


def retried(ms: dict[str, Any]) -> dict[str, Any]:
    ms["status"]["commands"]["retry"] = "20261126T030000Z-1234abcd"
    return ms


def ahead_of_stable(ms: dict[str, Any]) -> dict[str, Any]:
    ms["spec"]["version"] = "v2"
    return ms


def progressing(ms: dict[str, Any]) -> dict[str, Any]:
    ms["status"] |= {"phase": "Progressing", "currentStepIndex": 0, "canaryWeight": 25,
                     "message": "step 1/2 (setWeight): waiting for the canary at 25%"}
    return ms


@pytest.mark.parametrize(("ms", "expected"), [
    (fixture("released.Healthy"), ReleaseProgress("promoted", "Healthy — v1 is stable")),
    (fixture("rolled-back.Degraded"), ReleaseProgress(
        "failed", "Degraded — v2 aborted by request; all traffic back to stable v1")),
    (fixture("invalid-spec.Degraded"), ReleaseProgress(
        "failed", "Degraded — the spec is refused: " + next(
            c["message"] for c in fixture("invalid-spec.Degraded")["status"]["conditions"]
            if c["type"] == "SpecValid"))),
    (fixture("paused.Suspended"), ReleaseProgress(
        "waiting", "Paused weight=25% step=2/2 — step 2/2 (pause): waiting for `kubectl "
                   "pilotboat promote`")),
    (progressing(fixture("paused.Suspended")), ReleaseProgress(
        "waiting", "Progressing weight=25% step=1/2 — step 1/2 (setWeight): waiting for the "
                   "canary at 25%")),
    (fixture("waiting-for-expand.Progressing"), ReleaseProgress(
        "waiting", "Progressing weight=0% — v2 waits for its schema migrations: SchemaMigration "
                   "shop-schema: expand and backfill not applied yet (phase Pending: "
                   "OwnedDatabase missing-db is not ready)")),
    (behind(fixture("rolled-back.Degraded")), ReleaseProgress(
        "waiting", "waiting for the operator to see generation 3")),
    (retried(fixture("rolled-back.Degraded")), ReleaseProgress(
        "waiting", "Degraded — retry requested; waiting for the operator")),
    (ahead_of_stable(fixture("released.Healthy")), ReleaseProgress(
        "waiting", "Healthy at v1, not yet at v2")),
    ({"metadata": {"generation": 1}, "spec": {"version": "v2"},
      "status": {"observedGeneration": 1, "phase": "Healthy", "stableVersion": "v2",
                 "message": "v2 is stable"}},
     ReleaseProgress("promoted", "Healthy — v2 is stable")),  # release_progress's docstring
    ({"metadata": {"generation": 1}, "spec": {"version": "v1"}}, ReleaseProgress(
        "waiting", "waiting for the operator to see generation 1")),
], ids=["promoted", "rolled back", "spec refused", "paused", "progressing",
        "waiting for expand", "generation not seen", "retry requested", "stable behind",
        "docstring", "no status"])
def test_release_progress(ms: dict[str, Any], expected: ReleaseProgress) -> None:
    assert release_progress(ms) == expected


def readings(*names: str) -> Iterator[dict[str, Any]]:
    for name in names:
        yield fixture(name)
    while True:
        yield fixture(names[-1])


def wait(*names: str, timeout: float | None = 5) -> tuple[list[str], CommandError | None]:
    said: list[str] = []
    source = readings(*names)
    try:
        wait_for_release(lambda: next(source), "shop", timeout, say=said.append, interval=0.01)
    except CommandError as error:
        return said, error
    return said, None


def test_waiting_says_each_change_once_and_ends_promoted() -> None:
    said, error = wait("paused.Suspended", "paused.Suspended", "waiting-for-expand.Progressing",
                       "released.Healthy")
    assert error is None
    assert [line.split(" —")[0] for line in said] == [
        "shop: Paused weight=25% step=2/2", "shop: Progressing weight=0%", "shop: Healthy"]


def test_waiting_ends_with_exit_1_when_rolled_back() -> None:
    said, error = wait("paused.Suspended", "rolled-back.Degraded")
    assert error is not None and error.exit_code == 1
    assert error.format_message() == ("shop did not release: Degraded — v2 aborted by request; "
                                      "all traffic back to stable v1")
    assert said[-1].startswith("shop: Degraded")


def test_waiting_ends_with_exit_2_on_timeout() -> None:
    said, error = wait("paused.Suspended", timeout=0.05)
    assert error is not None and error.exit_code == 2
    assert error.format_message().startswith("timed out after 0.05s waiting for shop: Paused")
    assert len(said) == 1


@pytest.mark.parametrize(("text", "seconds"), [
    ("10m", 600.0), ("1h30m", 5400.0), ("90", 90.0), ("2.5", 2.5), ("0", None), ("0s", None),
])
def test_timeouts(text: str, seconds: float | None) -> None:
    assert duration_option(click.Context(click.Command("status")), click.Option(["--timeout"]),
                           text) == seconds


def test_a_timeout_that_is_no_duration_is_a_usage_error() -> None:
    with pytest.raises(click.BadParameter, match="not a duration"):
        duration_option(click.Context(click.Command("status")), click.Option(["--timeout"]),
                        "soon")
