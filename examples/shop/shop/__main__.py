"""``python3 -m shop``: run the service ``SHOP_SERVICE`` names on ``PORT`` (8080).

Environment: ``SHOP_SERVICE``, ``SERVICE_VERSION``, ``DATABASE_URL`` (libpq URI), the other
services' ``*_URL`` (orders), ``HOST`` (0.0.0.0), ``PORT`` (8080), ``LOG_LEVEL`` (info).
"""

from __future__ import annotations

import logging
import os
import sys

import uvicorn

from shop import logs
from shop.web import Service, make_app

SERVICES = ("catalog", "inventory", "orders", "payments", "shipping", "notifications")
DEPENDENCIES = ("catalog", "inventory", "payments", "shipping", "notifications")


def build(name: str, database_url: str) -> Service:
    if name == "catalog":
        from shop.catalog import Catalog
        return Catalog(database_url)
    if name == "inventory":
        from shop.inventory import Inventory
        return Inventory(database_url)
    if name == "payments":
        from shop.payments import Payments
        return Payments(database_url)
    if name == "shipping":
        from shop.shipping import Shipping
        return Shipping(database_url)
    if name == "notifications":
        from shop.notifications import Notifications
        return Notifications(database_url)
    from shop.orders import Orders
    urls = {dep: os.environ.get(f"{dep.upper()}_URL") or f"http://{dep}:8080"
            for dep in DEPENDENCIES}
    return Orders(database_url, urls)


def main() -> None:
    name = os.environ.get("SHOP_SERVICE", "")
    if name not in SERVICES:
        sys.exit(f"shop: SHOP_SERVICE must be one of {', '.join(SERVICES)} (got {name!r})")
    logs.configure(name, os.environ.get("SERVICE_VERSION") or "dev",
                   os.environ.get("LOG_LEVEL", "info"))
    database_url = os.environ.get("DATABASE_URL", "")
    if not database_url:
        logging.getLogger("shop").error("DATABASE_URL is not set")
        sys.exit(2)
    app = make_app(build(name, database_url))
    uvicorn.run(app, host=os.environ.get("HOST", "0.0.0.0"),
                port=int(os.environ.get("PORT", "8080")), log_config=None, access_log=False,
                timeout_graceful_shutdown=10, server_header=False)


if __name__ == "__main__":
    main()
