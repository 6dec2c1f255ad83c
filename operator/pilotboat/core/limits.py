"""Limits on untrusted input: how much a tenant's object may make the operator read, expand,
walk or render, so that no object can stall a reconcile pass or an admission answer.

Every limit is a constant here (the two on flag targeting live in
:mod:`pilotboat.api.targeting`, which validates flags and may not import the core; they are
re-exported). Input over a limit is refused whole, with a message that names the limit, its
value, and (where the caller knows it) the field: ``spec.api.openapi.inline: more than 100000
values once YAML aliases are expanded (limit MAX_DOCUMENT_NODES = 100000)``. Each check is
bounded by the limit itself, not by the input, so a refusal is quick however large the input
claims to be.

=========================  =======  ===========================================================
limit                      value    what it bounds
=========================  =======  ===========================================================
MAX_DOCUMENT_BYTES         1 MiB    the text of a YAML or JSON document (an OpenAPI contract)
MAX_YAML_ALIASES           100      aliases (``*name``) in one YAML document
MAX_DOCUMENT_NODES         100 000  values in a document, each alias counted as what it names
MAX_DOCUMENT_DEPTH         64       mappings and sequences nested in a document
MAX_SCHEMA_STEPS           10 000   schema visits to read a contract's operations (``$ref``,
                                    ``allOf``/``oneOf``/``anyOf`` and properties resolved)
MAX_SCHEMA_DEPTH           64       schemas resolved inside one another (``$ref`` hops too)
MAX_TARGETING_DEPTH        64       objects and arrays nested in a flag's targeting or variant
MAX_TARGETING_NODES        10 000   values in a flag's targeting or in one variant value
MAX_QUERY_TEMPLATE_LENGTH  4 KiB    the source of one PromQL query template
MAX_TEMPLATE_DEPTH         32       expressions and blocks nested in a query template
MAX_TEMPLATE_OUTPUT        64 KiB   the rendered query, and every string, list or block built
                                    on the way (``'x' * n``, ``~``, ``join``, ``replace``, ``%``)
MAX_TEMPLATE_NUMBER_BITS   1024     the size of an integer a template computes (``*``, ``**``)
MAX_ADMISSION_DEPTH        100      nesting of an admission request as read; deeper is cut
ADMISSION_TIMEOUT_SECONDS  5        one admission check (the API server waits 10 s)
=========================  =======  ===========================================================

**YAML.** :func:`load_yaml` first reads the document's parse events once (libyaml's, when
PyYAML has it) and counts: aliases, values with every alias counted as what it stands for (a
"billion laughs" document of a few hundred bytes is refused after a few hundred events,
never expanded), and depth; an alias inside the node it names (a cycle) is refused too.
Only a document within all of them is then loaded, by PyYAML's safe loader.
:func:`check_document` holds an already parsed document to the same size and depth,
counting shared references each time they are reached.

**Query templates.** :func:`compile_query_template` and :func:`render_query_template` use
:class:`QueryTemplateSandbox`, Jinja's immutable sandbox narrowed to what a PromQL template
needs: placeholders, ``if``/``else``, ``set``, the operators, and a short list of filters. No
loops, macros, calls, includes. Every operation that can build something large is checked
*before* it builds it: ``*``, ``+``, ``%`` and ``**`` (Jinja's intercepted binary operators),
``~`` (a code generator whose concatenation is checked), every filter, every ``{{ }}``
output and every block (the environment's ``concat``). With no loop, call or recursion,
every node of the template runs at most once, and none handles more than
:data:`MAX_TEMPLATE_OUTPUT` characters, so the time a render takes is bounded by the
template's length times that: no wall clock is needed (the worst template the tests know
renders in well under a second), and none is used, so rendering stays a pure function.

**Admission requests.** Python's JSON reader gives up near 1000 levels of nesting, which the
API server accepts (its limit is 10 000); :func:`clip_json_depth` cuts an admission request
that the reader cannot read at :data:`MAX_ADMISSION_DEPTH` (deeper values become ``null``),
so the webhook can still answer, and refuses the object by the stricter limit of its field.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import jinja2
import jinja2.sandbox
import yaml
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.filters import do_join, do_replace
from jinja2.runtime import Context

from pilotboat.api.targeting import MAX_TARGETING_DEPTH, MAX_TARGETING_NODES, nesting

__all__ = [
    "ADMISSION_TIMEOUT_SECONDS",
    "MAX_ADMISSION_DEPTH",
    "MAX_DOCUMENT_BYTES",
    "MAX_DOCUMENT_DEPTH",
    "MAX_DOCUMENT_NODES",
    "MAX_QUERY_TEMPLATE_LENGTH",
    "MAX_SCHEMA_DEPTH",
    "MAX_SCHEMA_STEPS",
    "MAX_TARGETING_DEPTH",
    "MAX_TARGETING_NODES",
    "MAX_TEMPLATE_DEPTH",
    "MAX_TEMPLATE_NUMBER_BITS",
    "MAX_TEMPLATE_OUTPUT",
    "MAX_YAML_ALIASES",
    "LimitExceeded",
    "QueryTemplateSandbox",
    "TemplateLimitExceeded",
    "check_document",
    "clip_json_depth",
    "compile_query_template",
    "load_yaml",
    "render_query_template",
]

MAX_DOCUMENT_BYTES = 1024 * 1024
"""Bytes of one YAML or JSON document's text (a ConfigMap holds at most 1 MiB in all)."""

MAX_YAML_ALIASES = 100
"""Aliases (``*name``) in one YAML document. Contracts written by hand or generated rarely
use any; a document built to expand needs many."""

MAX_DOCUMENT_NODES = 100_000
"""Values (mappings, sequences, scalars, keys included) in one document, every alias
counted as the values it stands for. The shop's largest contract has some 270."""

MAX_DOCUMENT_DEPTH = 64
"""Mappings and sequences nested in one document. An OpenAPI schema nested ten objects deep
sits some 30 levels down."""

MAX_SCHEMA_STEPS = 10_000
"""Schema visits the contract checker makes to read one document's operations: one per
field path of each request and response, one per schema merged (each merged once). The
shop's contracts take about 150. A document of a few KiB whose schemas refer to each other
in a lattice would take billions (the checker follows every field path 12 levels deep)."""

MAX_SCHEMA_DEPTH = 64
"""Schemas resolved inside one another while reading a contract, ``$ref`` hops included."""

MAX_QUERY_TEMPLATE_LENGTH = 4 * 1024
"""Characters of one query template's source (the default queries are under 300). Compiling
and rendering take time in proportion to it: the costliest template of this length the
tests know takes well under a second."""

MAX_TEMPLATE_DEPTH = 32
"""Expressions and blocks nested in one query template."""

MAX_TEMPLATE_OUTPUT = 64 * 1024
"""Characters of one rendered query, and of any string, list or block a template builds."""

MAX_TEMPLATE_NUMBER_BITS = 1024
"""Bits of an integer a query template computes with ``*`` or ``**`` (``2 ** 1024`` has 309
digits; PromQL numbers are float64)."""

MAX_ADMISSION_DEPTH = 100
"""Nesting of an admission request as the webhook reads it. The object's spec starts four
levels down (review, request, object, spec), so a field nested deeper than its own limit
(:data:`MAX_TARGETING_DEPTH`) is still seen to be."""

ADMISSION_TIMEOUT_SECONDS = 5.0
"""How long one admission check may take before the webhook answers without it; the API
server gives each webhook 10 s (``timeoutSeconds``)."""


class LimitExceeded(ValueError):
    """Input over a limit on untrusted input; the message names the limit and its value."""

    def __init__(self, message: str, limit: str) -> None:
        super().__init__(message)
        self.limit = limit


def _over(what: str, limit: str, value: int | float) -> str:
    return f"{what} (limit {limit} = {value})"


# --- YAML and JSON documents ---------------------------------------------------------------


_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml if built


def _document_over(what: str, limit: str, value: int) -> LimitExceeded:
    return LimitExceeded(_over(what, limit, value), limit)


class _EventCount:
    """What :func:`_scan_events` has seen so far of one document."""

    def __init__(self) -> None:
        self.open: list[tuple[int, str | None]] = []  # per open collection: values before, anchor
        self.sizes: dict[str, int] = {}  # anchor -> values it stands for
        self.values = 0
        self.aliases = 0

    def alias(self, anchor: str) -> None:
        self.aliases += 1
        if self.aliases > MAX_YAML_ALIASES:
            raise _document_over(f"more than {MAX_YAML_ALIASES} YAML aliases",
                                 "MAX_YAML_ALIASES", MAX_YAML_ALIASES)  # fmt: skip
        if any(anchor == name for _, name in self.open):
            raise LimitExceeded(
                f"the YAML alias *{anchor} is inside the node it names (a cycle)",
                "MAX_DOCUMENT_NODES",
            )
        self.add(self.sizes.get(anchor, 1))  # an undefined one: the loader says so

    def start(self, anchor: str | None) -> None:
        self.open.append((self.values, anchor))
        if len(self.open) > MAX_DOCUMENT_DEPTH:
            raise _document_over(f"nested more than {MAX_DOCUMENT_DEPTH} levels deep",
                                 "MAX_DOCUMENT_DEPTH", MAX_DOCUMENT_DEPTH)  # fmt: skip
        self.add(1)

    def end(self) -> None:
        if self.open:
            before, anchor = self.open.pop()
            if anchor is not None:
                self.sizes[anchor] = self.values - before

    def add(self, values: int) -> None:
        self.values += values
        if self.values > MAX_DOCUMENT_NODES:
            what = f"more than {MAX_DOCUMENT_NODES} values"
            if self.aliases:
                what += " once YAML aliases are expanded"
            raise _document_over(what, "MAX_DOCUMENT_NODES", MAX_DOCUMENT_NODES)


def _events(loader: yaml.SafeLoader) -> Iterator[yaml.Event]:
    """The loader's parse events. libyaml refuses flow collections nested 1000 deep while
    it looks ahead, before an event shows the depth: that is this depth limit too."""
    try:
        while loader.check_event():
            yield loader.get_event()  # type: ignore[no-untyped-call]
    except yaml.YAMLError as exc:
        if "maximum nesting depth" in str(exc):
            raise _document_over(f"nested more than {MAX_DOCUMENT_DEPTH} levels deep",
                                 "MAX_DOCUMENT_DEPTH", MAX_DOCUMENT_DEPTH) from None  # fmt: skip
        raise


def _scan_events(text: str | bytes) -> None:
    """One pass over the document's parse events (no nodes built, no recursion): refuse it
    over :data:`MAX_YAML_ALIASES`, :data:`MAX_DOCUMENT_NODES` (each alias counted as the
    values of the node it names) or :data:`MAX_DOCUMENT_DEPTH`, or when an alias is inside
    the node it names."""
    loader = _Loader(text)
    seen = _EventCount()
    try:
        events = _events(loader)
        for event in events:
            if isinstance(event, yaml.AliasEvent):
                seen.alias(str(event.anchor))
            elif isinstance(event, yaml.ScalarEvent):
                seen.add(1)
                if event.anchor is not None:
                    seen.sizes[event.anchor] = 1
            elif isinstance(event, yaml.CollectionStartEvent):
                seen.start(event.anchor)
            elif isinstance(event, yaml.CollectionEndEvent):
                seen.end()
    finally:
        loader.dispose()


def _check_bytes(text: str | bytes) -> None:
    size = len(text) if isinstance(text, bytes) else len(text.encode("utf-8", "replace"))
    if size > MAX_DOCUMENT_BYTES:
        raise LimitExceeded(
            _over(f"{size} bytes", "MAX_DOCUMENT_BYTES", MAX_DOCUMENT_BYTES), "MAX_DOCUMENT_BYTES"
        )


def load_yaml(text: str | bytes) -> Any:
    """One YAML (or JSON) document, parsed as ``yaml.safe_load`` would, within
    :data:`MAX_DOCUMENT_BYTES`, :data:`MAX_YAML_ALIASES`, :data:`MAX_DOCUMENT_NODES` and
    :data:`MAX_DOCUMENT_DEPTH`.

    Raises :class:`LimitExceeded` over a limit (before expanding anything), and
    ``yaml.YAMLError`` when it is not YAML.

    >>> load_yaml("a: &x [1, 2]\\nb: *x")
    {'a': [1, 2], 'b': [1, 2]}
    >>> load_yaml("a: &x [&y [1, *y]]")
    Traceback (most recent call last):
    ...
    pilotboat.core.limits.LimitExceeded: the YAML alias *y is inside the node it names (a cycle)
    """
    _check_bytes(text)
    _scan_events(text)
    loader = _Loader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def check_document(doc: Any) -> None:
    """Hold an already parsed document to :data:`MAX_DOCUMENT_DEPTH` and
    :data:`MAX_DOCUMENT_NODES` (shared references counted each time they are reached).

    Raises :class:`LimitExceeded` over one.
    """
    depth, count = nesting(doc, max_depth=MAX_DOCUMENT_DEPTH, max_nodes=MAX_DOCUMENT_NODES)
    if depth > MAX_DOCUMENT_DEPTH:
        raise LimitExceeded(
            _over(f"nested more than {MAX_DOCUMENT_DEPTH} levels deep", "MAX_DOCUMENT_DEPTH",
                  MAX_DOCUMENT_DEPTH),
            "MAX_DOCUMENT_DEPTH",
        )  # fmt: skip
    if count > MAX_DOCUMENT_NODES:
        raise LimitExceeded(
            _over(f"more than {MAX_DOCUMENT_NODES} values", "MAX_DOCUMENT_NODES",
                  MAX_DOCUMENT_NODES),
            "MAX_DOCUMENT_NODES",
        )  # fmt: skip


_JSON_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)


def clip_json_depth(text: str, max_depth: int = MAX_ADMISSION_DEPTH) -> str:
    """``text`` (JSON) with every object or array nested deeper than ``max_depth`` replaced
    by ``null``; one pass, no recursion. Text that is not JSON stays not JSON.

    >>> clip_json_depth('{"a": [1, {"b": [2]}], "c": "[{"}', max_depth=2)
    '{"a": [1, null], "c": "[{"}'
    """
    out: list[str] = []
    depth, kept_until = 0, 0
    for match in _JSON_TOKEN.finditer(text):
        token = match.group()
        if token in ("[", "{"):
            depth += 1
            if depth == max_depth + 1:
                out.append(text[kept_until : match.start()])
                out.append("null")
        elif token in ("]", "}"):
            if depth == max_depth + 1:
                kept_until = match.end()
            depth -= 1
    out.append(text[kept_until:] if depth <= max_depth else "")
    return "".join(out)


# --- query templates -----------------------------------------------------------------------


class TemplateLimitExceeded(SecurityError):
    """A query template over a limit, or using what a query template may not."""

    def __init__(self, message: str, limit: str) -> None:
        super().__init__(message)
        self.limit = limit


def _measure(value: Any, limit: int = MAX_TEMPLATE_OUTPUT) -> int:
    """Roughly the characters ``value`` takes as text (strings their length, integers their
    digits, one per item of a container), counted only until past ``limit``."""
    total = 0
    stack = [value]
    while stack and total <= limit:
        item = stack.pop()
        if isinstance(item, str | bytes):
            total += len(item)
        elif isinstance(item, int) and not isinstance(item, bool):
            total += item.bit_length() // 3 + 1
        elif isinstance(item, Mapping):
            total += 1 + len(item)
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            total += 1 + len(item)
            stack.extend(item)
        else:
            total += 1
    return total


def _too_long(what: str, size: int) -> TemplateLimitExceeded:
    return TemplateLimitExceeded(
        _over(f"{what} would be {size} characters long, more than {MAX_TEMPLATE_OUTPUT}",
              "MAX_TEMPLATE_OUTPUT", MAX_TEMPLATE_OUTPUT),
        "MAX_TEMPLATE_OUTPUT",
    )  # fmt: skip


def _check_size(what: str, value: Any) -> Any:
    size = _measure(value)
    if size > MAX_TEMPLATE_OUTPUT:
        raise _too_long(what, size)
    return value


def _too_big(expression: str, bits: int) -> TemplateLimitExceeded:
    return TemplateLimitExceeded(
        _over(f"{expression} would be a {bits}-bit number, more than {MAX_TEMPLATE_NUMBER_BITS}",
              "MAX_TEMPLATE_NUMBER_BITS", MAX_TEMPLATE_NUMBER_BITS),
        "MAX_TEMPLATE_NUMBER_BITS",
    )  # fmt: skip


def _is_int(value: Any) -> bool:
    return isinstance(value, int)


def _is_sequence(value: Any) -> bool:
    return isinstance(value, str | bytes | list | tuple)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 20 else text[:17] + "..."


_FORMAT_FIELD = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")


def _check_times(expression: str, left: Any, right: Any) -> None:
    if _is_sequence(left) and _is_int(right) or _is_sequence(right) and _is_int(left):
        sequence, times = (left, right) if _is_sequence(left) else (right, left)
        size = _measure(sequence) * max(int(times), 0)
        if size > MAX_TEMPLATE_OUTPUT:
            raise _too_long(expression, size)
    elif _is_int(left) and _is_int(right):
        bits = abs(left).bit_length() + abs(right).bit_length()
        if bits > MAX_TEMPLATE_NUMBER_BITS:
            raise _too_big(expression, bits)


def _check_power(expression: str, left: Any, right: Any) -> None:
    if _is_int(left) and _is_int(right) and right > 0 and abs(left) > 1:
        bits = abs(left).bit_length() * right
        if bits > MAX_TEMPLATE_NUMBER_BITS:
            raise _too_big(expression, bits)


def _check_plus(expression: str, left: Any, right: Any) -> None:
    if _is_sequence(left) and _is_sequence(right):
        size = _measure(left) + _measure(right)
        if size > MAX_TEMPLATE_OUTPUT:
            raise _too_long(expression, size)


def _check_format(expression: str, left: Any, right: Any) -> None:
    if isinstance(left, str):
        _check_size(expression, right)
        for width, precision in _FORMAT_FIELD.findall(left):
            for n in (width, precision):
                if n == "*" or (n and int(n) > MAX_TEMPLATE_OUTPUT):
                    raise _too_long(f"a %-format with width {n}", MAX_TEMPLATE_OUTPUT + 1)


_BINOP_CHECKS: dict[str, Callable[[str, Any, Any], None]] = {
    "*": _check_times,
    "**": _check_power,
    "+": _check_plus,
    "%": _check_format,
}
"""Before ``left <op> right`` runs: refuse it when its result would be over a limit."""


def _bounded_concat(parts: Iterable[Any]) -> str:
    """``''.join``, refusing once the text passes :data:`MAX_TEMPLATE_OUTPUT`."""
    out: list[str] = []
    total = 0
    for part in parts:
        total += len(part)
        if total > MAX_TEMPLATE_OUTPUT:
            raise _too_long("the rendered text", total)
        out.append(part)
    return "".join(out)


def _finalize(value: Any) -> Any:
    return _check_size("a {{ }} value", value)


@jinja2.pass_eval_context
def _join(eval_ctx: Any, value: Any, d: str = "", attribute: Any = None) -> str:
    items = list(value) if isinstance(value, Iterable) else value
    size = _measure(items) + len(str(d)) * max(len(items) - 1, 0)
    if size > MAX_TEMPLATE_OUTPUT:
        raise _too_long("join", size)
    return _check_size("join", do_join(eval_ctx, items, d, attribute))  # type: ignore[no-any-return]


@jinja2.pass_eval_context
def _replace(eval_ctx: Any, s: Any, old: Any, new: Any, count: int | None = None) -> str:
    text, old_text, new_text = str(s), str(old), str(new)
    times = text.count(old_text) if old_text else len(text) + 1
    if count is not None and count >= 0:
        times = min(times, count)
    size = len(text) + times * (len(new_text) - len(old_text))
    if size > MAX_TEMPLATE_OUTPUT:
        raise _too_long("replace", size)
    return str(do_replace(eval_ctx, s, old, new, count))


def _guarded_filter(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """A filter that grows its input by at most a constant: its arguments and its result
    are held to :data:`MAX_TEMPLATE_OUTPUT`."""
    passes_context = hasattr(fn, "jinja_pass_arg")

    @functools.wraps(fn)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        for value in (*(args[1:] if passes_context else args), *kwargs.values()):
            _check_size(name, value)
        return _check_size(name, fn(*args, **kwargs))

    return guarded


_LINEAR_FILTERS = ("abs", "count", "d", "default", "first", "float", "int", "last", "length",
                   "lower", "round", "string", "trim", "truncate", "upper")  # fmt: skip

_ALLOWED_NODES = (
    nodes.Template, nodes.Output, nodes.TemplateData, nodes.Const, nodes.Name, nodes.Getattr,
    nodes.Getitem, nodes.Slice, nodes.Tuple, nodes.List, nodes.Dict, nodes.Pair, nodes.Keyword,
    nodes.CondExpr, nodes.If, nodes.Assign, nodes.AssignBlock, nodes.With, nodes.Filter,
    nodes.FilterBlock, nodes.Test, nodes.Compare, nodes.Operand, nodes.BinExpr, nodes.UnaryExpr,
    nodes.Concat,
)  # fmt: skip

_REFUSED_NAMES = {
    nodes.For: "loops ({% for %})",
    nodes.Macro: "macros",
    nodes.CallBlock: "{% call %} blocks",
    nodes.Call: "function and method calls",
    nodes.Include: "{% include %}",
    nodes.Import: "{% import %}",
    nodes.FromImport: "{% from ... import %}",
    nodes.Extends: "{% extends %}",
    nodes.Block: "{% block %}",
}


class _CheckedConcat(CodeGenerator):
    """Jinja's code generator with ``~`` going through the environment's size check."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.concat_checked((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class QueryTemplateSandbox(jinja2.sandbox.ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox holding a query template to the limits above (see the
    module doc): undefined names are errors, nothing is escaped."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})
    code_generator_class = _CheckedConcat

    def __init__(self) -> None:
        super().__init__(undefined=jinja2.StrictUndefined, autoescape=False, finalize=_finalize)
        builtin = self.filters
        self.filters = {name: _guarded_filter(name, builtin[name]) for name in _LINEAR_FILTERS}
        self.filters |= {"join": _join, "replace": _replace}
        self.concat = _bounded_concat  # type: ignore[method-assign]

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        expression = f"{_short(left)} {operator} {_short(right)}"
        _BINOP_CHECKS[operator](expression, left, right)
        result = super().call_binop(context, operator, left, right)
        if _is_sequence(result):
            _check_size(expression, result)
        return result

    def concat_checked(self, values: tuple[Any, ...]) -> str:
        """What ``a ~ b`` makes, refused before it is made when over the limit."""
        _check_size("a ~ concatenation", values)
        return _bounded_concat(str(v) for v in values)

    def check(self, source: str) -> nodes.Template:
        """Parse ``source`` and refuse what a query template may not be or use."""
        if len(source) > MAX_QUERY_TEMPLATE_LENGTH:
            raise TemplateLimitExceeded(
                _over(f"{len(source)} characters long, more than {MAX_QUERY_TEMPLATE_LENGTH}",
                      "MAX_QUERY_TEMPLATE_LENGTH", MAX_QUERY_TEMPLATE_LENGTH),
                "MAX_QUERY_TEMPLATE_LENGTH",
            )  # fmt: skip
        try:
            tree = self.parse(source)
        except RecursionError:
            raise self._too_deep() from None
        stack: list[tuple[nodes.Node, int]] = [(tree, 0)]
        while stack:
            node, depth = stack.pop()
            if depth > MAX_TEMPLATE_DEPTH:
                raise self._too_deep()
            if not isinstance(node, _ALLOWED_NODES):
                what = _REFUSED_NAMES.get(type(node), type(node).__name__)
                raise TemplateLimitExceeded(
                    f"{what} are not allowed in a query template", "QueryTemplateSandbox"
                )
            if isinstance(node, nodes.Filter) and node.name not in self.filters:
                raise TemplateLimitExceeded(
                    f"the filter {node.name!r} is not allowed in a query template "
                    f"(allowed: {', '.join(sorted(self.filters))})",
                    "QueryTemplateSandbox",
                )
            stack.extend((child, depth + 1) for child in node.iter_child_nodes())
        return tree

    @staticmethod
    def _too_deep() -> TemplateLimitExceeded:
        return TemplateLimitExceeded(
            _over(f"nested more than {MAX_TEMPLATE_DEPTH} levels deep", "MAX_TEMPLATE_DEPTH",
                  MAX_TEMPLATE_DEPTH),
            "MAX_TEMPLATE_DEPTH",
        )  # fmt: skip


_SANDBOX = QueryTemplateSandbox()


def compile_query_template(source: str) -> jinja2.Template:
    """A query template, checked (:meth:`QueryTemplateSandbox.check`) and compiled.

    Raises :class:`TemplateLimitExceeded` over a limit, ``jinja2.TemplateSyntaxError`` when
    it is not a template.

    >>> compile_query_template("{% for i in range(3) %}x{% endfor %}")
    Traceback (most recent call last):
    ...
    pilotboat.core.limits.TemplateLimitExceeded: loops ({% for %}) are not allowed in a \
query template
    """
    tree = _SANDBOX.check(source)
    try:
        return _SANDBOX.from_string(tree)
    except RecursionError:
        raise _SANDBOX._too_deep() from None


def render_query_template(template: jinja2.Template, values: Mapping[str, object]) -> str:
    """Render a compiled query template; over a limit, :class:`TemplateLimitExceeded`
    names it.

    >>> render_query_template(compile_query_template("{{ 'x' * 10**9 }}"), {})
    Traceback (most recent call last):
    ...
    pilotboat.core.limits.TemplateLimitExceeded: 'x' * 1000000000 would be 1000000000 \
characters long, more than 65536 (limit MAX_TEMPLATE_OUTPUT = 65536)
    """
    return template.render(values)
