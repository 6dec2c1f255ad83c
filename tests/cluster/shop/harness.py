"""The shop's services as real local processes for service-level tests (fixtures in conftest).

Each service runs as ``python -m shop`` (uvicorn on a free loopback port) against its own
database on the session's real PostgreSQL (``tests.fixtures.postgres``). The ``shop``
fixture starts all six and stops them afterwards; tests may kill (SIGKILL), stop and
restart any of them, with other environment variables.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from pilotboat.testing import ChildProcess
from tests.fixtures.postgres import PostgresServer

REPO = Path(__file__).resolve().parents[3]
SHOP_SRC = REPO / "examples" / "shop"
SERVICES = ("catalog", "inventory", "payments", "shipping", "notifications", "orders")

# Fast failure handling, so that tests of breakers and recovery take seconds.
TEST_ENV = {
    "CALL_TIMEOUT_SECONDS": "2",
    "RETRY_BACKOFF_SECONDS": "0.05",
    "RETRY_BACKOFF_CAP_SECONDS": "0.2",
    "BREAKER_OPEN_SECONDS": "1",
    "SAGA_RECOVERY_SECONDS": "0.3",
    "DB_POOL_MAX": "4",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ShopProcess(ChildProcess):
    name: str
    port: int
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    stop_grace: float = 15.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, **env: str) -> ShopProcess:
        self.env.update(env)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "shop"], cwd=SHOP_SRC, stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONPATH": str(SHOP_SRC), **self.env})
        return self

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            assert self.proc and self.proc.poll() is None, \
                f"{self.name} exited:\n{self.log_text()[-3000:]}"
            try:
                response = httpx.get(f"{self.url}/healthz", timeout=1)
                if response.status_code == 200:
                    return
                last = response.text
            except httpx.TransportError as error:
                last = str(error)
            time.sleep(0.05)
        raise AssertionError(f"{self.name} not ready in {timeout}s: {last}\n"
                             f"{self.log_text()[-3000:]}")

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.log_text().splitlines():
            try:
                lines.append(json.loads(line))
            except ValueError:
                lines.append({"unparsed": line})
        return lines

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", timeout=10, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", timeout=30, **kwargs)


@dataclass
class Shop:
    server: PostgresServer
    workdir: Path
    databases: dict[str, str] = field(default_factory=dict)
    procs: dict[str, ShopProcess] = field(default_factory=dict)

    def __getitem__(self, name: str) -> ShopProcess:
        return self.procs[name]

    def create_databases(self) -> None:
        with psycopg.connect(self.server.admin_dsn, autocommit=True) as conn:
            for name in SERVICES:
                dbname = f"shop_{name}_{uuid.uuid4().hex[:8]}"
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
                self.databases[name] = self.server.dsn(dbname)

    def drop_databases(self) -> None:
        with psycopg.connect(self.server.admin_dsn, autocommit=True) as conn:
            for dsn in self.databases.values():
                dbname = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                             .format(sql.Identifier(str(dbname))))

    def process(self, name: str, *, key: str | None = None, **env: str) -> ShopProcess:
        """A (not yet started) process of service ``name``; ``key`` names a second one."""
        key = key or name
        taken = {p.port for p in self.procs.values()}
        port = free_port()
        while port in taken:  # the kernel may hand a just-freed port out twice
            port = free_port()
        base = {"SHOP_SERVICE": name, "SERVICE_VERSION": "test", "HOST": "127.0.0.1",
                "PORT": str(port), "DATABASE_URL": _uri(self.databases[name]), **TEST_ENV}
        if name == "orders":
            for dep in ("catalog", "inventory", "payments", "shipping", "notifications"):
                base[f"{dep.upper()}_URL"] = self.procs[dep].url
        proc = ShopProcess(name, port, {**base, **env}, self.workdir / f"{key}.log")
        self.procs[key] = proc
        return proc

    def start_all(self, **orders_env: str) -> None:
        for name in SERVICES:
            self.process(name, **(orders_env if name == "orders" else {})).start()
        for name in SERVICES:
            self.procs[name].wait_ready()

    def restart(self, key: str, **env: str) -> ShopProcess:
        proc = self.procs[key]
        proc.stop()
        proc.start(**env).wait_ready()
        return proc

    def stop_all(self) -> None:
        for proc in self.procs.values():
            proc.stop()

    def order(self, *, customer: str = "Ada Lovelace",
              items: list[dict[str, Any]] | None = None, address: str = "12 Analytical Row",
              key: str | None = None, via: str = "orders",
              headers: dict[str, str] | None = None) -> httpx.Response:
        return self.procs[via].post(
            "/orders",
            json={"customer": customer, "items": items or [{"sku": "TEA-001", "qty": 2}],
                  "address": address},
            headers={"Idempotency-Key": key or str(uuid.uuid4()), **(headers or {})})

    def query(self, service: str, query: str, *params: Any) -> list[dict[str, Any]]:
        with psycopg.connect(self.databases[service], row_factory=dict_row) as conn:
            return conn.execute(query, params).fetchall()

    def wait_for(self, condition: Any, timeout: float = 20, message: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"timed out: {message or condition}")


def _uri(dsn: str) -> str:
    parts = psycopg.conninfo.conninfo_to_dict(dsn)
    return (f"postgresql://{parts['user']}:{parts['password']}@{parts['host']}:{parts['port']}"
            f"/{parts['dbname']}")
