"""Pilotboat's alerts (charts/pilotboat/files/pilotboat.rules.yaml, copied to
examples/prometheus/) are valid Prometheus rules, and fire when they should: `promtool check
rules` and `promtool test rules` on examples/prometheus/pilotboat.rules.test.yaml, whose
cases read like the behaviour (an operator down, a release held at one weight…).

promtool is Debian's `prometheus` package (hack/deps.sh installs it). Without it these tests
skip, which a strict run (PILOTBOAT_STRICT=1, CI) turns into failures."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PLAIN = REPO / "examples" / "prometheus"
RULES = PLAIN / "pilotboat.rules.yaml"

# The series the operator exports (pilotboat/handlers/metrics.py); an alert on anything else
# would never fire.
EXPORTED = {
    "pilotboat_reconciles_total", "pilotboat_reconcile_duration_seconds",
    "pilotboat_releases", "pilotboat_canary_weight", "pilotboat_canary_actual_weight",
    "pilotboat_analyses_total", "pilotboat_migration_gates_blocked",
    "pilotboat_migration_phase_duration_seconds", "pilotboat_leader",
    "pilotboat_release_phase", "pilotboat_build_info", "pilotboat_migration_phase",
    "pilotboat_migration_blocked", "pilotboat_api_requests_total",
}


def promtool_or_skip() -> str:
    """The path of promtool; skips the calling test when it is not installed."""
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is not installed (hack/deps.sh installs Debian's prometheus)")
    return path


@pytest.fixture(scope="session")
def promtool() -> str:
    return promtool_or_skip()


def check_rules(promtool: str, path: Path) -> str:
    """`promtool check rules` on `path`; fails the test with promtool's words if invalid."""
    out = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_the_rules_are_valid(promtool: str) -> None:
    alerts = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    assert f"SUCCESS: {len(alerts)} rules found" in check_rules(promtool, RULES)


def test_the_alerts_fire_when_they_should(promtool: str) -> None:
    out = subprocess.run([promtool, "test", "rules", "pilotboat.rules.test.yaml"],
                         capture_output=True, text=True, cwd=PLAIN)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_every_alert_is_unit_tested() -> None:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    tests = yaml.safe_load((PLAIN / "pilotboat.rules.test.yaml").read_text())["tests"]
    firing = {case["alertname"] for t in tests for case in t["alert_rule_test"]
              if case.get("exp_alerts")}
    assert firing == {r["alert"] for g in groups for r in g["rules"]}


def test_the_alerts_use_only_series_the_operator_exports() -> None:
    import re

    source = (REPO / "operator" / "pilotboat" / "handlers" / "metrics.py").read_text()
    for name in EXPORTED:  # the list above is the module's, not a guess
        assert f'"{name.removesuffix("_total")}"' in source, name
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            used = set(re.findall(r"\bpilotboat_[a-z_]+", rule["expr"]))
            assert used and used <= EXPORTED, (rule["alert"], used - EXPORTED)
