"""The Grafana dashboards in examples/grafana ask only for series that exist: the operator's
own (pilotboat.handlers.metrics) or the golden signals the analysis reads."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pilotboat.core.analysis import DEFAULT_QUERIES
from pilotboat.handlers.metrics import REGISTRY

DASHBOARDS = sorted((Path(__file__).resolve().parents[2] / "examples" / "grafana").glob("*.json"))
SUFFIXES = ("_bucket", "_count", "_sum", "_total")


def operator_series() -> set[str]:
    names = set()
    for family in REGISTRY.collect():
        names.add(family.name)
        names.update(family.name + s for s in SUFFIXES)
    return names


def golden_signal_series() -> set[str]:
    return set(re.findall(r"\b([a-z_]+)\{", " ".join(str(q) for q in DEFAULT_QUERIES.values())))


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_queries_name_real_series(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    known = operator_series() | golden_signal_series()
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    assert exprs
    for expr in exprs:
        for name in re.findall(r"\b((?:pilotboat|http|process)_[a-z_]+)\b", expr):
            assert name in known, f"{path.name}: {name} in {expr}"
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_rates_follow_the_scrape_interval(path: Path) -> None:
    """rate() windows are Grafana's $__rate_interval (at least four scrapes, whatever the
    zoom), never a fixed range that is too short for a slow scrape or too long to zoom in;
    except a day for migration phases, which happen a few times a day at most."""
    dashboard = json.loads(path.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    for expr in exprs:
        for series, window in re.findall(r"\brate\(([a-z_]+)[^\[]*\[([^\]]+)\]", expr):
            rare = series.startswith("pilotboat_migration_phase_duration") and window == "1d"
            assert window == "$__rate_interval" or rare, f"{path.name}: {expr}"
