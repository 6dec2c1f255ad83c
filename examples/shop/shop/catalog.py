"""Catalog: the products and their prices. Read-only for customers."""

from __future__ import annotations

from shop.db import Connection, Database
from shop.products import PRODUCTS
from shop.web import Call, HTTPError, Reply, Route, Service

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS products (
         sku text PRIMARY KEY,
         name text NOT NULL,
         price_cents bigint NOT NULL CHECK (price_cents >= 0))""",
)


def _seed(conn: Connection) -> None:
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO products (sku, name, price_cents) VALUES (%s, %s, %s)"
            " ON CONFLICT (sku) DO NOTHING",
            [(p.sku, p.name, p.price_cents) for p in PRODUCTS])


class Catalog(Service):
    name = "catalog"

    def __init__(self, database_url: str) -> None:
        super().__init__(Database(database_url, SCHEMA, _seed))

    def routes(self) -> list[Route]:
        return [Route("GET", "/products", self.list_products),
                Route("GET", "/products/{sku}", self.get_product)]

    def list_products(self, call: Call) -> Reply:
        with self.db.connection() as conn:
            rows = conn.execute("SELECT sku, name, price_cents FROM products ORDER BY sku")
            return Reply(200, rows.fetchall())

    def get_product(self, call: Call) -> Reply:
        with self.db.connection() as conn:
            row = conn.execute("SELECT sku, name, price_cents FROM products WHERE sku = %s",
                               (call.path_params["sku"],)).fetchone()
        if row is None:
            raise HTTPError(404, f"no product {call.path_params['sku']}")
        return Reply(200, row)
