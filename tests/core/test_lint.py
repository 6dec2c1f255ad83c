"""`pilotboat lint`: manifests checked offline against the CRD schemas and the spec models,
each problem named by file, object and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
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
        ({"image": None}, "spec.image", "None is not of type"),
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
