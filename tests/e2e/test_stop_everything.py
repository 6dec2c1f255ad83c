"""`make cluster-down` (`hack/cluster.sh down`) stops everything the project started for this
checkout: the demo and every operator, Prometheus and its pod discovery, CoreDNS, PostgreSQL,
metrics-server, the real node and the control plane. Afterwards no process of the checkout
runs and none of the project's ports listens, so a second checkout on the machine can start
its own.

It stops the cluster, so tests/conftest.py runs it last in the session.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HACK = REPO / "hack"
STATE = Path(os.environ.get("PILOTBOAT_STATE", REPO / ".state"))
_GIVEN = os.environ.get("PILOTBOAT_KUBECONFIG")

pytestmark = [
    pytest.mark.timeout(900),
    pytest.mark.skipif(
        bool(_GIVEN) and Path(_GIVEN or ".").resolve() != (STATE / "kubeconfig").resolve(),
        reason="the session runs on PILOTBOAT_KUBECONFIG's cluster, not this checkout's"),
]
SERVERS = ("postgres.sh", "dns.sh", "prometheus.sh", "metrics-server.sh")

# The project's programs that run until stopped: the operator, the demo, Prometheus' pod
# discovery; ours when they run with this checkout's state dir (any checkout's code may: tests
# of another clone with PILOTBOAT_STATE pointing here). Whatever else runs the checkout's code
# (a build script, a `python -c`, another engineer's pytest or mypy) is nothing the project
# started and left running.
PROGRAMS = ("pilotboat run ", "-m examples.shop.demo ", "hack/prometheus/pod_sd.py ")
# Developer tools run from the checkout's .venv, even when they name the state dir.
TOOLS = {"pytest", "py.test", "mypy", "dmypy", "ruff", "lint-imports", "pip", "pip3"}


@dataclass(frozen=True)
class Process:
    pid: int
    ppid: int
    argv: tuple[str, ...]
    cwd: str

    def __str__(self) -> str:
        return f"pid {self.pid}: {' '.join(self.argv)[:240]}"

    def resolved(self) -> tuple[str, ...]:
        """argv with the program and its script made absolute (`.venv/bin/python -m ...`
        started from the checkout's root names the checkout only through its cwd)."""
        head = [os.path.normpath(os.path.join(self.cwd, a)) if "/" in a and self.cwd else a
                for a in self.argv[:2]]
        return (*head, *self.argv[2:])


def _processes() -> dict[int, Process]:
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        argv = tuple(a.decode(errors="replace") for a in raw.split(b"\0") if a)
        if not argv:
            continue  # a kernel thread, or a zombie: nothing runs any more
        try:
            cwd = os.readlink(entry / "cwd")
        except OSError:
            cwd = ""
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        found[int(entry.name)] = Process(int(entry.name), ppid, argv, cwd)
    return found


def _postgres_server_dir() -> Path:
    """Where hack/postgres.sh keeps the server's files (the same rule as the script)."""
    pg_state = STATE / "postgres"
    if os.geteuid() != 0:
        return pg_state
    given = os.environ.get("PILOTBOAT_PG_SERVER_DIR")
    digest = hashlib.sha256(str(pg_state).encode()).hexdigest()[:12]
    return Path(given) if given else Path(f"/var/lib/pilotboat/postgres-{digest}")


def _uses_state(proc: Process) -> bool:
    """Whether a program runs with this state dir, as hack/cluster.sh down reads it: its
    PILOTBOAT_STATE, else the .state of the checkout whose .venv runs it or of its working
    directory; or whether it uses this state's cluster (a kubeconfig in it)."""
    try:
        environ = Path(f"/proc/{proc.pid}/environ").read_bytes().decode(errors="replace")
    except OSError:
        environ = ""
    variables = dict(e.split("=", 1) for e in environ.split("\0") if "=" in e)
    state = variables.get("PILOTBOAT_STATE")
    if not state:
        program = proc.argv[0]
        checkout = program.split("/.venv/bin/")[0] if "/.venv/bin/" in program else proc.cwd
        state = os.path.join(os.path.join(proc.cwd, checkout), ".state")
    kubeconfigs = (variables.get(k, "") for k in ("KUBECONFIG", "PILOTBOAT_KUBECONFIG"))
    return state == str(STATE) or any(k.startswith(f"{STATE}/") for k in kubeconfigs)


def _why_ours(proc: Process) -> str | None:
    """Why `proc` is one of the project's processes for this checkout, or None."""
    argv = proc.resolved()
    line = " ".join(argv) + " "
    module = argv[argv.index("-m") + 1] if "-m" in argv[:-1] else ""
    venv_programs = {os.path.basename(a) for a in argv[:2] if a.startswith(f"{REPO}/.venv/bin/")}
    if venv_programs & TOOLS or module.split(".")[0] in TOOLS:
        return None
    # The cache (~/.cache/pilotboat/bin: etcd, Kubernetes, kwok, CoreDNS) is shared by every
    # checkout on the machine, and postgres, prometheus and containerd are Debian's binaries:
    # ours are those whose data, config, kubeconfig or socket is this checkout's.
    if f"{STATE}/" in line:
        return f"names {STATE}"
    if f"{_postgres_server_dir()}/" in line:
        return "hack/postgres.sh's server"
    program = next((p for p in PROGRAMS if p in line), None)
    if program and _uses_state(proc):
        return f"{program.strip()} with {STATE}"
    return None


def _lineage(procs: dict[int, Process], pid: int) -> set[int]:
    """`pid` and the processes that started it."""
    seen = set()
    while pid in procs and pid not in seen:
        seen.add(pid)
        pid = procs[pid].ppid
    return seen


def leftover_processes() -> list[str]:
    """The project's processes still running, with their descendants (postgres backends,
    containerd shims' containers), as lines naming each."""
    procs = _processes()
    # This test and what runs it (pytest, make, .ci/run) are not leftovers. The session's
    # operator (tests/conftest.py, `pilotboat run` of this checkout) is not excluded: down
    # stops every operator of the checkout, since one whose cluster is gone would retry
    # 127.0.0.1:6443, where the next checkout's cluster may answer; the fixture's teardown
    # finds it exited. The session PostgreSQL (tests/fixtures/postgres.py) is test-owned: its
    # data dir is a temporary dir and its port is random, so it names nothing of the
    # checkout; it is excluded by that dir anyway, should $TMPDIR ever lie in the checkout.
    mine = _lineage(procs, os.getpid())
    fixture_pg = os.path.join(tempfile.gettempdir(), "pilotboat-pg-")
    reasons = {}
    for proc in procs.values():
        if proc.pid in mine or any(a.startswith(fixture_pg) for a in proc.argv):
            continue
        why = _why_ours(proc)
        if why:
            reasons[proc.pid] = why
    children: dict[int, list[int]] = {}
    for proc in procs.values():
        children.setdefault(proc.ppid, []).append(proc.pid)
    pending = list(reasons)
    while pending:
        parent = pending.pop()
        for child in children.get(parent, []):
            if child not in reasons and child not in mine:
                reasons[child] = f"started by pid {parent}"
                pending.append(child)
    return [f"{procs[pid]}  ({why})" for pid, why in sorted(reasons.items())]


def _real_node() -> bool:
    return os.environ.get("PILOTBOAT_REAL_NODE", "1") != "0"


@dataclass(frozen=True)
class Port:
    port: int
    address: str | None  # None: any address
    source: str


def project_ports() -> list[Port]:
    """The ports the scripts open, read from them: every ${PILOTBOAT_*PORT:-N} in hack/*.sh
    (the environment may move them) and, with the real node, the node's in hack/node/*.in
    and CoreDNS' zone port on the node's bridge."""
    ports = []
    for script in sorted(HACK.glob("*.sh")):
        text = script.read_text()
        for var, default in sorted(set(re.findall(r"\$\{(PILOTBOAT_\w*PORT):-(\d+)\}", text))):
            ports.append(Port(int(os.environ.get(var, default)), None,
                              f"{var} in hack/{script.name}"))
    if not _real_node():
        return ports  # nor node nor CoreDNS: those ports are not this checkout's to free
    for template in sorted((HACK / "node").glob("*.in")):
        pattern = r"^(\w*(?:[pP]ort|BindAddress)): (?:[\d.]+:)?(\d+)\s*$"
        for key, port in re.findall(pattern, template.read_text(), re.M):
            if int(port):
                ports.append(Port(int(port), None, f"{key} in hack/node/{template.name}"))
    dns = (HACK / "dns.sh").read_text()
    address = re.search(r"^address=(\S+)$", dns, re.M)
    zone_port = re.search(r"^cluster\.local:(\d+)", dns, re.M)
    assert address and zone_port, "hack/dns.sh no longer says where CoreDNS listens"
    ports.append(Port(int(zone_port.group(1)), address.group(1), "CoreDNS in hack/dns.sh"))
    return ports


def _decode(hex_address: str) -> str:
    raw = bytes.fromhex(hex_address)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, words)


def _sockets() -> Iterator[tuple[str, str, int, str]]:
    """(protocol, address, port, inode) of each listening TCP and bound UDP socket."""
    for proto, listening in (("tcp", "0A"), ("tcp6", "0A"), ("udp", "07"), ("udp6", "07")):
        path = Path("/proc/net") / proto
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != listening:
                continue
            address, port = fields[1].split(":")
            yield proto, _decode(address), int(port, 16), fields[9]


def _socket_owners() -> dict[str, list[str]]:
    owners: dict[str, list[str]] = {}
    procs = _processes()
    for pid, proc in procs.items():
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                owners.setdefault(target[8:-1], []).append(str(proc))
    return owners


def listening_ports(ports: list[Port]) -> list[str]:
    """Lines naming each port of `ports` that something still listens on, and who."""
    owners = None
    found = []
    for proto, address, port, inode in _sockets():
        for wanted in ports:
            if port == wanted.port and wanted.address in (None, address):
                owners = owners if owners is not None else _socket_owners()
                who = "; ".join(owners.get(inode, [])) or "owner not visible"
                found.append(f"{address}:{port}/{proto} ({wanted.source}): {who}")
    return sorted(set(found))


def _run(*argv: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, check=False,
                          timeout=600, env={**os.environ, **(env or {})})


@pytest.fixture
def servers_up(kubeconfig: Path) -> list[str]:
    """The cluster (the session's `kubeconfig` fixture: hack/cluster.sh up, with the real
    node) and the servers the demo starts, by their idempotent `up` (what runs stays as it
    is; Prometheus' also starts its pod discovery); the scripts that run."""
    up = []
    for script in SERVERS:
        env = {}
        if not _real_node():
            # No node, no pod network: CoreDNS has nowhere to listen, PostgreSQL loopback only;
            # no kubelet for metrics-server to read (hack/cluster.sh up starts it with the node).
            if script in ("dns.sh", "metrics-server.sh"):
                continue
            env = {"PILOTBOAT_PG_LISTEN": "127.0.0.1"} if script == "postgres.sh" else {}
        started = _run(HACK / script, "up", env=env)
        assert started.returncode == 0, f"hack/{script} up failed:\n{started.stderr}"
        up.append(script)
    return up


EXPECTED_LINES = {
    "prometheus.sh": ["prometheus: stopped pod discovery", "prometheus: stopped Prometheus"],
    "dns.sh": ["dns: stopped CoreDNS"],
    "postgres.sh": ["postgres: stopped PostgreSQL"],
    "metrics-server.sh": ["metrics: deleted the APIService", "metrics: stopped metrics-server"],
    "node": ["node: stopped kube-proxy", "node: stopped kubelet", "node: stopped containerd"],
    "control plane": ["cluster: stopped kwok", "cluster: stopped kube-apiserver",
                      "cluster: stopped etcd"],
}


def test_cluster_down_stops_everything_the_checkout_started(servers_up: list[str]) -> None:
    down = _run(HACK / "cluster.sh", "down")
    print(down.stdout, end="")  # what it stopped, for -rA / -s

    said = f"hack/cluster.sh down said:\n{down.stdout}{down.stderr}"
    assert down.returncode == 0, said
    lines = down.stdout.splitlines()
    assert lines and all(re.match(r"^[a-z]+: (stopped|killed|deleted) ", line)
                         for line in lines), said
    stopped = [*servers_up, *(["node"] if _real_node() else []), "control plane"]
    for start in (line for thing in stopped for line in EXPECTED_LINES[thing]):
        assert any(line.startswith(start) for line in lines), f"no line {start!r}; {said}"

    left = leftover_processes() + listening_ports(project_ports())
    assert not left, ("still running after hack/cluster.sh down:\n  " + "\n  ".join(left)
                      + f"\n{said}")

    again = _run(HACK / "cluster.sh", "down")
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == [
        f"cluster: nothing of this checkout was running ({STATE})"], again.stdout
