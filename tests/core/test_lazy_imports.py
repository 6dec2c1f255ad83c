"""The operator loads the database and API-contract libraries on first use, not at start-up.

``pilotboat run`` imports :mod:`pilotboat.handlers.register`; an operator whose namespaces
have no OwnedDatabase, SchemaMigration or API contract never needs psycopg, pglast (the SQL
linter's parser) or openapi_spec_validator, about 15 MiB of resident memory between them.
Before that, ``python -m pilotboat run`` imports the command group (:mod:`pilotboat.cli.main`),
which holds every subcommand: ``pilotboat lint`` loads jsonschema and pglast when it lints,
not when the group is built, so neither does ``run``, ``--help`` or ``version``.
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
CLI_HEAVY = (*HEAVY, "jsonschema")
"""What the command line must not load before a command needs it (jsonschema: the lint's
CRD schema check, and openapi_spec_validator's)."""
CONTRACT = Path(__file__).resolve().parents[2] / "examples" / "contracts" / "orders-v1.yaml"
HANDLERS = "import pilotboat.handlers.register"
COMMAND_LINE = "import pilotboat.cli.main, pilotboat.cli.run"
"""What ``python -m pilotboat run`` imports before the command starts the operator."""

_PRELUDE = """
import json, sys
{imports}
HEAVY = {heavy!r}
def loaded():
    return sorted(m for m in HEAVY if m in sys.modules)
out = {{"at_start": loaded()}}
"""


def _fresh(
    body: str, imports: str = HANDLERS, heavy: tuple[str, ...] = HEAVY
) -> dict[str, Any]:
    """Run ``body`` after ``imports`` in a new interpreter; its ``out``, as JSON."""
    prelude = _PRELUDE.format(imports=imports, heavy=heavy)
    code = prelude + textwrap.dedent(body) + "\nprint(json.dumps(out))\n"
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


def test_the_command_line_loads_none_of_them_until_a_command_lints(tmp_path: Path) -> None:
    migration = tmp_path / "migration.yaml"
    migration.write_text(textwrap.dedent("""\
        apiVersion: pilotboat.dev/v1alpha1
        kind: SchemaMigration
        metadata: {name: m}
        spec:
          database: orders-db
          requiredBy: {service: orders, version: v2}
          expand: {sql: "ALTER TABLE orders DROP COLUMN customer_name"}
          contract: {sql: "ALTER TABLE orders DROP COLUMN legacy"}
        """))
    out = _fresh(f"""
        import contextlib, io
        from pilotboat.cli.main import main

        def invoke(*args):
            text = io.StringIO()
            with contextlib.redirect_stdout(text):
                try:
                    main(list(args), standalone_mode=False)
                    code = 0
                except SystemExit as exc:
                    code = exc.code
            return [code, text.getvalue(), loaded()]

        out["help"] = invoke("--help")
        out["run_help"] = invoke("run", "--help")
        out["version"] = invoke("version", "--client")
        out["lint"] = invoke("lint", {str(migration)!r})
    """, imports=COMMAND_LINE, heavy=CLI_HEAVY)
    assert out["at_start"] == []
    assert out["help"][0] == 0 and "lint" in out["help"][1] and out["help"][2] == []
    assert out["run_help"][0] == 0 and "--leader-elect" in out["run_help"][1]
    assert out["run_help"][2] == []
    assert out["version"][0] == 0 and out["version"][1].startswith("Client: pilotboat ")
    assert out["version"][2] == []
    code, text, after_lint = out["lint"]
    assert code == 1, text
    assert text.startswith(f"{migration}:1: spec.expand: PB001 drop-column: statement 1: ")
    assert "1 object(s) checked, 1 problem(s)" in text
    assert after_lint == ["jsonschema", "pglast"]


def test_the_lints_severities_are_the_sql_linters() -> None:
    from pilotboat.cli.lint import _VERDICTS, Finding
    from pilotboat.core.sqlrules import Severity

    assert Finding("f", "o", "x", "m").severity == Severity.REFUSE.value
    assert {Severity.REFUSE.value, *_VERDICTS} == {s.value for s in Severity}
    assert Finding("f", "o", "x", "m", severity=Severity.REFUSE.value).fails
    assert not any(Finding("f", "o", "x", "m", severity=s).fails for s in _VERDICTS)
