"""`pilotboat lint`: manifests checked offline against the CRD schemas and the spec models,
each problem named by file, object and field; SchemaMigrations' SQL through the operator's
linter, each finding named by file, document, phase and rule id."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from pilotboat.cli.lint import lint_document
from pilotboat.cli.main import main as cli

REPO = Path(__file__).resolve().parents[2]

GOOD = """
apiVersion: pilotboat.dev/v1alpha1
kind: Microservice
metadata: {name: cart}
spec:
  image: cart:v2
  version: v2
  replicas: 3
  ports: [{name: http, port: 8080}]
  rollout: {canary: {steps: [{setWeight: 20}, {pause: {duration: 30s}}]}}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: not-ours}
data: {a: b}
"""


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["lint", *args])
    return result.exit_code, result.output


def test_a_good_manifest_passes(tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text(GOOD)
    code, output = run(str(tmp_path / "good.yaml"))
    assert code == 0, output
    assert "1 object(s) checked, 0 problem(s)" in output


@pytest.mark.parametrize(
    ("spec_patch", "field", "says"),
    [
        ({"replica": 3}, "spec.replica", "unknown field"),
        ({"replicas": -1}, "spec.replicas", "less than the minimum"),
        ({"ports": [{"name": "http", "port": 99999}]}, "spec.ports[0].port", "maximum"),
        ({"image": None}, "spec.image", "required unless spec.template.spec.containers[0]"),
        ({"rollout": {"canary": {"steps": [{"setWeight": 20}], "analysis": {
            "signals": {"latency": {"quantile": 0, "maxSeconds": 0.5}}}}}},
         "spec.rollout.canary.analysis.signals.latency.quantile", "less than or equal to"),
        ({"rollout": {"canary": {"steps": [{"setWeight": 20}]}, "rolloutPolicyRef": "p"}},
         "spec.rollout", "exactly one of canary, rolloutPolicyRef"),
    ],
)
def test_each_problem_names_file_object_and_field(
    spec_patch: dict[str, object], field: str, says: str
) -> None:
    doc = {"apiVersion": "pilotboat.dev/v1alpha1", "kind": "Microservice",
           "metadata": {"name": "cart"},
           "spec": {"image": "cart:v2", "version": "v2", **spec_patch}}
    findings = lint_document("cart.yaml", doc)
    assert [(f.file, f.object, f.field) for f in findings] == [("cart.yaml", "Microservice/cart",
                                                                field)], findings
    assert says in findings[0].message


def test_a_file_with_problems_exits_1_and_json_lists_them(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("replicas: 3", "replicas: many") +
                   "---\napiVersion: pilotboat.dev/v1alpha1\nkind: Widget\nmetadata: {name: w}\n")
    code, output = run(str(bad))
    assert code == 1
    assert f"{bad}: Microservice/cart: spec.replicas: 'many' is not of type 'integer'" in output
    assert "Widget/w: kind: 'Widget' is not a Pilotboat kind" in output
    code, output = run("-o", "json", str(bad))
    assert code == 1
    report = json.loads(output)
    assert report["checked"] == 2
    assert {f["field"] for f in report["findings"]} == {"spec.replicas", "kind"}


def test_output_is_plain_off_a_terminal(tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text(GOOD)
    assert "\x1b[" not in run(str(tmp_path / "good.yaml"))[1]


def test_every_example_in_the_repository_lints_clean() -> None:
    code, output = run(str(REPO / "examples"))
    assert code == 0, output


# --- the SQL linter, offline ------------------------------------------------------------------

MIGRATION = """
apiVersion: pilotboat.dev/v1alpha1
kind: SchemaMigration
metadata: {name: orders-note}
spec:
  database: orders-db
  requiredBy: {service: orders, version: v2}
  expand:
    sql: |
      ALTER TABLE orders ADD COLUMN note text;
      ALTER TABLE orders DROP COLUMN customer_name;
  contract:
    sql: ALTER TABLE orders DROP COLUMN customer_name
"""


def migration(**phases: object) -> str:
    spec = {"database": "orders-db", "requiredBy": {"service": "orders", "version": "v2"},
            "expand": {"sql": "ALTER TABLE orders ADD COLUMN note text"},
            "contract": {"sql": "ALTER TABLE orders DROP COLUMN legacy"}, **phases}
    return yaml.safe_dump({"apiVersion": "pilotboat.dev/v1alpha1", "kind": "SchemaMigration",
                           "metadata": {"name": "m"}, "spec": spec})


def test_a_drop_column_in_expand_fails_the_lint_with_its_rule(tmp_path: Path) -> None:
    path = tmp_path / "migration.yaml"
    path.write_text(MIGRATION)
    code, output = run(str(path))
    assert code == 1, output
    assert output.splitlines()[0] == (
        f"{path}:1: spec.expand: PB001 drop-column: statement 2: DROP COLUMN customer_name: "
        "the old version still reads or writes the column; it breaks the version still "
        "running; it belongs in contract")
    assert "spec.contract" not in output  # contract is where the drop belongs
    assert "1 object(s) checked, 1 problem(s)" in output


@pytest.mark.parametrize(("phases", "line"), [
    ({"expand": {"sql": "ALTER TABLE orders ADD COLUMN n bigserial",
                 "down": "SET ROLE postgres"}},
     ": spec.expand: PB023 add-column-serial: statement 1: ADD COLUMN n bigserial: "),
    ({"expand": {"sql": "ALTER TABLE orders ADD COLUMN n text", "down": "SET ROLE postgres"}},
     ": spec.expand.down: PB090 session-settings: statement 1: SET ROLE: "),
    ({"backfill": {"sql": "UPDATE orders SET n = 1; UPDATE orders SET m = 1"}},
     ": spec.backfill: PB070 backfill-not-single-statement: found 2 statements: "),
    ({"verify": {"sql": "DELETE FROM orders"}},
     ": spec.verify: PB080 verify-not-single-select: found DELETE: "),
    ({"contract": {"sql": "GRANT SELECT ON orders TO reporting"}},
     ": spec.contract: PB091 privileges: statement 1: GRANT: "),
    ({"contract": {"sql": "DO $$ BEGIN EXECUTE 'DROP TABLE orders'; END $$"}},
     ": spec.contract: PB094 dynamic-sql: statement 1: DO block that EXECUTEs dynamic SQL: "),
])
def test_every_phase_is_linted_with_the_reconcilers_rule_ids(
    tmp_path: Path, phases: dict[str, object], line: str
) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(migration(**phases))
    code, output = run(str(path))
    assert code == 1, output
    assert any(out.startswith(f"{path}:1") and line in out for out in output.splitlines()), output


def test_warnings_and_findings_that_need_approval_are_printed_but_pass(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(migration(
        expand={"sql": "CREATE INDEX orders_note ON orders (note);\n"
                       "ALTER TABLE orders DROP COLUMN legacy; "
                       "-- pilotboat:allow PB001 nothing reads it since v1"},
        backfill={"sql": "DELETE FROM orders WHERE id IN "
                         "(SELECT id FROM orders WHERE legacy LIMIT :batch_size)"}))
    code, output = run(str(path))
    assert code == 0, output
    lines = output.splitlines()
    assert f"{path}:1: spec.expand: PB050 create-index-blocking (warning): statement 1: " \
           "CREATE INDEX on orders: " in "\n".join(lines)
    assert any("spec.expand: PB001 drop-column (needs approval): statement 2: " in line
               and "nothing reads it since v1" in line for line in lines)
    assert any("spec.backfill: PB073 backfill-delete (needs approval): statement 1: " in line
               for line in lines)
    assert "1 object(s) checked, 0 problem(s), 3 SQL warning(s) or approval(s) needed" in output


def test_the_document_number_names_the_migration_in_a_file_of_several(tmp_path: Path) -> None:
    path = tmp_path / "all.yaml"
    path.write_text(GOOD + "---\n" + MIGRATION)
    code, output = run(str(path))
    assert code == 1
    assert f"{path}:3: spec.expand: PB001 drop-column: statement 2: " in output


def test_json_names_rule_severity_and_document(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(MIGRATION)
    code, output = run("-o", "json", str(path))
    assert code == 1
    (finding,) = json.loads(output)["findings"]
    assert finding["doc"] == 1 and finding["field"] == "spec.expand"
    assert finding["rule"] == "PB001 drop-column" and finding["severity"] == "refuse"
    assert finding["object"] == "SchemaMigration/orders-note"


def test_a_migration_the_schema_refuses_is_not_sql_linted(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(MIGRATION.replace("database: orders-db", "databse: orders-db"))
    code, output = run(str(path))
    assert code == 1
    assert "PB001" not in output and "spec.databse: unknown field" in output


def test_the_shops_migration_lints_clean_sql_included() -> None:
    code, output = run(str(REPO / "examples" / "shop" / "orders-migration.yaml"))
    assert code == 0, output
    assert output.strip() == "1 object(s) checked, 0 problem(s)"


# --- analysis queries -------------------------------------------------------------------------

QUERIES = """
apiVersion: pilotboat.dev/v1alpha1
kind: Microservice
metadata: {name: cart}
spec:
  image: cart:v2
  version: v2
  rollout:
    canary:
      steps: [{setWeight: 20}, {analysis: {intervals: 2}}]
      analysis:
        signals:
          errors:
            maxRatio: 0.01
            query: >-
              sum(rate(http_requests_total{service="{{ servise }}",code=~"5.."}[{{ interval }}]))
          traffic:
            minRate: 1
            query: 'sum(rate(http_requests_total{service="{{ service }}"}[{{ interval }}])'
---
apiVersion: pilotboat.dev/v1alpha1
kind: RolloutPolicy
metadata: {name: standard}
spec:
  steps: [{setWeight: 20}]
  analysis:
    signals:
      latency:
        maxSeconds: 0.5
        query: 'histogram_quantile({{ quantile }}, sum by (le) (rate(x_bucket[{{ interval }}])))'
      saturation: {max: 0.8, query: 'nosuch(up{service="{{ service }}"})'}
"""


def test_analysis_queries_with_an_unknown_variable_or_bad_promql_fail_the_lint(
    tmp_path: Path,
) -> None:
    path = tmp_path / "queries.yaml"
    path.write_text(QUERIES)
    code, output = run(str(path))
    assert code == 1, output
    field = "spec.rollout.canary.analysis.signals"
    assert output.splitlines() == [
        f"{path}: Microservice/cart: {field}.errors.query: unknown template variable 'servise' "
        "(known: interval, namespace, revision, service, version; did you mean 'service'?)",
        f"{path}: Microservice/cart: {field}.traffic.query: PromQL parse error at 1:4: "
        "unclosed left parenthesis; rendered: "
        'sum(rate(http_requests_total{service="cart"}[30s])',
        f"{path}: RolloutPolicy/standard: spec.analysis.signals.saturation.query: PromQL parse "
        "error: unknown function with name 'nosuch'; rendered: nosuch(up{service=\"cart\"})",
        "2 object(s) checked, 3 problem(s)",
    ]


def test_good_analysis_queries_pass(tmp_path: Path) -> None:
    path = tmp_path / "queries.yaml"
    path.write_text(QUERIES.replace("servise", "service").replace("[{{ interval }}])'",
                                                                  "[{{ interval }}]))'")
                    .replace("nosuch(", "max("))  # fmt: skip
    code, output = run(str(path))
    assert code == 0, output
