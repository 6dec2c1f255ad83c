"""The operator loads the database and API-contract libraries on first use, not at start-up.

``pilotboat run`` imports :mod:`pilotboat.handlers.register`; an operator whose namespaces
have no OwnedDatabase, SchemaMigration or API contract never needs psycopg, pglast (the SQL
linter's parser) or openapi_spec_validator, about 15 MiB of resident memory between them.
Each check runs in a fresh interpreter: this test session has long imported them all.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.core

HEAVY = ("psycopg", "pglast", "openapi_spec_validator")
CONTRACT = Path(__file__).resolve().parents[2] / "examples" / "contracts" / "orders-v1.yaml"

_PRELUDE = f"""
import json, sys
import pilotboat.handlers.register
HEAVY = {HEAVY!r}
def loaded():
    return sorted(m for m in HEAVY if m in sys.modules)
out = {{"at_start": loaded()}}
"""


def _fresh(body: str) -> dict[str, Any]:
    """Run ``body`` after importing the handlers in a new interpreter; its ``out``, as JSON."""
    code = _PRELUDE + textwrap.dedent(body) + "\nprint(json.dumps(out))\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def test_importing_the_handlers_loads_no_database_driver_sql_parser_or_openapi_validator() -> None:
    out = _fresh("")
    assert out["at_start"] == []


def test_each_library_loads_on_first_use_and_works() -> None:
    out = _fresh(f"""
        from pilotboat.core.contracts import ContractError, load_document
        from pilotboat.handlers import context, databases, migrations

        # The first SQL lint: a SchemaMigration's admission warnings.
        spec = {{"database": "orders-db", "requiredBy": {{"service": "orders", "version": "v2"}},
                "expand": {{"sql": "ALTER TABLE orders DROP COLUMN customer_name"}},
                "contract": {{"sql": "ALTER TABLE orders DROP COLUMN legacy"}}}}
        out["warnings"] = migrations.lint_warnings("m", spec)
        out["after_lint"] = loaded()

        # The first contract check: the document is validated against the specification.
        out["valid_paths"] = sorted(load_document(open({str(CONTRACT)!r}).read())["paths"])
        try:
            load_document({{"openapi": "3.0.3", "paths": {{}}}})
            out["refused"] = None
        except ContractError as exc:
            out["refused"] = str(exc)
        out["after_contract"] = loaded()

        # The first OwnedDatabase or SchemaMigration pass: the engine and the admin connection.
        context.configure_runtime(context.Runtime(kube=None))
        out["engine"] = type(databases.database_engine()).__name__
        out["address"] = databases._server_address("host=db.internal port=6432 dbname=postgres")
        out["after_database"] = loaded()
    """)
    assert out["at_start"] == []
    refused = "spec.expand.sql: PB001 drop-column (refused)"
    assert any(w.startswith(refused) for w in out["warnings"])
    assert out["after_lint"] == ["pglast"]
    assert out["valid_paths"] == ["/orders", "/orders/{id}"]
    assert "not a valid OpenAPI 3.0 document" in (out["refused"] or "")
    assert out["after_contract"] == ["openapi_spec_validator", "pglast"]
    assert out["engine"] == "PostgresEngine"
    assert out["address"] == ["db.internal", "6432"]
    assert out["after_database"] == sorted(HEAVY)
