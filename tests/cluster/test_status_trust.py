"""Release state only the operator may write is never taken from someone else's write."""

from __future__ import annotations

import pytest

from pilotboat.core.migration import ServiceVersion
from pilotboat.core.status_trust import foreign_status_fields
from pilotboat.handlers.migrations import _rolled_back
from tests.manifests import microservice
from tests.story import Story

pytestmark = pytest.mark.usefixtures("operator")


def test_a_forged_degraded_phase_is_no_rollback_and_is_written_over(story: Story) -> None:
    story.given(microservice("orders", replicas=1))
    story.wait_condition("Microservice", "orders", "Ready", timeout=90)

    # Someone allowed to send release commands writes more than a command.
    story.kube.merge_patch(
        "Microservice", story.namespace, "orders",
        {"status": {"phase": "Degraded", "canaryVersion": "v2", "commands": {"retry": "x"}}},
        subresource="status",
    )
    forged = story.get("Microservice", "orders")
    assert forged is not None and forged["status"]["phase"] == "Degraded"
    assert {"phase", "canaryVersion"} <= foreign_status_fields(
        forged["metadata"]["managedFields"])

    # A migration with runDownOnRollback would run `down` on a rollback: this is none.
    assert not _rolled_back(story.kube, story.namespace, ServiceVersion("orders", "v2"))

    # The operator decides again and writes the phase back as its own.
    story.patch("Microservice", "orders", {"metadata": {"labels": {"touched": "yes"}}})
    healed = story.wait_for(
        "Microservice", "orders",
        lambda o: ((o or {}).get("status") or {}).get("phase") == "Healthy",
        timeout=120, what="Healthy again",
    )
    assert healed is not None
    assert "phase" not in foreign_status_fields(healed["metadata"]["managedFields"])
