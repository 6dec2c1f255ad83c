"""The shop's product range: what catalog sells and inventory stocks at first start.

``POSTER-LTD`` is a limited edition of 3: orders of it beyond that are cancelled (out of
stock), one of the saga's compensation paths.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["PRODUCTS", "Product"]


class Product(NamedTuple):
    sku: str
    name: str
    price_cents: int
    initial_stock: int


PRODUCTS: tuple[Product, ...] = (
    Product("TEA-001", "Green tea, 100 g", 650, 1_000_000),
    Product("MUG-002", "Stoneware mug", 1200, 1_000_000),
    Product("BEAN-003", "Coffee beans, 1 kg", 2400, 1_000_000),
    Product("PRESS-004", "French press", 3500, 1_000_000),
    Product("KETTLE-005", "Gooseneck kettle", 5900, 1_000_000),
    Product("POSTER-LTD", "Limited edition poster", 9900, 3),
)
