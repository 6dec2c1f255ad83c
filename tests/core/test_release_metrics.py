"""Per-Microservice release series and the tally of releases by phase: a changed phase moves
one Microservice from one count to the other, a count that falls to 0 reads 0, and a gone
Microservice's series go."""

from __future__ import annotations

import secrets

import pytest

from pilotboat.handlers import metrics

pytestmark = pytest.mark.core


def value(name: str, **labels: str) -> float | None:
    for family in metrics.REGISTRY.collect():
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return None


def test_the_phase_tally_follows_each_microservice_and_forgets_the_gone() -> None:
    ns = f"tally-{secrets.token_hex(3)}"  # the registry is the process's: a namespace of its own
    before = {p: value("pilotboat_releases", phase=p) or 0.0 for p in ("Healthy", "Failed")}

    metrics.release_observed(ns, "a", "Progressing", 20, 20)
    metrics.release_observed(ns, "b", "Failed", 0)
    metrics.release_observed(ns, "a", "Healthy", 0)
    assert value("pilotboat_releases", phase="Healthy") == before["Healthy"] + 1
    assert value("pilotboat_releases", phase="Failed") == before["Failed"] + 1
    assert value("pilotboat_release_phase", namespace=ns, service="a", phase="Progressing") is None
    assert value("pilotboat_release_phase", namespace=ns, service="a", phase="Healthy") == 1

    metrics.release_observed(ns, "b", None, 0)  # deleted
    assert value("pilotboat_releases", phase="Failed") == before["Failed"]  # back, not left at 1
    assert value("pilotboat_canary_weight", namespace=ns, service="b") is None
    assert value("pilotboat_release_phase", namespace=ns, service="b", phase="Failed") is None
    metrics.release_observed(ns, "b", None, 0)  # told twice (a pass queued behind the delete)
    assert value("pilotboat_releases", phase="Failed") == before["Failed"]

    metrics.release_observed(ns, "a", None, 0)
    assert value("pilotboat_releases", phase="Healthy") == before["Healthy"]
