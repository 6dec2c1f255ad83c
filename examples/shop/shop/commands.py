"""Validation shared by the services' commands."""

from __future__ import annotations

import uuid
from typing import Any

from shop.web import HTTPError

__all__ = ["items_of", "order_id_of"]


def order_id_of(value: Any) -> str:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise HTTPError(422, "order_id must be a UUID") from None


def items_of(value: Any) -> list[dict[str, Any]]:
    """``[{sku, qty}]`` with qty ≥ 1, the same sku merged, sorted by sku (a fixed lock
    order for the stock rows)."""
    if not isinstance(value, list) or not value:
        raise HTTPError(422, "items must be a non-empty list of {sku, qty}")
    merged: dict[str, int] = {}
    for item in value:
        if not isinstance(item, dict):
            raise HTTPError(422, "items must be a non-empty list of {sku, qty}")
        sku, qty = item.get("sku"), item.get("qty")
        if not isinstance(sku, str) or not sku or not isinstance(qty, int) or qty < 1 \
                or isinstance(qty, bool):
            raise HTTPError(422, "each item needs a sku (string) and a qty (integer ≥ 1)")
        merged[sku] = merged.get(sku, 0) + qty
    return [{"sku": sku, "qty": merged[sku]} for sku in sorted(merged)]
