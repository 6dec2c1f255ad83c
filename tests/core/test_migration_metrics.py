"""Per-migration series: one for the phase each SchemaMigration is in now, one for each gate
that holds it; earlier phases' and released gates' series go, and a deleted migration's go."""

from __future__ import annotations

import pytest

from pilotboat.handlers import metrics

pytestmark = pytest.mark.core


def series(name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted(s.labels.items())): s.value
            for m in metrics.REGISTRY.collect() for s in m.samples if s.name == name}


def of(namespace: str, migration: str, name: str) -> list[dict[str, str]]:
    return [dict(labels) for labels in series(name)
            if ("namespace", namespace) in labels and ("migration", migration) in labels]


def test_a_migrations_phase_and_gates_are_its_own_series() -> None:
    metrics.migration_observed("shop", "orders-split", "Expanding", [], now=0)
    metrics.migration_observed("shop", "orders-split", "Expanded",
                               [("Approved", "NotApproved"), ("OldVersionsGone", "Running")],
                               now=10)
    assert [s["phase"] for s in of("shop", "orders-split", "pilotboat_migration_phase")] == [
        "Expanded"]
    assert sorted(s["gate"] for s in of("shop", "orders-split", "pilotboat_migration_blocked")
                  ) == ["Approved", "OldVersionsGone"]

    metrics.migration_observed("shop", "orders-split", "Expanded", [("Approved", "NotApproved")],
                               now=20)
    assert [(s["gate"], s["reason"]) for s in of("shop", "orders-split",
                                                 "pilotboat_migration_blocked")] == [
        ("Approved", "NotApproved")]
    gates = series("pilotboat_migration_gates_blocked")
    assert gates[(("gate", "OldVersionsGone"), ("reason", "Running"))] == 0

    metrics.migration_forgotten("shop", "orders-split")
    assert of("shop", "orders-split", "pilotboat_migration_phase") == []
    assert of("shop", "orders-split", "pilotboat_migration_blocked") == []
    assert series("pilotboat_migration_gates_blocked")[
        (("gate", "Approved"), ("reason", "NotApproved"))] == 0


def test_two_migrations_do_not_share_series() -> None:
    metrics.migration_observed("a", "m", "Expanded", [("Approved", "NotApproved")], now=0)
    metrics.migration_observed("b", "m", "Contracted", [], now=0)
    assert of("a", "m", "pilotboat_migration_blocked") != []
    assert of("b", "m", "pilotboat_migration_blocked") == []
    assert [s["phase"] for s in of("b", "m", "pilotboat_migration_phase")] == ["Contracted"]
    metrics.migration_forgotten("a", "m")
    metrics.migration_forgotten("b", "m")
