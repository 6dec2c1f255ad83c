"""`kubectl pilotboat` against the local cluster: get, version, status -o json, approve is
there, and the plugin is the same program as `pilotboat`."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from pilotboat.cli.main import main as cli
from tests.manifests import microservice
from tests.story import Story

pytestmark = pytest.mark.usefixtures("operator")

STEPS = [{"setWeight": 50}, {"pause": {"untilPromoted": True}}]


def run(kubeconfig: Path, *args: str) -> str:
    result = CliRunner().invoke(cli, [*args, "--kubeconfig", str(kubeconfig)])
    assert result.exit_code == 0, result.output
    return result.output


def paused(o: dict[str, Any] | None) -> bool:
    return ((o or {}).get("status") or {}).get("phase") == "Paused"


def test_get_shows_phase_step_and_weight_of_a_release(story: Story, kubeconfig: Path) -> None:
    story.given(microservice("cart", version="v1", rollout={"canary": {"steps": STEPS}}),
                microservice("search", version="v1"))
    story.wait_for("Microservice", "cart", lambda o: ((o or {}).get("status") or {}).get(
        "phase") == "Healthy", timeout=90)
    story.apply(microservice("cart", version="v2", rollout={"canary": {"steps": STEPS}}))
    story.wait_for("Microservice", "cart", paused, timeout=90)

    table = run(kubeconfig, "get", "-n", story.namespace).splitlines()
    assert table[0].split() == ["NAME", "VERSION", "STABLE", "PHASE", "STEP", "WEIGHT",
                                "READY", "AGE"]
    cart = next(line.split() for line in table if line.startswith("cart"))
    assert cart[:6] == ["cart", "v2", "v1", "Paused", "2/2", "50%"]
    assert "\x1b[" not in "\n".join(table)  # no colour off a terminal

    rows = json.loads(run(kubeconfig, "get", "-n", story.namespace, "-o", "json"))["items"]
    assert [r["name"] for r in rows] == ["cart", "search"]
    assert rows[0] | {"age": None, "message": None} == {
        "namespace": story.namespace, "name": "cart", "version": "v2", "stable": "v1",
        "canary": "v2", "phase": "Paused", "step": "2/2", "weight": 50, "ready": rows[0]["ready"],
        "actualWeight": rows[0]["actualWeight"], "age": None, "message": None}
    assert 0 <= rows[0]["actualWeight"] <= 100

    everywhere = run(kubeconfig, "get", "-A", "-o", "json")
    assert story.namespace in everywhere
    one = json.loads(run(kubeconfig, "get", "cart", "-n", story.namespace, "-o", "json"))
    assert [r["name"] for r in one["items"]] == ["cart"]

    status = json.loads(run(kubeconfig, "status", "cart", "-n", story.namespace, "-o", "json"))
    assert status["status"]["canaryWeight"] == 50

    run(kubeconfig, "promote", "cart", "-n", story.namespace)
    story.wait_for("Microservice", "cart", lambda o: ((o or {}).get("status") or {}).get(
        "stableVersion") == "v2", timeout=90)


def test_get_names_a_missing_service(story: Story, kubeconfig: Path) -> None:
    result = CliRunner().invoke(cli, ["get", "nope", "-n", story.namespace,
                                      "--kubeconfig", str(kubeconfig)])
    assert result.exit_code == 1
    assert "Microservice nope not found" in result.output


def test_version_reports_client_cluster_and_crds(kubeconfig: Path) -> None:
    report = json.loads(run(kubeconfig, "version", "-o", "json"))
    assert report["client"] == "0.1.0"
    assert report["apiVersion"] == "pilotboat.dev/v1alpha1"
    assert report["server"]["kubernetes"].startswith("v1.")
    assert report["server"]["crds"]["Microservice"] == ["v1alpha1"]
    text = run(kubeconfig, "version")
    assert "Client: pilotboat 0.1.0" in text and "microservices.pilotboat.dev: v1alpha1" in text
    client = CliRunner().invoke(cli, ["version", "--client", "--kubeconfig", "/nonexistent"])
    assert client.exit_code == 0 and "Server" not in client.output


def test_the_kubectl_plugin_is_the_same_program(kubeconfig: Path, tmp_path: Path) -> None:
    plugin = shutil.which("kubectl-pilotboat", path=str(Path(__file__).parents[2] / ".venv/bin"))
    assert plugin, "pip install -e . installs kubectl-pilotboat"
    commands = subprocess.run([plugin, "--help"], capture_output=True, text=True, check=True)
    for command in ("get", "status", "promote", "abort", "retry", "approve", "lint", "version"):
        assert f"  {command} " in commands.stdout, command
    # kubectl finds it on PATH as a plugin
    kubectl = Path(__file__).parents[2] / ".state/bin/kubectl"
    out = subprocess.run([str(kubectl), "pilotboat", "version", "--client"],
                         capture_output=True, text=True,
                         env={"PATH": f"{Path(plugin).parent}:/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert "Client: pilotboat 0.1.0" in out.stdout
