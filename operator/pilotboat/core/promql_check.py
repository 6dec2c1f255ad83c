"""Analysis queries checked before they run: each signal's ``query`` override is a Jinja2
template of PromQL (:mod:`pilotboat.core.analysis`), and a mistake in it would otherwise show
only at the first analysis step, as an Error measurement that pauses the release.

Pure: the spec in, one :class:`QueryProblem` per bad query out, each naming its field. A query
is checked in four steps, and the first that fails is its problem:

1. the template must compile in the operator's sandbox (:func:`compile_query_template`), and
   stay within the limits on untrusted input;
2. every variable it reads must be one the operator provides (:data:`TEMPLATE_VARIABLES`:
   ``service``, ``namespace``, ``version``, ``revision``, ``interval``, and ``quantile`` for
   latency), so a misspelt ``{{ servise }}`` is refused with the known names;
3. it must render with representative values (``{{ 1 / 0 }}`` does not);
4. the rendered text must parse as PromQL, by ``promql-parser`` (the Rust ``promql-parser``
   crate, which follows the Prometheus grammar and its function signatures): an unclosed
   parenthesis, an unknown function or ``rate()`` of an instant vector are refused, with the
   line and column in the rendered query where a bracket is unbalanced.

``pilotboat lint`` reports every problem; the ``analysis-queries`` admission webhooks refuse a
Microservice or RolloutPolicy with one (:func:`pilotboat.handlers.webhooks`), except that a
template over a limit is left to the analysis, which pauses naming the limit.

>>> [str(p) for p in spec_query_problems("Microservice", {"rollout": {"canary": {"analysis": {
...     "signals": {"errors": {"maxRatio": 0.01, "query": "rate(x{s='{{ servise }}'}[1m])"}}}}}})]
["spec.rollout.canary.analysis.signals.errors.query: unknown template variable 'servise' \
(known: interval, namespace, revision, service, version; did you mean 'service'?)"]
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jinja2
import jinja2.meta
import promql_parser

from pilotboat.core.analysis import SIGNALS
from pilotboat.core.limits import (
    QueryTemplateSandbox,
    TemplateLimitExceeded,
    compile_query_template,
    render_query_template,
)

__all__ = [
    "ANALYSIS_FIELDS",
    "SAMPLE_VALUES",
    "TEMPLATE_VARIABLES",
    "QueryProblem",
    "analysis_query_problems",
    "check_query",
    "spec_query_problems",
]

_COMMON = frozenset({"service", "namespace", "version", "revision", "interval"})
TEMPLATE_VARIABLES: Mapping[str, frozenset[str]] = {
    name: _COMMON | {"quantile"} if name == "latency" else _COMMON for name in SIGNALS
}
"""The variables :func:`pilotboat.core.analysis.plan_queries` renders each signal's query
with."""

SAMPLE_VALUES: Mapping[str, object] = {
    "service": "cart", "namespace": "shop", "version": "v2", "revision": "5d41402abc4b2a76",
    "interval": "30s", "quantile": 0.99,
}  # fmt: skip
"""What a query is rendered with to be parsed: values of the shape the operator gives."""

ANALYSIS_FIELDS: Mapping[str, tuple[str, ...]] = {
    "Microservice": ("rollout", "canary", "analysis"),
    "RolloutPolicy": ("analysis",),
}
"""Where each kind's spec holds its analysis template."""

_PARSER = QueryTemplateSandbox()
_SHOWN = 160
_VAGUE = ("invalid promql query", "unexpected end of input")


@dataclass(frozen=True)
class QueryProblem:
    """One query that would not run: its field and why. ``over_limit``: a limit on untrusted
    input refused its template, rather than a mistake in it."""

    field: str
    message: str
    over_limit: bool = False

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def _unknown(source: str, known: frozenset[str]) -> str | None:
    read = jinja2.meta.find_undeclared_variables(_PARSER.parse(source))
    unknown = sorted(read - known)
    if not unknown:
        return None
    name = unknown[0]
    message = f"unknown template variable {name!r} (known: {', '.join(sorted(known))}"
    if close := difflib.get_close_matches(name, sorted(known), n=1):
        message += f"; did you mean {close[0]!r}?"
    return message + ")"


def _unbalanced(text: str) -> tuple[int, str] | None:
    """Where a bracket of ``text`` is left open or closed without an opening one, skipping
    strings and comments: (offset, what)."""
    pairs = {"(": ")", "[": "]", "{": "}"}
    names = {"(": "parenthesis", "[": "bracket", "{": "brace"}
    closers = {v: k for k, v in pairs.items()}
    stack: list[tuple[int, str]] = []
    quote: str | None = None
    i = 0
    while i < len(text):
        c = text[i]
        if quote:
            if c == "\\" and quote != "`":
                i += 1
            elif c == quote:
                quote = None
        elif c in "\"'`":
            quote = c
        elif c == "#":
            while i < len(text) and text[i] != "\n":
                i += 1
        elif c in pairs:
            stack.append((i, c))
        elif c in closers:
            if not stack or stack[-1][1] != closers[c]:
                return i, f"unexpected closing {names[closers[c]]} {c!r}"
            stack.pop()
        i += 1
    if stack:
        at, c = stack[-1]
        return at, f"unclosed {names[c]} {c!r}"
    return None


def _position(text: str, offset: int) -> str:
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return f"{line}:{column}"


def _parse_error(rendered: str, error: str) -> str:
    shown = rendered if len(rendered) <= _SHOWN else rendered[:_SHOWN] + "..."
    shown = shown.replace("\n", "\\n")
    where = ""
    if (found := _unbalanced(rendered)) is not None:
        offset, what = found
        kind = what.split()[-2]  # parenthesis, bracket, brace
        if error in _VAGUE or kind.rstrip("s") in error.replace("braces", "brace"):
            where = f" at {_position(rendered, offset)}"
            error = what if error in _VAGUE else error
    return f"PromQL parse error{where}: {error}; rendered: {shown}"


def check_query(source: str, variables: frozenset[str]) -> tuple[str, bool] | None:
    """Why the query template ``source`` would not run with ``variables``, and whether a
    limit on untrusted input is the reason; None when it would."""
    try:
        template = compile_query_template(source)
    except jinja2.TemplateSyntaxError as exc:
        return f"template syntax error at line {exc.lineno}: {exc.message}", False
    except TemplateLimitExceeded as exc:
        return f"query template: {exc}", True
    if (unknown := _unknown(source, variables)) is not None:
        return unknown, False
    try:
        rendered = render_query_template(template, SAMPLE_VALUES).strip()
    except TemplateLimitExceeded as exc:
        return f"query template: {exc}", True
    except Exception as exc:  # the template's own mistake ({{ 1 / 0 }})
        return f"query template: {exc}", False
    try:
        promql_parser.parse(rendered)
    except ValueError as exc:
        return _parse_error(rendered, str(exc)), False
    return None


def analysis_query_problems(analysis: Any, field: str) -> list[QueryProblem]:
    """The problems of each signal's ``query`` in an analysis template (a mapping, as in a
    manifest); ``field`` is where the template is, ``spec.analysis``."""
    if not isinstance(analysis, Mapping) or not isinstance(analysis.get("signals"), Mapping):
        return []
    problems = []
    for name in SIGNALS:
        signal = analysis["signals"].get(name)
        query = signal.get("query") if isinstance(signal, Mapping) else None
        if not isinstance(query, str):
            continue
        found = check_query(query, TEMPLATE_VARIABLES[name])
        if found is not None:
            problems.append(QueryProblem(f"{field}.signals.{name}.query", *found))
    return problems


def spec_query_problems(kind: str, spec: Any) -> list[QueryProblem]:
    """The problems of the analysis queries in the spec of a Microservice or a RolloutPolicy
    (a mapping, valid or not); none for other kinds."""
    path = ANALYSIS_FIELDS.get(kind)
    node = spec
    for part in path or ():
        node = node.get(part) if isinstance(node, Mapping) else None
    if path is None or node is None:
        return []
    return analysis_query_problems(node, ".".join(("spec", *path)))
