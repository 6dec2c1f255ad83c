"""What the demo prints, and the samples behind the report's charts.

``Timeline.say`` prints one line with the seconds since the start. ``Watcher`` polls the
namespace's Microservices and SchemaMigrations once a second, prints each change of a
release's phase, step, weight or message (one line each), and keeps every sample of the
canary weight for the report.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field

from pilotboat.adapters.kube import Kube

__all__ = ["Sample", "Timeline", "Watcher"]


class Timeline:
    def __init__(self, quiet: bool = False) -> None:
        self.t0 = time.monotonic()
        self.wall0 = time.time()
        self.quiet = quiet
        self.lines: list[str] = []
        self._lock = threading.Lock()

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def say(self, text: str) -> None:
        line = f"[{self.elapsed():6.1f}s] {text}"
        with self._lock:
            self.lines.append(line)
            if not self.quiet:
                print(line, flush=True)


@dataclass(frozen=True)
class Sample:
    at: float  # epoch seconds
    service: str
    phase: str
    weight: int
    stable: str
    canary: str


_CORRELATION = re.compile(r"\s*\[correlation id [^\]]+\]")


def short(message: str | None, limit: int = 150) -> str:
    text = _CORRELATION.sub("", message or "").strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass
class Watcher:
    kube: Kube
    namespace: str
    timeline: Timeline
    samples: list[Sample] = field(default_factory=list)
    quiet_services: set[str] = field(default_factory=set)
    _last: dict[str, str] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Watcher:
        self._thread = threading.Thread(target=self._run, name="watcher", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(10)

    def _run(self) -> None:
        deadline = time.monotonic() + 3600  # bounded, whatever happens to the story
        while not self._stop.wait(1.0) and time.monotonic() < deadline:
            try:
                self.poll()
            except Exception as exc:  # the API server restarting must not end the watcher
                self._report("watcher", f"watcher: {exc.__class__.__name__}: {exc}")

    def poll(self) -> None:
        now = time.time()
        for ms in self.kube.list("Microservice", self.namespace):
            name = ms["metadata"]["name"]
            st = ms.get("status") or {}
            weight = int(st.get("canaryWeight") or 0)
            self.samples.append(Sample(now, name, st.get("phase") or "", weight,
                                       st.get("stableVersion") or "",
                                       st.get("canaryVersion") or ""))
            if name in self.quiet_services:
                continue
            phase = st.get("phase") or "Pending"
            step = st.get("currentStepIndex")
            where = f" weight={weight}%" if st.get("canaryVersion") else ""
            where += f" step={step}" if step is not None else ""
            self._report(f"ms/{name}", f"  {name}: {phase}{where} — {short(st.get('message'))}")
        for mig in self.kube.list("SchemaMigration", self.namespace):
            name = mig["metadata"]["name"]
            st = mig.get("status") or {}
            phase = st.get("phase") or "Pending"
            if self._last.get(f"smig/{name}/phase") == phase:
                continue  # its gates are told by the story; here only its phases
            self._last[f"smig/{name}/phase"] = phase
            ready = next((c for c in st.get("conditions") or [] if c.get("type") == "Ready"), {})
            self._report(f"smig/{name}", f"  migration {name}: {phase}"
                         f" — {short(ready.get('message') or st.get('message'))}")

    def _report(self, key: str, line: str) -> None:
        if self._last.get(key) != line:
            self._last[key] = line
            self.timeline.say(line)
