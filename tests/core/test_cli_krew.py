"""The krew manifest (.krew.yaml, a krew-release-bot template) and the two shell scripts
docs/cli.md publishes: the krew shim that runs the Python entry point, and kubectl's
plugin-completion executable. Each script is run as the docs show it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
SHA = "5e" * 32


def rendered_manifest(tag: str = "v0.1.0") -> dict[str, object]:
    """.krew.yaml as krew-release-bot renders it at a release (with a stand-in sha256)."""
    text = (REPO / ".krew.yaml").read_text()
    text = re.sub(r'\{\{\s*addURIAndSha\s+"([^"]+)"\s+\.TagName\s*\}\}',
                  lambda m: f"uri: {m[1]}\n    sha256: {SHA}", text)
    text = re.sub(r"\{\{\s*\.TagName\s*\}\}", tag, text)
    manifest = yaml.safe_load(text)
    assert isinstance(manifest, dict)
    return manifest


def test_the_krew_manifest_is_a_plugin_named_pilotboat() -> None:
    manifest = rendered_manifest()
    assert manifest["apiVersion"] == "krew.googlecontainertools.github.com/v1alpha2"
    assert manifest["kind"] == "Plugin"
    assert manifest["metadata"] == {"name": "pilotboat"}
    spec = manifest["spec"]
    assert isinstance(spec, dict)
    assert spec["version"] == "v0.1.0"
    assert len(spec["shortDescription"]) <= 60
    assert "Python 3.11" in spec["caveats"] and "shim" in spec["caveats"]
    (platform,) = spec["platforms"]
    assert platform["selector"]["matchExpressions"] == [
        {"key": "os", "operator": "In", "values": ["linux", "darwin"]}]
    assert platform["uri"].endswith("/releases/download/v0.1.0/kubectl-pilotboat-shim.tar.gz")
    assert platform["sha256"] == SHA
    assert platform["bin"] == "kubectl-pilotboat"
    assert platform["files"] == [{"from": "kubectl-pilotboat", "to": "."}]


def script(marker: str, directory: Path) -> Path:
    """The ```sh block of docs/cli.md whose second line is ``# <marker>…``, as an
    executable file named ``marker``."""
    docs = (REPO / "docs" / "cli.md").read_text()
    (body,) = [b for b in re.findall(r"```sh\n(.*?)```", docs, re.S)
               if b.startswith(f"#!/bin/sh\n# {marker}:")]
    path = directory / marker
    path.write_text(body)
    path.chmod(0o755)
    return path


def sh(path: Path, *args: str, search: list[Path], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(path), *args], capture_output=True, text=True, timeout=60,
        env={"PATH": os.pathsep.join([*map(str, search), "/usr/bin", "/bin"]),
             "HOME": str(path.parent), **env})


def test_the_shim_runs_the_entry_point(tmp_path: Path) -> None:
    shim = script("kubectl-pilotboat", tmp_path)
    done = sh(shim, "version", "--client", search=[VENV_BIN])
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.startswith("Client: pilotboat ")


def test_the_shim_falls_back_to_python_dash_m(tmp_path: Path) -> None:
    shim = script("kubectl-pilotboat", tmp_path)
    only_python = tmp_path / "python-only"
    only_python.mkdir()
    (only_python / "python3").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (only_python / "python3").chmod(0o755)
    done = sh(shim, "version", "--client", search=[only_python])
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.startswith("Client: pilotboat ")


def test_the_shim_says_what_to_install_when_the_package_is_not(tmp_path: Path) -> None:
    shim = script("kubectl-pilotboat", tmp_path)
    done = sh(shim, "get", search=[])
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == ("error: the pilotboat Python package is not installed (install it "
                           "with Python 3.11+: pipx install . in a checkout of Pilotboat)\n")


def test_kubectl_plugin_completion_answers_in_kubectls_protocol(tmp_path: Path) -> None:
    complete = script("kubectl_complete-pilotboat", tmp_path)
    config = tmp_path / "config"
    config.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "dev",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": name, "context": {"cluster": "c", "user": "u"}}
                     for name in ("dev", "staging")]}))
    contexts = sh(complete, "get", "--context", "", search=[VENV_BIN], KUBECONFIG=str(config))
    assert contexts.stdout == "dev\nstaging\n:4\n"
    commands = sh(complete, "st", search=[VENV_BIN])
    assert commands.stdout == "status\n:4\n"
    names = sh(complete, "status", "", search=[VENV_BIN], KUBECONFIG=str(config))
    assert (names.returncode, names.stdout) == (0, ":4\n")  # no cluster: nothing, quietly
