"""The demo's report: one self-contained HTML file with inline SVG charts (no script, no
network) of the canary weight and the golden signals of each released service over time,
the operator's decisions (Kubernetes Events) marked on them, the timeline and the integrity
check.

Signals come from Prometheus' range API, per version, the way the operator's analysis
selects them (namespace, service, version labels from pod discovery).
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from examples.shop.demo.timeline import Sample, short

__all__ = ["Chapter", "Marker", "Series", "prometheus_range", "render", "svg_chart"]

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf")
VERSION_COLORS = {"v1": "#1f77b4", "v2": "#2ca02c", "v3": "#d62728", "v4": "#9467bd"}


@dataclass
class Series:
    label: str
    points: list[tuple[float, float]]
    color: str = ""


@dataclass(frozen=True)
class Marker:
    at: float
    label: str
    warning: bool = False


@dataclass
class Chapter:
    title: str
    start: float
    end: float | None = None
    outcome: str = ""
    ok: bool | None = None
    notes: list[str] = field(default_factory=list)


def prometheus_range(url: str, query: str, start: float, end: float,
                     step: float = 2.0) -> dict[str, list[tuple[float, float]]]:
    """`query` over [start, end] → {version (or the series' labels): points}; NaN dropped."""
    response = httpx.get(f"{url}/api/v1/query_range", timeout=30, params={
        "query": query, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"})
    response.raise_for_status()
    out: dict[str, list[tuple[float, float]]] = {}
    for result in response.json()["data"]["result"]:
        metric = result["metric"]
        key = metric.get("version") or metric.get("state") or ",".join(
            f"{k}={v}" for k, v in sorted(metric.items())) or "all"
        points = [(float(t), float(v)) for t, v in result["values"]]
        out[key] = [(t, v) for t, v in points if math.isfinite(v)]
    return out


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    exp = 10 ** math.floor(math.log10(value))
    for m in (1, 2, 2.5, 5, 10):
        if value <= m * exp:
            return m * exp
    return 10 * exp


def _fmt(value: float, unit: str) -> str:
    if unit == "%":
        return f"{value * 100:.0f}%"
    if unit == "s":
        return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s"
    return f"{value:g}"


def svg_chart(title: str, series: Sequence[Series], t0: float, t1: float, *,
              unit: str = "", markers: Sequence[Marker] = (), y_max: float | None = None,
              chapters: Sequence[Chapter] = (), width: int = 1100, height: int = 210,
              step: bool = False) -> str:
    left, right, top, bottom = 62, 150, 26, 28
    pw, ph = width - left - right, height - top - bottom
    span = max(t1 - t0, 1.0)
    peak = max((v for s in series for _, v in s.points), default=0.0)
    top_value = y_max if y_max is not None else _nice_max(peak * 1.1)

    def x(t: float) -> float:
        return left + (min(max(t, t0), t1) - t0) / span * pw

    def y(v: float) -> float:
        return top + ph - min(max(v, 0.0), top_value) / top_value * ph

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
             f'<text x="{left}" y="16" font-size="13" font-weight="bold">'
             f'{html.escape(title)}</text>']
    for i, ch in enumerate(chapters):  # shaded chapters, alternating
        end = ch.end if ch.end is not None else t1
        if i % 2 == 0:
            parts.append(f'<rect x="{x(ch.start):.1f}" y="{top}" '
                         f'width="{max(x(end) - x(ch.start), 0):.1f}" height="{ph}" '
                         f'fill="#f4f4f8"/>')
    for i in range(5):  # y grid
        v = top_value * i / 4
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{y(v):.1f}" y2="{y(v):.1f}" '
                     f'stroke="#ddd"/><text x="{left - 6}" y="{y(v) + 4:.1f}" '
                     f'text-anchor="end" fill="#555">{_fmt(v, unit)}</text>')
    minutes = int(span // 60) + 1
    every = 1 if minutes <= 12 else 2
    for m in range(0, minutes + 1, every):  # x axis: minutes since the start
        t = t0 + m * 60
        if t > t1:
            break
        parts.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{top + ph}" '
                     f'y2="{top + ph + 4}" stroke="#555"/><text x="{x(t):.1f}" '
                     f'y="{top + ph + 16}" text-anchor="middle" fill="#555">{m} min</text>')
    for i, mk in enumerate(markers):  # decisions; labels on three rows so they overlap less
        color = "#d62728" if mk.warning else "#444"
        parts.append(f'<line x1="{x(mk.at):.1f}" x2="{x(mk.at):.1f}" y1="{top}" '
                     f'y2="{top + ph}" stroke="{color}" stroke-dasharray="3,3">'
                     f'<title>{html.escape(mk.label)}</title></line>'
                     f'<text x="{x(mk.at) + (2 if x(mk.at) < left + pw - 90 else -2):.1f}" '
                     f'y="{top + 9 + 10 * (i % 3)}" fill="{color}" font-size="9" '
                     f'text-anchor="{"start" if x(mk.at) < left + pw - 90 else "end"}">'
                     f'{html.escape(mk.label.split(":")[0][:18])}</text>')
    for i, s in enumerate(series):
        color = s.color or PALETTE[i % len(PALETTE)]
        pts = [(x(t), y(v)) for t, v in s.points if t0 <= t <= t1]
        if pts:
            if step:
                path = [f"M{pts[0][0]:.1f},{pts[0][1]:.1f}"]
                path += [f"H{nx:.1f}V{ny:.1f}" for nx, ny in pts[1:]]
                d = "".join(path)
            else:
                d = _segments(pts, gap=6.0 * pw / span)
            parts.append(f'<path d="{d}" fill="none" stroke="{color}" stroke-width="1.8"/>')
        ly = top + 12 + i * 16
        parts.append(f'<rect x="{left + pw + 12}" y="{ly - 8}" width="12" height="3" '
                     f'fill="{color}"/><text x="{left + pw + 28}" y="{ly - 3}">'
                     f'{html.escape(s.label)}</text>')
    parts.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" '
                 f'stroke="#999"/></svg>')
    return "".join(parts)


def _segments(pts: list[tuple[float, float]], gap: float) -> str:
    """A polyline that breaks where samples are missing (more than `gap` pixels apart)."""
    out = [f"M{pts[0][0]:.1f},{pts[0][1]:.1f}"]
    for (px, _), (nx, ny) in zip(pts, pts[1:], strict=False):
        out.append(f"{'M' if nx - px > gap else 'L'}{nx:.1f},{ny:.1f}")
    return "".join(out)


def weight_series(samples: Sequence[Sample], service: str) -> list[Series]:
    points = [(s.at, float(s.weight)) for s in samples if s.service == service]
    return [Series("canary weight", points, "#ff7f0e")]


def _signal_queries(namespace: str, service: str, window: str = "20s") -> dict[str, str]:
    sel = f'namespace="{namespace}",service="{service}"'
    return {
        "traffic": f"sum by (version) (rate(http_requests_total{{{sel}}}[{window}]))",
        "errors": (f'(sum by (version) (rate(http_requests_total{{{sel},code=~"5.."}}[{window}]))'
                   f" or 0 * sum by (version) (rate(http_requests_total{{{sel}}}[{window}])))"
                   f" / sum by (version) (rate(http_requests_total{{{sel}}}[{window}]))"),
        "latency": ("histogram_quantile(0.99, sum by (version, le) "
                    f"(rate(http_request_duration_seconds_bucket{{{sel}}}[{window}])))"),
        "saturation": f"max by (version) (http_requests_in_flight{{{sel}}})",
    }


SIGNAL_TITLES = {"traffic": ("requests per second", ""), "errors": ("error ratio (5xx)", "%"),
                 "latency": ("p99 latency", "s"), "saturation": ("requests in flight", "")}


# The Events a person wants on a chart: decisions, not every Deployment update.
DECISIONS = {"RolloutStarted", "AnalysisPassed", "AnalysisFailed", "AnalysisPaused",
             "RolledBack", "Promoted", "Aborted", "ExpandApplied", "BackfillApplied",
             "ContractApplied", "ContractBroken", "FlagSet"}


def _belongs(event: dict[str, Any], service: str, migrations: dict[str, str]) -> bool:
    obj = event.get("involvedObject") or {}
    if obj.get("kind") == "SchemaMigration":
        return migrations.get(obj.get("name", "")) == service
    return bool(obj.get("name") == service)


def render(path: Path, *, title: str, namespace: str, prometheus_url: str, t0: float,
           t1: float, samples: Sequence[Sample], events: Sequence[dict[str, Any]],
           event_times: Sequence[float], chapters: Sequence[Chapter], services: Sequence[str],
           timeline: Sequence[str], integrity: Sequence[str], passed: bool,
           migrations: dict[str, str] | None = None) -> Path:
    """`migrations`: SchemaMigration name → the service that requires it (its events are
    marked on that service's charts)."""
    migrations = migrations or {}
    sections = []
    for service in services:
        markers = [Marker(t, f"{e['reason']}: {short(e.get('message'), 200)}",
                          e.get("type") == "Warning")
                   for e, t in zip(events, event_times, strict=True)
                   if _belongs(e, service, migrations) and e.get("reason") in DECISIONS]
        charts = [svg_chart(f"{service}: canary weight (%)", weight_series(samples, service),
                            t0, t1, markers=markers, y_max=100, chapters=chapters, step=True)]
        for signal, query in _signal_queries(namespace, service).items():
            try:
                data = prometheus_range(prometheus_url, query, t0, t1)
            except (httpx.HTTPError, KeyError, ValueError) as exc:
                why = html.escape(str(exc)[:160])
                charts.append(f"<p>{signal}: Prometheus did not answer ({why})</p>")
                continue
            label, unit = SIGNAL_TITLES[signal]
            series = [Series(v, pts, VERSION_COLORS.get(v, "")) for v, pts in sorted(data.items())]
            charts.append(svg_chart(f"{service}: {label}, by version", series, t0, t1,
                                    unit=unit, markers=markers, chapters=chapters,
                                    y_max=1.0 if unit == "%" else None))
        rows = "".join(
            f"<tr class='{'warn' if m.warning else ''}'><td>{(m.at - t0):.0f}s</td>"
            f"<td>{html.escape(m.label)}</td></tr>" for m in markers)
        sections.append(f"<h2>{html.escape(service)}</h2>" + "".join(
            f"<div class='chart'>{c}</div>" for c in charts)
            + f"<details><summary>decisions ({len(markers)})</summary><table>{rows}</table>"
              "</details>")
    chapter_rows = "".join(
        f"<tr><td>{'✔' if c.ok else ('✘' if c.ok is False else '·')}</td>"
        f"<td>{(c.start - t0):.0f}s</td><td>{html.escape(c.title)}</td>"
        f"<td>{html.escape(c.outcome)}"
        + "".join(f"<br><small>{html.escape(n)}</small>" for n in c.notes)
        + "</td></tr>" for c in chapters)
    verdict = ("<p class='pass'>Every step behaved as described.</p>" if passed
               else "<p class='fail'>Some step did not behave as described.</p>")
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 24px; color: #222; max-width: 1140px; }}
h1 {{ font-size: 22px; }} h2 {{ font-size: 17px; margin-top: 28px; }}
table {{ border-collapse: collapse; font-size: 13px; }}
td {{ padding: 2px 10px 2px 0; vertical-align: top; }}
tr.warn td {{ color: #b00; }}
.chart {{ margin: 4px 0; }}
.pass {{ color: #1a7f37; font-weight: bold; }} .fail {{ color: #b00; font-weight: bold; }}
pre {{ font-size: 11px; background: #f6f8fa; padding: 8px; overflow-x: auto; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
{verdict}
<table>{chapter_rows}</table>
<h2>Integrity check</h2>
<pre>{html.escape(chr(10).join(integrity))}</pre>
{''.join(sections)}
<h2>Timeline</h2>
<pre>{html.escape(chr(10).join(timeline))}</pre>
</body></html>
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page)
    return path
