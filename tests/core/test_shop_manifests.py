"""The shop's manifests (examples/shop/*.yaml) are valid resources and keep INTERFACE.md's
promises: one Microservice and one OwnedDatabase per service, the shop image on the real node,
analysis steps for payments and orders, and a migration the linter accepts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from pilotboat.api.database import OwnedDatabaseSpec
from pilotboat.api.microservice import MicroserviceSpec
from pilotboat.api.migration import SchemaMigrationSpec
from pilotboat.core.sqllint import (
    lint_backfill,
    lint_contract,
    lint_down,
    lint_expand,
    lint_verify,
)

SHOP = Path(__file__).resolve().parents[2] / "examples" / "shop"
SERVICES = ("catalog", "inventory", "orders", "payments", "shipping", "notifications")


def _docs(name: str) -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in yaml.safe_load_all((SHOP / name).read_text()) if d}


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_has_its_microservice_and_owned_database(service: str) -> None:
    docs = _docs(f"{service}.yaml")
    assert set(docs) == {"Microservice", "OwnedDatabase"}
    ms = MicroserviceSpec.model_validate(docs["Microservice"]["spec"])
    db = OwnedDatabaseSpec.model_validate(docs["OwnedDatabase"]["spec"])
    assert docs["Microservice"]["metadata"]["name"] == service
    assert docs["OwnedDatabase"]["metadata"]["name"] == f"{service}-db"
    assert db.owner == service and db.server_ref.name == "shop-postgres"
    assert ms.database is not None and ms.database.owned_database == f"{service}-db"
    assert ms.image.startswith("localhost/pilotboat/shop:") and ms.image_pull_policy == "Never"
    assert ms.node_selector == {"type": "real"}
    assert ms.readiness_probe is not None and ms.readiness_probe.path == "/healthz"
    assert [p.port for p in ms.ports] == [8080]
    env = {e.name: e.value for e in ms.env or []}
    assert env["SHOP_SERVICE"] == service
    analysed = ms.rollout is not None and ms.rollout.canary is not None and any(
        step.analysis for step in ms.rollout.canary.steps)
    assert analysed == (service in ("payments", "orders"))
    if service == "orders":
        assert env["ORDERS_SCHEMA"] == "v1"
        assert {k for k in env if k.endswith("_URL")} == {
            "CATALOG_URL", "INVENTORY_URL", "PAYMENTS_URL", "SHIPPING_URL", "NOTIFICATIONS_URL"}


def test_the_orders_migration_is_valid_and_lint_clean() -> None:
    doc = _docs("orders-migration.yaml")["SchemaMigration"]
    assert doc["metadata"]["name"] == "orders-split-customer-name"
    spec = SchemaMigrationSpec.model_validate(doc["spec"])
    assert spec.database == "orders-db"
    assert (spec.required_by.service, spec.required_by.version) == ("orders", "v2")
    assert spec.backfill is not None and spec.verify is not None and spec.expand.down
    for findings in (lint_expand(spec.expand.sql), lint_down(spec.expand.down),
                     lint_backfill(spec.backfill.sql), lint_verify(spec.verify.sql),
                     lint_contract(spec.contract.sql)):
        assert findings == ()
