"""Who sent a release command: the plan names the sender of each command it carries out, in
the Event and in `status.lastCommand`, verified only where the API server vouched for it; the
webhook's stamp and the times the operator reads from managedFields."""

from __future__ import annotations

import datetime as _dt
from dataclasses import replace
from typing import Any

import pytest

from pilotboat.api.microservice import MicroserviceStatus
from pilotboat.core.release import ReleaseObservation, desired_revision, plan_release
from pilotboat.handlers.commands import command_identity_patch, command_times, pending_commands
from tests.core.test_release import NOW, START, WEIGHT, in_release


def sent(base: dict[str, Any], **commands: str) -> dict[str, Any]:
    return {**base, "commands": commands}


ROLLED_BACK = in_release(1, abortedRevision=desired_revision(START))


@pytest.mark.parametrize(
    ("status", "verified", "command", "reason", "told"),
    [
        pytest.param(sent(in_release(1, 25), promote="t1", promoteBy="alice"), {"promote"},
                     "promote", "PauseSkipped", "promote sent by alice", id="promote a pause"),
        pytest.param(sent(in_release(1, 25), promote="t1", promoteBy="alice"), set(),
                     "promote", "PauseSkipped", "promote sent by alice (unverified)",
                     id="no policy: unverified"),
        pytest.param(sent(in_release(1, 25), promote="t1"), {"promote"},
                     "promote", "PauseSkipped", "promote sent by an unnamed user (unverified)",
                     id="no sender named: never verified"),
        pytest.param(sent(in_release(2, 25), promote="t1", promoteBy="bob"), {"promote"},
                     "promote", "AnalysisSkipped", "promote sent by bob", id="skip an analysis"),
        pytest.param(sent(in_release(0), abort="a1", abortBy="carol", promoteBy="mallory"),
                     {"abort"}, "abort", "Aborted", "abort sent by carol", id="abort"),
        pytest.param(sent(in_release(0), promoteFull="f1", promoteFullBy="dave"),
                     {"promoteFull"}, "promoteFull", "Promoting", "promoteFull sent by dave",
                     id="promote fully"),
        pytest.param(sent(ROLLED_BACK, retry="r1", retryBy="erin"), {"retry"}, "retry",
                     "RolloutStarted", "retry sent by erin", id="retry"),
    ],
)  # fmt: skip
def test_a_command_carried_out_names_its_sender(
    status: dict[str, Any], verified: set[str], command: str, reason: str, told: str
) -> None:
    obs = replace(WEIGHT, status=MicroserviceStatus.model_validate(status),
                  verified_commands=frozenset(verified))  # fmt: skip
    plan = plan_release(obs)

    event = next(e for e in plan.events if e.reason == reason)
    assert event.message.endswith(f"; {told}"), event.message
    last = plan.status.last_command
    assert last is not None
    by = status["commands"].get(f"{command}By")
    assert (last.name, last.by, last.verified) == (command, by, bool(by) and command in verified)
    assert last.at == _dt.datetime.fromtimestamp(NOW, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _handled(obs: ReleaseObservation) -> ReleaseObservation:
    plan = plan_release(obs)
    return replace(obs, status=plan.status, now=obs.now + 5)


@pytest.mark.parametrize(
    "obs",
    [
        pytest.param(WEIGHT, id="no command"),
        pytest.param(replace(START, status=MicroserviceStatus.model_validate(
            {"commands": {"promote": "t1", "promoteBy": "alice"}})),
            id="a command a new release swallows"),
        pytest.param(_handled(replace(WEIGHT, status=MicroserviceStatus.model_validate(
            sent(in_release(1, 25), promote="t1", promoteBy="alice")))),
            id="a command handled in an earlier pass"),
    ],
)  # fmt: skip
def test_no_command_carried_out_no_sender_told(obs: ReleaseObservation) -> None:
    before = obs.status.last_command
    plan = plan_release(obs)
    assert not [e for e in plan.events if " sent by " in e.message]
    assert plan.status.last_command == before


def test_the_last_command_stays_until_the_next_one() -> None:
    obs = replace(WEIGHT, status=MicroserviceStatus.model_validate(
        sent(in_release(1, 25), promote="t1", promoteBy="alice")))  # fmt: skip
    first = plan_release(obs)
    later = plan_release(replace(obs, status=first.status, now=NOW + 30))
    assert later.status.last_command == first.status.last_command
    assert first.status.last_command is not None and first.status.last_command.by == "alice"


# --- the webhook's stamp, and when a command was sent ------------------------------------


def ms(**commands: str) -> dict[str, Any]:
    return {"status": {"commands": commands}}


@pytest.mark.parametrize(
    ("new", "old", "stamp"),
    [
        pytest.param(ms(promote="t2"), ms(promote="t1"), {"promoteBy": "alice"},
                     id="a new token, no sender: stamped"),
        pytest.param(ms(promote="t2", promoteBy="bob"), ms(promote="t1", promoteBy="bob"),
                     {"promoteBy": "alice"}, id="the last sender's name left: stamped over"),
        pytest.param(ms(promote="t2", promoteBy="bob"), ms(promote="t1"), None,
                     id="a name the client wrote stays (the policy judges it)"),
        pytest.param(ms(promote="t2", promoteBy="alice"), ms(promote="t1"), None,
                     id="the client named itself"),
        pytest.param(ms(promote="t1", promoteBy="bob"), ms(promote="t1", promoteBy="bob"), None,
                     id="no token changed"),
        pytest.param(ms(abort="a", retry="r"), {}, {"abortBy": "alice", "retryBy": "alice"},
                     id="first commands"),
        pytest.param(ms(), ms(promote="t1"), None, id="a token removed"),
    ],
)  # fmt: skip
def test_the_webhook_stamps_the_sender_of_a_new_token(
    new: dict[str, Any], old: dict[str, Any], stamp: dict[str, str] | None
) -> None:
    assert command_identity_patch(new, old, {"username": "alice"}) == stamp


def test_no_user_no_stamp() -> None:
    assert command_identity_patch(ms(promote="t2"), ms(promote="t1"), {}) is None


def test_commands_are_timed_by_the_entry_that_owns_their_token() -> None:
    def entry(manager: str, at: str, *fields: str) -> dict[str, Any]:
        owned = {f"f:{f}": {} for f in fields}
        return {"manager": manager, "time": at,
                "fieldsV1": {"f:status": {"f:commands": owned}}}  # fmt: skip

    times = command_times([entry("kubectl-pilotboat", "2026-01-01T00:00:10Z", "promote",
                                 "promoteBy"),
                           entry("argocd-server", "2026-01-01T00:00:20Z", "abort", "abortBy"),
                           {"manager": "pilotboat", "time": "2026-01-01T00:00:30Z"}])  # fmt: skip
    assert {k: v.second for k, v in times.items()} == {"promote": 10, "abort": 20}


def test_only_unhandled_commands_are_pending() -> None:
    status = {"commands": {"promote": "t2", "abort": "a1", "promoteBy": "x"},
              "release": {"handledCommands": {"promote": "t1", "abort": "a1"}}}  # fmt: skip
    assert pending_commands(status) == ["promote"]
