"""Reasons live in one module: no handler or core module posts a reason spelled in place.

Users and tests match on the CamelCase words `kubectl describe` shows, so each is a
constant of `pilotboat.core.reasons`. This test reads the handlers and the core with `ast`
and fails on a string literal (or an f-string) where a reason goes: the first argument of
``*.event(...)``, ``ReleaseEvent(...)`` and ``MigrationEvent(...)``, the reason of
``DesiredCondition(...)`` and ``GateVerdict(...)``, a ``reason=`` keyword, and the
``{"reason": ...}`` of a log record's ``extra``.
"""

from __future__ import annotations

import ast
import doctest
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import pilotboat
import pilotboat.core.reasons

pytestmark = pytest.mark.core

PACKAGE = Path(pilotboat.__file__).parent
MODULES = sorted(
    p
    for p in [*PACKAGE.glob("core/*.py"), *PACKAGE.glob("handlers/*.py")]
    if p.name != "reasons.py"
)

# Call name -> the position of its reason among the positional arguments.
REASON_AT = {
    "event": 0,
    "ReleaseEvent": 0,
    "MigrationEvent": 0,
    "DesiredCondition": 2,
    "GateVerdict": 2,
}


def _spelled(node: ast.expr) -> bool:
    return isinstance(node, ast.JoinedStr) or (
        isinstance(node, ast.Constant) and isinstance(node.value, str)
    )


def _called(call: ast.Call) -> str | None:
    func = call.func
    if isinstance(func, ast.Attribute):
        # `kopf.on.event(group, version, plural)` registers a handler; it posts nothing.
        registers = isinstance(func.value, ast.Attribute) and func.value.attr == "on"
        return None if registers else func.attr
    return func.id if isinstance(func, ast.Name) else None


def spelled_reasons(source: str) -> Iterator[tuple[int, str]]:
    """(line, source text) of each reason spelled as a literal in `source`.

    >>> list(spelled_reasons('rc.event("Adopted", m)\\nrc.event(reasons.ADOPTED, m)'))
    [(1, "'Adopted'")]
    >>> list(spelled_reasons('log.info(m, extra={"reason": f"Flags{verb}"})'))
    [(1, "f'Flags{verb}'")]
    >>> list(spelled_reasons('@kopf.on.event("apps", "v1", "deployments")\\ndef f(): pass'))
    []
    """
    for node in ast.walk(ast.parse(source)):
        found: list[ast.expr] = []
        if isinstance(node, ast.Call):
            name = _called(node)
            at = REASON_AT.get(name or "")
            if at is not None and len(node.args) > at:
                found.append(node.args[at])
            found += [k.value for k in node.keywords if k.arg == "reason"]
        elif isinstance(node, ast.Dict):
            found += [
                value
                for key, value in zip(node.keys, node.values, strict=True)
                if isinstance(key, ast.Constant) and key.value == "reason"
            ]
        yield from ((n.lineno, ast.unparse(n)) for n in found if _spelled(n))


def test_the_scanner_examples_hold() -> None:
    result = doctest.testmod(sys.modules[__name__])
    assert result.attempted > 0 and result.failed == 0


def test_the_reasons_module_examples_hold() -> None:
    result = doctest.testmod(pilotboat.core.reasons)
    assert result.attempted > 0 and result.failed == 0


def test_the_scan_covers_the_handlers_and_the_core() -> None:
    names = {f"{p.parent.name}/{p.name}" for p in MODULES}
    assert {"handlers/adoption.py", "core/rollout.py", "core/migration.py"} <= names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_no_reason_is_spelled_outside_the_reasons_module(path: Path) -> None:
    spelled = [f"{path.name}:{line}: {text}" for line, text in spelled_reasons(path.read_text())]
    assert spelled == [], "make each a constant in pilotboat/core/reasons.py"


def test_reasons_are_camel_case_words() -> None:
    words = {
        name: value
        for name, value in vars(pilotboat.core.reasons).items()
        if name.isupper() and isinstance(value, str)
    }
    assert words, "the module defines its reasons as upper-case constants"
    assert all(v[:1].isupper() and v.isalnum() for v in words.values()), words
