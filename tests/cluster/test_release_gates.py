"""A release waits for the schema migrations its version needs."""

from __future__ import annotations

from typing import Any

import pytest

from pilotboat import API_VERSION
from tests.cluster.test_databases import given_server, owned_database
from tests.fixtures.postgres import PostgresServer
from tests.manifests import microservice
from tests.story import Story

pytestmark = pytest.mark.usefixtures("operator")

STEPS = [{"setWeight": 50}, {"pause": {"duration": "1s"}}]


def orders(version: str) -> dict[str, Any]:
    return microservice("orders", version=version, replicas=2,
                        database={"ownedDatabase": "orders-db"},
                        rollout={"canary": {"steps": STEPS}})


def migration(expand: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "SchemaMigration",
        "metadata": {"name": "add-note"},
        "spec": {
            "database": "orders-db",
            "requiredBy": {"service": "orders", "version": "v2"},
            "expand": {"sql": expand},
            "contract": {"sql": "ALTER TABLE orders DROP COLUMN legacy_note"},
        },
    }


def test_a_release_waits_until_the_expand_it_needs_has_run(
    story: Story, postgres_server: PostgresServer
) -> None:
    given_server(story.kube, postgres_server)
    story.given(owned_database("orders-db", postgres_server))
    story.given(orders("v1"))
    story.wait_for("Microservice", "orders",
                   lambda o: ((o or {}).get("status") or {}).get("phase") == "Healthy",
                   timeout=90, what="Healthy at v1")
    # An expand the linter refuses never runs, so v2 must not start.
    story.given(migration("ALTER TABLE legacy_orders DROP COLUMN legacy_note"))
    story.apply(orders("v2"))

    ms = story.wait_condition("Microservice", "orders", "MigrationsReady", "False", timeout=60)
    cond = next(c for c in ms["status"]["conditions"] if c["type"] == "MigrationsReady")
    assert "add-note" in cond["message"] and cond["reason"] == "WaitingForExpand"
    assert story.get("Deployment", "orders-canary") is None
    assert ms["status"]["stableVersion"] == "v1"

    story.apply(migration("CREATE TABLE orders (id int, note text)"))
    done = story.wait_for(
        "Microservice", "orders",
        lambda o: ((o or {}).get("status") or {}).get("stableVersion") == "v2"
        and o["status"]["phase"] == "Healthy",  # type: ignore[index]
        timeout=120, what="released once the expand ran",
    )
    assert done is not None
    reasons = [e["reason"] for e in story.events("orders")]
    assert "RolloutStarted" in reasons and "Promoted" in reasons
