"""The environment a service gets from its OwnedDatabase's credentials Secret.

Values never enter the pod template: each variable is a ``secretKeyRef`` to a key of the
Secret the OwnedDatabase reconciler writes, so the password stays in the Secret and a
rotated Secret reaches new pods without re-rendering the Deployment.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DATABASE_ENV", "SECRET_KEYS", "database_env"]

SECRET_KEYS = ("host", "port", "dbname", "user", "password", "uri")
"""Keys of the credentials Secret."""

DATABASE_ENV: tuple[tuple[str, str], ...] = (
    ("DATABASE_URL", "uri"),
    ("PGHOST", "host"),
    ("PGPORT", "port"),
    ("PGDATABASE", "dbname"),
    ("PGUSER", "user"),
    ("PGPASSWORD", "password"),
)
"""Environment variable → Secret key; the ``PG*`` names are what libpq reads by itself."""


def database_env(secret_name: str) -> list[dict[str, Any]]:
    """Container ``env`` entries reading the credentials from ``secret_name``.

    >>> database_env("orders-db")[1]
    {'name': 'PGHOST', 'valueFrom': {'secretKeyRef': {'name': 'orders-db', 'key': 'host'}}}
    >>> [e["name"] for e in database_env("s")]
    ['DATABASE_URL', 'PGHOST', 'PGPORT', 'PGDATABASE', 'PGUSER', 'PGPASSWORD']
    """
    return [
        {"name": env, "valueFrom": {"secretKeyRef": {"name": secret_name, "key": key}}}
        for env, key in DATABASE_ENV
    ]
