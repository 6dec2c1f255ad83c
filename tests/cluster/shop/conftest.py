"""Fixtures of the shop's service-level tests: ``shop`` (all six services running, each on its
own database) and ``shop_unstarted`` (the databases only). See harness.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.shop.harness import Shop
from tests.fixtures.postgres import PostgresServer


@pytest.fixture
def shop_unstarted(postgres_server: PostgresServer, tmp_path: Path) -> Iterator[Shop]:
    """Databases created, no process started."""
    shop = Shop(postgres_server, tmp_path / "logs")
    shop.create_databases()
    try:
        yield shop
    finally:
        shop.stop_all()
        shop.drop_databases()


@pytest.fixture
def shop(shop_unstarted: Shop) -> Shop:
    """All six services running, ready."""
    shop_unstarted.start_all()
    return shop_unstarted
