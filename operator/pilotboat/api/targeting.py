"""flagd targeting rules: JsonLogic with flagd's operators, checked before a flag is accepted.

The operator set is the one OpenFeature's flagd evaluators know: the JsonLogic builtins of
``panzi-json-logic`` (the engine of the Python flagd provider), its special forms (``if``,
``and``, ``or``, ``map``, …), and flagd's own ``fractional``, ``starts_with``, ``ends_with``
and ``sem_ver``. No library checks the *structure* of a rule without evaluating it, and an
evaluation only walks the branches its data selects, so the walk below is our own.

Each problem names the field, as the API server would: ``spec.targeting.if[1].fractional``.

A rule is measured before it is walked: nested deeper than :data:`MAX_TARGETING_DEPTH` or
larger than :data:`MAX_TARGETING_NODES` values, it is refused with that one problem, so no
rule can make the check (or flagd) recurse without bound. Variant values are held to the same
limits. The other limits on untrusted input are in :mod:`pilotboat.core.limits`; these two
are here because the API layer checks flags and may not import the core.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from json_logic.builtins import BUILTINS

__all__ = [
    "FLAGD_OPERATORS",
    "MAX_TARGETING_DEPTH",
    "MAX_TARGETING_NODES",
    "fractional_buckets",
    "fractional_operations",
    "json_type",
    "nesting",
    "targeting_problems",
    "variant_type_problems",
]

MAX_TARGETING_DEPTH = 64
"""Objects and arrays nested in ``spec.targeting`` (or one variant value), at most. A
JsonLogic operator is two levels (its object and its argument list), so this allows some 30
nested operators; a typical rule (``if`` of ``in`` of ``var``) nests 5."""

MAX_TARGETING_NODES = 10_000
"""Values (objects, arrays and literals) in ``spec.targeting`` (or one variant value), at
most."""

_SPECIAL_FORMS = frozenset(
    {"if", "?:", "and", "or", "filter", "reduce", "map", "all", "some", "none"}
)
_FLAGD = frozenset({"fractional", "starts_with", "ends_with", "sem_ver"})
FLAGD_OPERATORS: frozenset[str] = frozenset(BUILTINS) | _SPECIAL_FORMS | _FLAGD
"""Every operator a targeting rule may use."""


def json_type(value: Any) -> str:
    """The JSON type of a variant value: boolean, number, string, object, array or null.

    Integers and floats are one type: JSON has only numbers, and the API server may store
    ``1.0`` as ``1``.

    >>> [json_type(v) for v in (True, 1, 1.5, "a", {}, [], None)]
    ['boolean', 'number', 'number', 'string', 'object', 'array', 'null']
    """
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list | tuple):
        return "array"
    return "null"


def nesting(value: Any, *, max_depth: int, max_nodes: int) -> tuple[int, int]:
    """How deep a JSON-like value nests (each object or array is a level; a literal alone
    is depth 0) and how many values it holds, counted without recursion and only until one
    passes its bound: a result over ``max_depth`` or ``max_nodes`` means "more than".

    Shared references count each time they are reached (as a YAML alias expands), so the
    count is bounded work even for a value that refers to itself.

    >>> nesting({"if": [{"var": "x"}, "on", "off"]}, max_depth=64, max_nodes=100)
    (3, 6)
    >>> nesting([[[[1]]]], max_depth=2, max_nodes=100)
    (3, 3)
    """
    deepest, count = 0, 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        count += 1
        if isinstance(item, Mapping):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        depth += 1
        deepest = max(deepest, depth)
        if deepest > max_depth or count > max_nodes:
            break
        stack.extend((child, depth) for child in children)
    return deepest, count


def _size_problem(value: Any, field: str) -> str | None:
    depth, count = nesting(value, max_depth=MAX_TARGETING_DEPTH, max_nodes=MAX_TARGETING_NODES)
    if depth > MAX_TARGETING_DEPTH:
        return (
            f"{field}: nested more than {MAX_TARGETING_DEPTH} levels deep "
            f"(limit MAX_TARGETING_DEPTH = {MAX_TARGETING_DEPTH})"
        )
    if count > MAX_TARGETING_NODES:
        return (
            f"{field}: more than {MAX_TARGETING_NODES} values "
            f"(limit MAX_TARGETING_NODES = {MAX_TARGETING_NODES})"
        )
    return None


def variant_type_problems(variants: Mapping[str, Any], field: str = "spec.variants") -> list[str]:
    """Problems with the variants' values: none is null, none is over the size limits, and
    all share one JSON type."""
    problems = [f"{field}.{name}: a variant value cannot be null" for name, v in variants.items()
                if v is None]  # fmt: skip
    problems += [p for name, v in variants.items() if (p := _size_problem(v, f"{field}.{name}"))]
    types = {name: json_type(v) for name, v in variants.items() if v is not None}
    if len(set(types.values())) > 1:
        listed = ", ".join(f"{n} is {t}" for n, t in sorted(types.items()))
        problems.append(f"{field}: variant values must share one JSON type ({listed})")
    return problems


def fractional_buckets(args: Any) -> list[Any]:
    """The ``[variant, percent]`` buckets of a ``fractional`` operation's arguments (the
    optional first argument, the value to bucket by, left out).

    >>> fractional_buckets([{"var": "email"}, ["on", 10], ["off", 90]])
    [['on', 10], ['off', 90]]
    >>> fractional_buckets([["on", 50], ["off", 50]])
    [['on', 50], ['off', 50]]
    """
    items = list(args) if isinstance(args, list) else [args]
    if items and not isinstance(items[0], list):
        items = items[1:]
    return items


def _fractional_problems(args: Any, where: str, variants: Mapping[str, Any]) -> list[str]:
    buckets = fractional_buckets(args)
    if not buckets:
        return [f"{where}: fractional needs at least one [variant, percent] bucket"]
    problems = []
    total = 0
    for i, bucket in enumerate(buckets):
        at = f"{where}[{i}]"
        if (
            not isinstance(bucket, list)
            or len(bucket) != 2
            or not isinstance(bucket[0], str)
            or isinstance(bucket[1], bool)
            or not isinstance(bucket[1], int)
            or bucket[1] < 0
        ):
            problems.append(f"{at}: a bucket is [variant name, percent], e.g. [\"on\", 10]")
            continue
        if bucket[0] not in variants:
            problems.append(f"{at}: {bucket[0]!r} is not one of the variants {sorted(variants)}")
        total += bucket[1]
    if not problems and total != 100:
        problems.append(f"{where}: the percentages must sum to 100, not {total}")
    return problems


def _walk(rule: Any, where: str, variants: Mapping[str, Any]) -> Iterator[str]:
    if isinstance(rule, list):
        for i, item in enumerate(rule):
            yield from _walk(item, f"{where}[{i}]", variants)
        return
    if not isinstance(rule, Mapping):
        return  # a literal
    if len(rule) != 1:
        yield f"{where}: a JsonLogic rule has exactly one operator, found {sorted(rule)}"
        return
    ((op, args),) = rule.items()
    at = f"{where}.{op}"
    if op not in FLAGD_OPERATORS:
        yield f"{at}: unknown JsonLogic operator {op!r}"
        return
    if op == "fractional":
        yield from _fractional_problems(args, at, variants)
        first = args[0] if isinstance(args, list) and args else None
        if isinstance(first, Mapping):
            yield from _walk(first, f"{at}[0]", variants)
        return
    if op == "var" and not isinstance(args, str | int | list):
        yield f"{at}: var takes a name, an index, or [name, default]"
        return
    yield from _walk(args, at, variants)


def targeting_problems(
    targeting: Mapping[str, Any] | None,
    variants: Mapping[str, Any],
    field: str = "spec.targeting",
) -> list[str]:
    """Problems with a flag's targeting: it is JsonLogic whose operators flagd knows, each
    ``fractional`` split names variants of the flag and its percentages sum to 100, within
    :data:`MAX_TARGETING_DEPTH` and :data:`MAX_TARGETING_NODES` (checked first; over them,
    that is the only problem reported).

    An empty rule (``{}``) is no targeting, as in flagd.

    >>> targeting_problems({"fractional": [["on", 10], ["off", 80]]}, {"on": 1, "off": 0})
    ['spec.targeting.fractional: the percentages must sum to 100, not 90']
    >>> targeting_problems({"if": [{"in": ["@x.io", {"var": "email"}]}, "on", "off"]},
    ...                    {"on": 1, "off": 0})
    []
    """
    if not targeting:
        return []
    too_large = _size_problem(targeting, field)
    if too_large is not None:
        return [too_large]
    return list(_walk(targeting, field, variants))


def fractional_operations(rule: Any) -> Sequence[Mapping[str, Any]]:
    """Every ``fractional`` operation in a rule, outermost first."""
    found: list[Mapping[str, Any]] = []
    if isinstance(rule, list):
        for item in rule:
            found.extend(fractional_operations(item))
    elif isinstance(rule, Mapping):
        for op, args in rule.items():
            if op == "fractional":
                found.append(rule)
            found.extend(fractional_operations(args))
    return found
