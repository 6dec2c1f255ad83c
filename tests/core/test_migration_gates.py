"""Migration gates and the next-phase decision, from the docstring's worked examples."""

from __future__ import annotations

import doctest
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pilotboat.core import migration
from pilotboat.core.migration import (
    Action,
    AppliedPhase,
    Approval,
    BackfillSpec,
    ContractSpec,
    ExpandSpec,
    GateName,
    MigrationDefinition,
    MigrationObservations,
    MigrationPhase,
    Phase,
    ServiceVersion,
    checksum,
    decide,
    normalize_sql,
)

pytestmark = pytest.mark.core

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
EXPAND = "ALTER TABLE users ADD COLUMN full_name text;"
BACKFILL = ("UPDATE users SET full_name = name WHERE id IN "
            "(SELECT id FROM users WHERE full_name IS NULL LIMIT :batch_size)")
VERIFY = "SELECT count(*) = 0 FROM users WHERE full_name IS NULL"
CONTRACT = "ALTER TABLE users DROP COLUMN name;"
DOWN = "ALTER TABLE users DROP COLUMN IF EXISTS full_name;"

DEFINITION = MigrationDefinition(
    name="users-full-name",
    required_by=ServiceVersion("catalog", "v2"),
    expand=ExpandSpec(EXPAND, down=DOWN),
    backfill=BackfillSpec(BACKFILL, batch_size=500),
    verify_sql=VERIFY,
    contract=ContractSpec(CONTRACT, soak=timedelta(minutes=10)),
)
DELETING = BackfillSpec("DELETE FROM users WHERE id IN "
                        "(SELECT id FROM users WHERE name IS NULL LIMIT :batch_size)")
PLAIN = replace(DEFINITION, backfill=None, verify_sql=None,
                contract=ContractSpec(CONTRACT))


def applied(*phases: Phase, at: datetime = T0, definition: MigrationDefinition = DEFINITION
            ) -> tuple[AppliedPhase, ...]:
    return tuple(AppliedPhase(p, checksum(definition.sql_of(p) or ""), at, "operator")
                 for p in phases)


GOOD = Approval("alice", checksum(CONTRACT))
ONLY_V2 = {"v2": 3}
READY = MigrationObservations(running=ONLY_V2, last_seen={"v1": T0 + timedelta(minutes=1)},
                              verify_result=True, approvals=(GOOD,))
LATER = T0 + timedelta(minutes=30)

# (id, definition, history, observations, now, action, phase, reason)
WORKED_EXAMPLES = [
    ("empty history expands", DEFINITION, (), MigrationObservations(), T0,
     Action.APPLY_EXPAND, MigrationPhase.EXPANDING, "ExpandPending"),
    ("backfill follows expand", DEFINITION, applied(Phase.EXPAND),
     MigrationObservations(running={"v1": 2}), T0,
     Action.RUN_BACKFILL_BATCH, MigrationPhase.BACKFILL_RUNNING, "BackfillPending"),
    ("verify runs once the gates before it hold", DEFINITION,
     applied(Phase.EXPAND, Phase.BACKFILL), replace(READY, verify_result=None), LATER,
     Action.RUN_VERIFY, MigrationPhase.AWAITING_CONTRACT, "VerifyPending"),
    ("verify waits for the old version to go", DEFINITION,
     applied(Phase.EXPAND, Phase.BACKFILL), MigrationObservations(running={"v1": 2}), T0,
     Action.WAIT, MigrationPhase.EXPANDED, "OldVersionsRunning"),
    ("verify waits for the soak", DEFINITION, applied(Phase.EXPAND, Phase.BACKFILL),
     replace(READY, verify_result=None), T0 + timedelta(minutes=5),
     Action.WAIT, MigrationPhase.AWAITING_CONTRACT, "Soaking"),
    ("old version still runs", DEFINITION, applied(Phase.EXPAND, Phase.BACKFILL),
     replace(READY, running={"v1": 2, "v2": 1}), LATER,
     Action.WAIT, MigrationPhase.EXPANDED, "OldVersionsRunning"),
    ("required version not running yet", PLAIN, applied(Phase.EXPAND, definition=PLAIN),
     replace(READY, running={}), LATER,
     Action.WAIT, MigrationPhase.EXPANDED, "RequiredVersionNotRunning"),
    ("soak not over", DEFINITION, applied(Phase.EXPAND, Phase.BACKFILL), READY,
     T0 + timedelta(minutes=5), Action.WAIT, MigrationPhase.AWAITING_CONTRACT, "Soaking"),
    ("verify false", DEFINITION, applied(Phase.EXPAND, Phase.BACKFILL),
     replace(READY, verify_result=False), LATER,
     Action.WAIT, MigrationPhase.AWAITING_CONTRACT, "VerifyFailed"),
    ("no approval", DEFINITION, applied(Phase.EXPAND, Phase.BACKFILL),
     replace(READY, approvals=()), LATER,
     Action.WAIT, MigrationPhase.AWAITING_CONTRACT, "NotApproved"),
    ("approval of another checksum is void", DEFINITION, applied(Phase.EXPAND, Phase.BACKFILL),
     replace(READY, approvals=(Approval("bob", checksum("DROP TABLE users")),)), LATER,
     Action.WAIT, MigrationPhase.AWAITING_CONTRACT, "ApprovalVoid"),
    ("every gate holds", DEFINITION, applied(Phase.EXPAND, Phase.BACKFILL), READY, LATER,
     Action.APPLY_CONTRACT, MigrationPhase.CONTRACTING, "GatesHold"),
    ("plain migration, no soak", PLAIN, applied(Phase.EXPAND, definition=PLAIN),
     replace(READY, verify_result=None, last_seen={}), T0,
     Action.APPLY_CONTRACT, MigrationPhase.CONTRACTING, "GatesHold"),
    ("contracted is final", DEFINITION, applied(Phase.EXPAND, Phase.BACKFILL, Phase.CONTRACT),
     READY, LATER, Action.WAIT, MigrationPhase.CONTRACTED, "Contracted"),
    ("rollback keeps expand by default", DEFINITION, applied(Phase.EXPAND),
     MigrationObservations(rolled_back=True), T0,
     Action.WAIT, MigrationPhase.ROLLED_BACK, "RolloutRolledBack"),
    ("rollback runs down when asked", replace(DEFINITION, run_down_on_rollback=True),
     applied(Phase.EXPAND), MigrationObservations(rolled_back=True), T0,
     Action.APPLY_DOWN, MigrationPhase.ROLLED_BACK, "RolloutRolledBack"),
    ("down asked but missing", replace(DEFINITION, run_down_on_rollback=True,
                                       expand=ExpandSpec(EXPAND)),
     applied(Phase.EXPAND), MigrationObservations(rolled_back=True), T0,
     Action.REFUSE, MigrationPhase.FAILED, "DownMissing"),
    ("down applied is final", DEFINITION, applied(Phase.EXPAND, Phase.DOWN),
     MigrationObservations(rolled_back=True), T0,
     Action.WAIT, MigrationPhase.ROLLED_BACK, "DownApplied"),
    ("changed expand after apply", replace(DEFINITION, expand=ExpandSpec(
        "ALTER TABLE users ADD COLUMN full_name varchar(200);")),
     applied(Phase.EXPAND), MigrationObservations(), T0,
     Action.REFUSE, MigrationPhase.FAILED, "ChecksumMismatch"),
    ("unsafe expand refused before it runs", replace(DEFINITION, expand=ExpandSpec(CONTRACT)),
     (), MigrationObservations(), T0, Action.REFUSE, MigrationPhase.FAILED, "UnsafeSql"),
    ("a deleting backfill waits for its approval", replace(DEFINITION, backfill=DELETING),
     applied(Phase.EXPAND), MigrationObservations(), T0,
     Action.REFUSE, MigrationPhase.FAILED, "UnsafeSql"),
    ("an approved deleting backfill runs", replace(DEFINITION, backfill=DELETING),
     applied(Phase.EXPAND), MigrationObservations(approved_phases=frozenset({"backfill"})), T0,
     Action.RUN_BACKFILL_BATCH, MigrationPhase.BACKFILL_RUNNING, "BackfillPending"),
    ("an approval of another phase lifts nothing", replace(DEFINITION, backfill=DELETING),
     applied(Phase.EXPAND), MigrationObservations(approved_phases=frozenset({"expand"})), T0,
     Action.REFUSE, MigrationPhase.FAILED, "UnsafeSql"),
]


@pytest.mark.parametrize(
    ("definition", "history", "observations", "now", "action", "phase", "reason"),
    [case[1:] for case in WORKED_EXAMPLES], ids=[case[0] for case in WORKED_EXAMPLES])
def test_worked_examples(definition: MigrationDefinition, history: tuple[AppliedPhase, ...],
                         observations: MigrationObservations, now: datetime, action: Action,
                         phase: MigrationPhase, reason: str) -> None:
    decision = decide(definition, history, observations, now)
    assert (decision.action, decision.phase, decision.reason) == (action, phase, reason)


def test_old_version_message_reads_like_a_dba_would_say_it() -> None:
    seen = datetime(2025, 3, 1, 12, 3, 10, tzinfo=UTC)
    observations = replace(READY, running={"v1": 2, "v2": 1}, last_seen={"v1": seen})
    decision = decide(DEFINITION, applied(Phase.EXPAND, Phase.BACKFILL), observations, LATER)
    gate = decision.gate(GateName.OLD_VERSIONS_GONE)
    assert not gate.holds
    assert gate.message == "version v1 still runs in 2 pods (last seen 12:03:10)"


def test_void_approval_says_why() -> None:
    stale = checksum("ALTER TABLE users DROP COLUMN name CASCADE;")
    observations = replace(READY, approvals=(Approval("bob", stale),))
    gate = decide(DEFINITION, applied(Phase.EXPAND, Phase.BACKFILL), observations,
                  LATER).gate(GateName.APPROVED)
    assert (gate.holds, gate.reason) == (False, "ApprovalVoid")
    assert "approval by bob is void" in gate.message
    assert stale[:12] in gate.message and checksum(CONTRACT)[:12] in gate.message


def test_checksum_mismatch_names_phase_and_both_checksums() -> None:
    changed = "ALTER TABLE users ADD COLUMN full_name varchar(200);"
    decision = decide(replace(DEFINITION, expand=ExpandSpec(changed)), applied(Phase.EXPAND),
                      MigrationObservations(), T0)
    assert decision.message.startswith("expand was applied with checksum")
    assert checksum(EXPAND) in decision.message and checksum(changed) in decision.message


def test_soak_counts_from_when_the_old_version_was_last_seen() -> None:
    observations = replace(READY, last_seen={"v1": LATER - timedelta(minutes=4)})
    gate = decide(DEFINITION, applied(Phase.EXPAND, Phase.BACKFILL), observations,
                  LATER).gate(GateName.SOAK_ELAPSED)
    assert not gate.holds
    # No relative time: a status message that changed on every pass would wake the watch.
    assert gate.message == "soak of 10m ends at 12:36:00"


def test_verify_waits_for_the_gates_before_it_and_says_so() -> None:
    decision = decide(DEFINITION, applied(Phase.EXPAND, Phase.BACKFILL),
                      replace(READY, running={"v1": 1, "v2": 1}, verify_result=None), LATER)
    verify = decision.gate(GateName.VERIFY_HOLDS)
    assert (verify.holds, verify.reason) == (False, "VerifyWaiting")
    # The wait names the gates before verify, and verify: not the approval that comes after.
    assert decision.message == f"{decision.gate(GateName.OLD_VERSIONS_GONE).message}; " \
        f"{verify.message}"


def test_gates_are_reported_in_order() -> None:
    decision = decide(DEFINITION, applied(Phase.EXPAND, Phase.BACKFILL), READY, LATER)
    assert [g.name for g in decision.gates] == list(GateName)
    assert all(g.holds for g in decision.gates)


@pytest.mark.parametrize(("sql", "normalized"), [
    ("SELECT 1;", "SELECT 1;"),
    ("\n\n  SELECT 1;  \n\n", "  SELECT 1;"),
    ("SELECT 1;\r\nSELECT 2;\t\r\n", "SELECT 1;\nSELECT 2;"),
    ("a\n\n\nb", "a\n\n\nb"),
])
def test_normalization(sql: str, normalized: str) -> None:
    assert normalize_sql(sql) == normalized


def test_docstring_examples() -> None:
    assert doctest.testmod(migration).failed == 0


# --- properties ----------------------------------------------------------------------------

phases_applied = st.sets(st.sampled_from(list(Phase))).map(
    lambda ps: tuple(p for p in Phase if p in ps))
observations = st.builds(
    MigrationObservations,
    running=st.dictionaries(st.sampled_from(["v1", "v2", "v3"]), st.integers(0, 3)),
    last_seen=st.dictionaries(st.sampled_from(["v1", "v2", "v3"]),
                              st.integers(0, 3600).map(lambda s: T0 + timedelta(seconds=s))),
    verify_result=st.none() | st.booleans(),
    approvals=st.lists(st.builds(Approval, st.sampled_from(["alice", "bob"]),
                                 st.sampled_from([checksum(CONTRACT), checksum("x")])),
                       max_size=2).map(tuple),
    rolled_back=st.booleans(),
)
definitions = st.builds(
    lambda backfill, verify, down, soak: replace(
        DEFINITION, backfill=DEFINITION.backfill if backfill else None,
        verify_sql=VERIFY if verify else None, run_down_on_rollback=down,
        contract=ContractSpec(CONTRACT, soak=timedelta(seconds=soak))),
    st.booleans(), st.booleans(), st.booleans(), st.integers(0, 7200))
nows = st.integers(0, 3 * 3600).map(lambda s: T0 + timedelta(seconds=s))

APPLYING = {Action.APPLY_EXPAND: Phase.EXPAND, Action.RUN_BACKFILL_BATCH: Phase.BACKFILL,
            Action.APPLY_CONTRACT: Phase.CONTRACT, Action.APPLY_DOWN: Phase.DOWN}


@given(definitions, phases_applied, observations, nows)
def test_contract_only_when_every_gate_holds(definition: MigrationDefinition,
                                             phases: tuple[Phase, ...],
                                             seen: MigrationObservations,
                                             now: datetime) -> None:
    decision = decide(definition, applied(*phases, definition=definition), seen, now)
    if decision.action is Action.APPLY_CONTRACT:
        assert decision.gates and all(g.holds for g in decision.gates)
        assert not seen.rolled_back


@given(definitions, phases_applied, observations, nows)
def test_no_phase_is_applied_twice(definition: MigrationDefinition, phases: tuple[Phase, ...],
                                   seen: MigrationObservations, now: datetime) -> None:
    decision = decide(definition, applied(*phases, definition=definition), seen, now)
    if decision.action in APPLYING:
        assert APPLYING[decision.action] not in phases


@given(definitions, phases_applied, observations, nows)
def test_phases_are_asked_for_in_order(definition: MigrationDefinition,
                                       phases: tuple[Phase, ...],
                                       seen: MigrationObservations, now: datetime) -> None:
    decision = decide(definition, applied(*phases, definition=definition), seen, now)
    if decision.action in APPLYING:
        assert migration.phase_order_violation(APPLYING[decision.action],
                                               frozenset(phases)) is None


@given(definitions, phases_applied.filter(bool), observations, nows)
def test_a_changed_applied_phase_is_always_refused(definition: MigrationDefinition,
                                                   phases: tuple[Phase, ...],
                                                   seen: MigrationObservations,
                                                   now: datetime) -> None:
    history = applied(*phases, definition=definition)
    tampered = (replace(history[0], checksum="0" * 64), *history[1:])
    decision = decide(definition, tampered, seen, now)
    assert (decision.action, decision.reason) == (Action.REFUSE, "ChecksumMismatch")


@given(st.text(max_size=100))
def test_checksum_ignores_only_trailing_whitespace_and_surrounding_blank_lines(text: str
                                                                               ) -> None:
    assert checksum(text) == checksum(f"\n \n{text}  \n\n")
    assert checksum(text) == checksum(normalize_sql(text))
