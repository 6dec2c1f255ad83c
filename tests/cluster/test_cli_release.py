"""`pilotboat status --wait` in a pipeline, and `pilotboat get` in every output and with
`--watch`, against releases the operator really drives."""

from __future__ import annotations

import json
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from pilotboat.cli.main import main as cli
from tests.manifests import microservice
from tests.story import Story

pytestmark = pytest.mark.usefixtures("operator")

PILOTBOAT = str(Path(sys.executable).parent / "pilotboat")
STEPS = [{"setWeight": 50}, {"pause": {"untilPromoted": True}}]


def phase(o: dict[str, Any] | None) -> str | None:
    return ((o or {}).get("status") or {}).get("phase")


class Running:
    """`pilotboat ARGS` as a subprocess whose stdout lines are collected as they come."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([PILOTBOAT, *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for_line(self, predicate: Any, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = next((line for line in self.lines if predicate(line)), None)
            if found is not None:
                return found
            time.sleep(0.1)
        raise AssertionError(f"no such line after {timeout}s in {self.lines}")

    def finish(self, timeout: float = 120) -> tuple[int, str]:
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=5)
        assert self.proc.stderr is not None
        return code, self.proc.stderr.read()


def test_status_wait_exits_0_once_a_release_is_promoted(story: Story, kubeconfig: Path) -> None:
    story.given(microservice("web", version="v1"))  # no canary steps: Healthy quickly

    waiting = Running("status", "web", "--wait", "--timeout", "2m", "-n", story.namespace,
                      "--kubeconfig", str(kubeconfig))
    code, stderr = waiting.finish()

    assert (code, stderr) == (0, "")
    assert waiting.lines[-1] == "web: Healthy — v1 is stable"
    assert len(waiting.lines) == len(set(waiting.lines)), "one line per change"


def test_status_wait_times_out_with_2_and_exits_1_when_rolled_back(
    story: Story, kubeconfig: Path
) -> None:
    ns = story.namespace
    story.given(microservice("orders", version="v1", rollout={"canary": {"steps": STEPS}}))
    story.wait_for("Microservice", "orders", lambda o: phase(o) == "Healthy", timeout=90)
    story.apply(microservice("orders", version="v2", rollout={"canary": {"steps": STEPS}}))
    story.wait_for("Microservice", "orders", lambda o: phase(o) == "Paused", timeout=90)

    timed_out = Running("status", "orders", "--wait", "--timeout", "3s", "-n", ns,
                        "--kubeconfig", str(kubeconfig))
    code, stderr = timed_out.finish()
    assert code == 2, stderr
    assert timed_out.lines == ["orders: Paused weight=50% step=2/2 — step 2/2 (pause): waiting "
                               "for `kubectl pilotboat promote`"]
    assert stderr.startswith("error: timed out after 3s waiting for orders: Paused")

    waiting = Running("status", "orders", "--wait", "-n", ns, "--kubeconfig", str(kubeconfig))
    waiting.wait_for_line(lambda line: line.startswith("orders: Paused"))
    story.patch_status_command("orders", "abort")
    code, stderr = waiting.finish()

    assert code == 1, stderr
    assert waiting.lines[-1].startswith("orders: Degraded — v2 aborted by request")
    assert stderr.startswith("error: orders did not release: Degraded — v2 aborted by request")
    assert len(stderr.splitlines()) == 1


def run(kubeconfig: Path, *args: str) -> str:
    result = CliRunner().invoke(cli, [*args, "--kubeconfig", str(kubeconfig)])
    assert result.exit_code == 0, result.output
    return result.output


def test_get_in_every_output(story: Story, kubeconfig: Path) -> None:
    ns = story.namespace
    story.given(microservice("cart", version="v1", replicas=3), microservice("search"))
    story.wait_for("Microservice", "cart", lambda o: phase(o) == "Healthy", timeout=90)
    story.wait_for("Microservice", "search", lambda o: phase(o) == "Healthy", timeout=90)

    assert run(kubeconfig, "get", "-n", ns, "-o", "name").splitlines() == [
        "microservice.pilotboat.dev/cart", "microservice.pilotboat.dev/search"]
    as_yaml = yaml.safe_load(run(kubeconfig, "get", "cart", "-n", ns, "-o", "yaml"))
    as_json = json.loads(run(kubeconfig, "get", "cart", "-n", ns, "-o", "json"))
    assert as_yaml | {"items": [r | {"age": None} for r in as_yaml["items"]]} == \
        as_json | {"items": [r | {"age": None} for r in as_json["items"]]}
    assert as_yaml["items"][0]["ready"] == "3/3"
    wide = run(kubeconfig, "get", "-n", ns, "-o", "wide").splitlines()
    assert wide[0].split() == ["NAME", "VERSION", "STABLE", "PHASE", "STEP", "WEIGHT", "READY",
                               "AGE", "CANARY", "ACTUAL", "MESSAGE"]
    assert wide[1].split()[:7] == ["cart", "v1", "v1", "Healthy", "-", "0%", "3/3"]
    assert wide[1].endswith("v1 is stable")
    table = CliRunner().invoke(cli, ["get", "-n", ns, "--kubeconfig", str(kubeconfig)],
                               color=True, env={"NO_COLOR": "1"})
    assert "Healthy" in table.output and "\x1b[" not in table.output
    coloured = CliRunner().invoke(cli, ["get", "-n", ns, "--kubeconfig", str(kubeconfig)],
                                  color=True, env={"NO_COLOR": None})
    assert "\x1b[32mHealthy\x1b[0m" in coloured.output
    unique = f"cart-{secrets.token_hex(3)}"  # the only one of its name in the cluster
    story.apply(microservice(unique))
    status = run(kubeconfig, "status", unique, "-A")
    assert status.startswith(f"Microservice {ns}/{unique}\n")


def test_get_watch_prints_a_change_and_stops_on_ctrl_c(story: Story, kubeconfig: Path) -> None:
    ns = story.namespace
    story.given(microservice("cart", version="v1"))
    story.wait_for("Microservice", "cart", lambda o: phase(o) == "Healthy", timeout=90)

    watching = Running("get", "-w", "-n", ns, "--kubeconfig", str(kubeconfig))
    watching.wait_for_line(lambda line: line.startswith("cart ") and " v1 " in line)
    story.apply(microservice("cart", version="v2"))
    watching.wait_for_line(lambda line: line.startswith("cart ") and "v2   " in line
                           and "Healthy" in line, timeout=90)
    watching.proc.send_signal(signal.SIGINT)
    code, stderr = watching.finish(timeout=30)

    assert (code, stderr) == (0, "")
    assert sum(line.startswith("NAME ") for line in watching.lines) == 1
    assert len(watching.lines) >= 3


def test_get_watch_timeout_ends_the_watch(story: Story, kubeconfig: Path) -> None:
    story.given(microservice("cart"))
    started = time.monotonic()
    result = CliRunner().invoke(cli, ["get", "-w", "--watch-timeout", "3", "-n",
                                      story.namespace, "-o", "name",
                                      "--kubeconfig", str(kubeconfig)])
    assert result.exit_code == 0, result.output
    assert 3 <= time.monotonic() - started < 15
    assert result.output.splitlines()[0] == "microservice.pilotboat.dev/cart"
