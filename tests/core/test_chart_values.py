"""The chart's values, described: every property of values.schema.json has a description,
every default of values.yaml a property, and charts/pilotboat/README.md is what
hack/chart-readme.py writes from them. Also: the alert rules the chart carries are the ones
examples/prometheus/ gives a plain Prometheus, and `prometheusRule.for` names only those."""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "pilotboat"
SCHEMA = json.loads((CHART / "values.schema.json").read_text())
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
RULES = CHART / "files" / "pilotboat.rules.yaml"


def _readme_module() -> dict[str, Any]:
    return runpy.run_path(str(REPO / "hack" / "chart-readme.py"))


def test_the_chart_readme_is_generated_from_the_schema() -> None:
    out = subprocess.run([sys.executable, str(REPO / "hack" / "chart-readme.py")],
                         capture_output=True, text=True, check=True)
    assert (CHART / "README.md").read_text() == out.stdout, "run hack/render-manifests.sh"


def test_every_value_is_described() -> None:
    rows = list(_readme_module()["rows"](SCHEMA, VALUES))  # raises on a missing description
    paths = {path for path, *_ in rows}
    assert {"global", "image.digest", "imagePullSecrets", "serviceAccount.annotations",
            "serviceAccount.create", "priorityClassName", "podLabels", "podAnnotations",
            "extraEnv", "affinity", "topologySpreadConstraints", "nodeSelector", "tolerations",
            "metrics.service.enabled", "serviceMonitor.enabled", "serviceMonitor.interval",
            "serviceMonitor.labels", "prometheusRule.enabled", "prometheusRule.labels",
            "prometheusRule.ruleLabels", "prometheusRule.for"} <= paths


def test_a_property_without_description_is_refused() -> None:
    schema = json.loads(json.dumps(SCHEMA))
    del schema["properties"]["image"]["properties"]["digest"]["description"]
    with pytest.raises(ValueError, match="image.digest has no description"):
        list(_readme_module()["rows"](schema, VALUES))


def _leaves(values: dict[str, Any], path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for key, value in values.items():
        if isinstance(value, dict) and value:
            out += _leaves(value, (*path, key))
        else:
            out.append((*path, key))
    return out


def test_every_default_has_a_described_property() -> None:
    described = {path for path, *_ in _readme_module()["rows"](SCHEMA, VALUES)}
    assert {".".join(leaf) for leaf in _leaves(VALUES)} <= described


def test_global_is_allowed_for_a_parent_chart() -> None:
    assert SCHEMA["additionalProperties"] is False
    assert SCHEMA["properties"]["global"]["type"] == "object"


def _alerts(groups: list[dict[str, Any]]) -> list[str]:
    return [rule["alert"] for group in groups for rule in group["rules"]]


def test_the_plain_rules_file_is_the_charts() -> None:
    plain = REPO / "examples" / "prometheus" / "pilotboat.rules.yaml"
    assert plain.read_text() == RULES.read_text(), "run hack/render-manifests.sh"


def test_for_overrides_name_only_the_alerts_there_are() -> None:
    alerts = _alerts(yaml.safe_load(RULES.read_text())["groups"])
    assert len(alerts) == len(set(alerts))
    enum = SCHEMA["properties"]["prometheusRule"]["properties"]["for"]["propertyNames"]["enum"]
    assert sorted(enum) == sorted(alerts)


def test_the_kube_version_admits_the_local_cluster() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    versions = dict(line.split("=", 1) for line in (REPO / "hack" / "versions.env").read_text()
                    .splitlines() if "=" in line and not line.startswith("#"))
    minimum = chart["kubeVersion"].removeprefix(">=").removesuffix("-0")
    local = versions["KUBERNETES_VERSION"].removeprefix("v")
    assert tuple(map(int, local.split("."))) >= tuple(map(int, minimum.split(".")))


def test_the_chart_carries_the_crds_as_generated() -> None:
    # the cluster's install test checks this too; here it fails in `make unit`, without helm
    sources = [*REPO.glob("crds/*.yaml"), *REPO.glob("manifests/crds/*.yaml")]
    copies = sorted(p.name for p in (CHART / "crds").glob("*.yaml"))
    assert copies == sorted(p.name for p in sources)
    for source in sources:
        copy = (CHART / "crds" / source.name).read_text()
        assert copy == source.read_text(), f"{source.name}: run hack/render-manifests.sh"
