"""Helpers for testing and benchmarking the operator as users run it: a real process.

`OperatorProcess` starts `pilotboat run` as a subprocess with its log in a file, waits until
its liveness endpoint answers, and can kill it the way a crash would.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

__all__ = ["ChildProcess", "OperatorProcess"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ChildProcess:
    """What tests do to a program they run: kill it as a crash would, stop it, read its log.

    Subclasses set `proc` (the running Popen, or None) and `log_path`.
    """

    proc: subprocess.Popen[bytes] | None
    log_path: Path
    stop_grace: float = 20.0

    def kill(self) -> None:
        """SIGKILL: no cleanup, as a crash or an OOM kill would leave it."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after `stop_grace` seconds."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(self.stop_grace)
            except subprocess.TimeoutExpired:
                self.kill()

    def wait_exit(self, timeout: float = 60) -> int:
        """The exit code; an AssertionError carrying the log's tail if it is still running."""
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"still running after {timeout}s:\n{self.log_text()[-3000:]}"
            ) from None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_records(self) -> list[dict[str, Any]]:
        """The log's JSON lines, parsed; other lines are left out."""
        records = []
        for line in self.log_text().splitlines():
            if line.startswith("{"):
                try:
                    records.append(json.loads(line))
                except ValueError:
                    pass
        return records


class OperatorProcess(ChildProcess):
    """`pilotboat run` as a subprocess whose log the test can read."""

    def __init__(
        self,
        kubeconfig: Path,
        log_dir: Path,
        extra_args: list[str] | None = None,
        env: dict[str, str] | None = None,
    ):
        self.kubeconfig = kubeconfig
        self.log_dir = log_dir
        self.extra_args = extra_args or []
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.log_path = log_dir / "operator.log"

    def start(self, *, env: dict[str, str] | None = None, wait_live: bool = True) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        port = _free_port()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        # As a user runs it: the kubeconfig by flag, none in the environment.
        env = {
            **{k: v for k, v in os.environ.items() if k != "KUBECONFIG"},
            "PYTHONUNBUFFERED": "1",
            **self.env,
            **(env or {}),
        }
        cmd = [
            sys.executable, "-m", "pilotboat", "run",
            "--kubeconfig", str(self.kubeconfig),
            "--liveness", f"http://127.0.0.1:{port}/healthz",
            *self.extra_args,
        ]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        if not wait_live:
            return
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the operator exited at start:\n{self.log_text()[-4000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the operator did not become live:\n{self.log_text()[-4000:]}")

    def restart(self) -> None:
        self.kill()
        self.start()

    def rss_bytes(self) -> int:
        """Resident memory of the operator process, from /proc."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("VmRSS not found")
