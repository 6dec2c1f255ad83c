"""The servers the demo needs on this machine, each started by its hack/ script (idempotent:
what runs already is left running), and the operator as a real process.

- the local cluster with its real node (hack/cluster.sh up), the images (hack/images.sh);
- PostgreSQL for the shop (hack/postgres.sh up: 127.0.0.1 and 10.244.0.1, port 15432);
- cluster DNS (hack/dns.sh up: CoreDNS on 10.244.0.1:53). If it cannot be built or started,
  the demo falls back to Service ClusterIPs in the services' ``*_URL`` variables;
- Prometheus with pod discovery (hack/prometheus.sh up, after the cluster);
- the operator (``pilotboat run --namespace NS --prometheus-url URL``).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg

from pilotboat.testing import OperatorProcess

__all__ = ["REPO", "STATE", "Infra", "Postgres", "start_infrastructure", "start_operator"]

REPO = Path(__file__).resolve().parents[3]
STATE = Path(os.environ.get("PILOTBOAT_STATE", REPO / ".state"))
HACK = REPO / "hack"
POD_GATEWAY = "10.244.0.1"


@dataclass(frozen=True)
class Postgres:
    """The shop's PostgreSQL, as the host (and the superuser) sees it."""

    host: str
    port: int
    user: str
    password: str

    def dsn(self, dbname: str = "postgres") -> str:
        return psycopg.conninfo.make_conninfo(
            host=self.host, port=self.port, dbname=dbname, user=self.user,
            password=self.password, connect_timeout=5)


@dataclass
class Infra:
    kubeconfig: Path
    prometheus_url: str
    postgres: Postgres
    dns: bool
    log_dir: Path


def _run(script: str, *args: str, log: Path) -> float:
    """Run a hack/ script, its output appended to `log`; seconds taken. Raises on failure,
    with the end of its output."""
    start = time.monotonic()
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        out.write(f"\n$ hack/{script} {' '.join(args)}\n".encode())
        out.flush()
        result = subprocess.run([str(HACK / script), *args], stdout=out, stderr=out,
                                stdin=subprocess.DEVNULL, check=False)
    if result.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-25:]
        raise RuntimeError(f"hack/{script} {' '.join(args)} failed ({result.returncode}); "
                           f"{log}:\n" + "\n".join(tail))
    return time.monotonic() - start


def start_infrastructure(say: Callable[[str], None], log_dir: Path) -> Infra:
    """Everything but the operator, each step timed in one line."""
    log = log_dir / "infra.log"
    took = _run("cluster.sh", "up", log=log)
    say(f"local cluster up: control plane, 3 KWOK nodes, real node pilotboat-real ({took:.1f}s)")
    took = _run("images.sh", log=log)
    say(f"images built and imported into the node's containerd ({took:.1f}s)")
    took = _run("postgres.sh", "up", log=log)
    say(f"PostgreSQL 15 on 127.0.0.1:15432 and {POD_GATEWAY}:15432 ({took:.1f}s)")
    dns = True
    if os.environ.get("PILOTBOAT_DEMO_DNS", "1") == "1":
        try:
            took = _run("dns.sh", "up", log=log)
            say(f"cluster DNS: CoreDNS on {POD_GATEWAY}:53, cluster.local only ({took:.1f}s)")
        except RuntimeError as exc:
            dns = False
            say(f"cluster DNS unavailable ({str(exc).splitlines()[0]}); services are "
                "addressed by ClusterIP")
    else:
        dns = False
        say("cluster DNS off (PILOTBOAT_DEMO_DNS=0): services are addressed by ClusterIP")
    took = _run("prometheus.sh", "up", log=log)
    port = os.environ.get("PILOTBOAT_PROMETHEUS_PORT", "19090")
    say(f"Prometheus on 127.0.0.1:{port}, discovering pods ({took:.1f}s)")
    password = (STATE / "postgres" / "superuser-password").read_text().strip()
    return Infra(
        kubeconfig=Path(os.environ.get("PILOTBOAT_KUBECONFIG", STATE / "kubeconfig")),
        prometheus_url=f"http://127.0.0.1:{port}",
        postgres=Postgres("127.0.0.1", int(os.environ.get("PILOTBOAT_PG_PORT", "15432")),
                          "postgres", password),
        dns=dns,
        log_dir=log_dir,
    )


def start_operator(infra: Infra, namespace: str) -> OperatorProcess:
    operator = OperatorProcess(
        infra.kubeconfig, infra.log_dir,
        ["--namespace", namespace, "--prometheus-url", infra.prometheus_url],
    )
    operator.start()
    return operator
