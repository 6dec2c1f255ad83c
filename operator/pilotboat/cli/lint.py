"""`pilotboat lint FILE...`: check Pilotboat manifests offline, before Git or the API server.

Checks per object, all without a cluster: the CRD's OpenAPI schema (the one
`pilotboat crds generate` writes, here as a JSON Schema that also refuses unknown fields, as
`kubectl apply --validate=strict` would), then the pydantic model of the kind's spec, which
holds the rules across fields that the CRD states in CEL. Objects of other kinds are skipped.

A SchemaMigration whose spec passes both also goes through the operator's SQL linter
(:mod:`pilotboat.core.sqllint`), phase by phase, with the rule ids the reconciler uses, so CI
catches a ``DROP COLUMN`` in expand before the cluster does. Each SQL finding is a line
``file:doc: spec.<phase>: PBxxx name: statement N: construct: why`` (``doc`` is the 1-based
document in the file); refusals fail the lint, warnings and findings that need approval at
the cluster (``pilotboat:allow``, a backfill DELETE) are printed only.

A Microservice or RolloutPolicy whose spec passes both has its analysis queries checked
(:mod:`pilotboat.core.promql_check`): each signal's ``query`` must use only the template
variables the operator provides and render to PromQL that parses, so a misspelt
``{{ servise }}`` or an unclosed parenthesis fails here rather than at the first analysis
step. Each is a line ``file: Kind/name: spec...signals.<signal>.query: why``.

jsonschema and the SQL linter (with pglast) are imported by the checks that use them, not
with this module: the command group imports every command's module, so ``pilotboat run``,
which never lints, would otherwise carry them for the operator's lifetime
(tests/core/test_lazy_imports.py).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import yaml
from pydantic import ValidationError

from pilotboat import GROUP
from pilotboat.api.catalog import KINDS
from pilotboat.api.common import error_path
from pilotboat.api.crd import custom_resource_definition
from pilotboat.api.kind import KindDescriptor
from pilotboat.api.migration import SchemaMigrationSpec
from pilotboat.core.promql_check import spec_query_problems

if TYPE_CHECKING:
    import jsonschema

    from pilotboat.core.sqllint import LintFinding

__all__ = ["Finding", "lint", "lint_document", "lint_file"]


@dataclass(frozen=True)
class Finding:
    """One thing wrong with one object: where (file, object, field) and what."""

    file: str
    object: str
    field: str
    message: str
    doc: int = 0
    """The object's 1-based document number in its file (0 when not known)."""
    rule: str = ""
    """For a SQL finding, the linter's rule id (``PB001 drop-column``); empty otherwise."""
    severity: str = "refuse"
    """The SQL linter's :class:`~pilotboat.core.sqlrules.Severity` value: ``refuse`` fails
    the lint; ``approve`` and ``warn`` are reported only."""

    @property
    def fails(self) -> bool:
        return self.severity == "refuse"

    def __str__(self) -> str:
        if self.rule:
            verdict = "" if self.fails else f" ({_VERDICTS.get(self.severity, self.severity)})"
            return f"{self.file}:{self.doc}: {self.field}: {self.rule}{verdict}: {self.message}"
        return f"{self.file}: {self.object}: {self.field}: {self.message}"


_VERDICTS = {"approve": "needs approval", "warn": "warning"}


def _json_schema(node: Any) -> Any:
    """The CRD's structural schema as JSON Schema (Draft 7): `nullable` as a null type,
    int-or-string as either, OpenAPI's boolean exclusive bounds as numbers, and objects closed
    to fields they do not declare."""
    if isinstance(node, list):
        return [_json_schema(n) for n in node]
    if not isinstance(node, Mapping):
        return node
    out = {k: _json_schema(v) for k, v in node.items() if not k.startswith("x-kubernetes")}
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    for bound, exclusive in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        if isinstance(out.get(exclusive), bool):  # OpenAPI 3.0's form; Draft 7 takes the number
            if out.pop(exclusive) and bound in out:
                out[exclusive] = out.pop(bound)
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    if (
        "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@functools.cache
def _validator(kind: str) -> jsonschema.protocols.Validator:
    import jsonschema

    descriptor = next(k for k in KINDS if k.kind == kind)
    crd = custom_resource_definition(descriptor)
    version = next(v for v in crd["spec"]["versions"] if v.get("storage"))
    schema = _json_schema(version["schema"]["openAPIV3Schema"])
    properties = schema.setdefault("properties", {})
    properties.setdefault("apiVersion", {"type": "string"})
    properties.setdefault("kind", {"type": "string"})
    properties["metadata"] = {"type": "object"}  # the API server's to check
    properties.pop("status", None)  # the operator's, not the manifest's
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    return cls(schema)


def _path(parts: Any) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text or "(object)"


def _schema_findings(error: jsonschema.ValidationError) -> Iterator[tuple[str, str]]:
    where = list(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, Mapping):
        declared = set((error.schema or {}).get("properties") or {})  # type: ignore[union-attr]
        for extra in sorted(set(error.instance) - declared):
            yield _path([*where, extra]), "unknown field"
        return
    yield _path(where), error.message


def _model_findings(
    descriptor: KindDescriptor, doc: Mapping[str, Any]
) -> Iterator[tuple[str, str]]:
    try:
        descriptor.spec_model.model_validate(doc.get("spec") or {})
    except ValidationError as exc:
        for err in exc.errors():
            yield error_path(err)


_SqlOf = Callable[[SchemaMigrationSpec], str | None]
_SqlPhase = tuple[str, Callable[[str], tuple["LintFinding", ...]], _SqlOf]


@functools.cache
def _sql_phases() -> tuple[_SqlPhase, ...]:
    """Each phase's field, linter and SQL; the linter (and pglast) load on the first call."""
    from pilotboat.core.sqllint import (
        lint_backfill,
        lint_contract,
        lint_down,
        lint_expand,
        lint_verify,
    )

    return (
        ("spec.expand", lint_expand, lambda s: s.expand.sql),
        ("spec.expand.down", lint_down, lambda s: s.expand.down),
        ("spec.backfill", lint_backfill, lambda s: s.backfill.sql if s.backfill else None),
        ("spec.verify", lint_verify, lambda s: s.verify.sql if s.verify else None),
        ("spec.contract", lint_contract, lambda s: s.contract.sql),
    )


def _sql_findings(file: str, index: int, name: str, doc: Mapping[str, Any]) -> list[Finding]:
    """The SQL linter's findings on each phase of a SchemaMigration whose spec is valid."""
    spec = SchemaMigrationSpec.model_validate(doc.get("spec") or {})
    return [
        Finding(file, name, field, f.message, index, f.rule, f.severity.value)
        for field, lint_phase, sql_of in _sql_phases()
        if (sql := sql_of(spec)) is not None
        for f in lint_phase(sql)
    ]


def lint_document(file: str, doc: Any, index: int = 0) -> list[Finding]:
    """Findings for one YAML document (empty when it is fine or not Pilotboat's); ``index`` is
    its 1-based number in the file. A SchemaMigration's SQL is linted once its spec is valid."""
    if not isinstance(doc, Mapping):
        return []
    api_version, kind = str(doc.get("apiVersion", "")), str(doc.get("kind", ""))
    if api_version.split("/")[0] != GROUP:
        return []
    name = f"{kind or '?'}/{((doc.get('metadata') or {}).get('name')) or '?'}"
    descriptor = next((k for k in KINDS if k.kind == kind), None)
    if descriptor is None:
        known = ", ".join(k.kind for k in KINDS)
        return [
            Finding(file, name, "kind", f"{kind!r} is not a Pilotboat kind ({known})", index)
        ]
    if api_version != descriptor.api_version:
        return [Finding(file, name, "apiVersion", f"want {descriptor.api_version}", index)]
    errors = sorted(_validator(kind).iter_errors(doc), key=lambda e: list(e.absolute_path))
    findings = [Finding(file, name, f, m, index) for e in errors for f, m in _schema_findings(e)]
    if not findings:  # the model's rules assume a spec of the right shape
        findings = [Finding(file, name, f, m, index) for f, m in _model_findings(descriptor, doc)]
    if not findings and kind == "SchemaMigration":
        findings = _sql_findings(file, index, name, doc)
    if not findings:
        findings = [Finding(file, name, p.field, p.message, index)
                    for p in spec_query_problems(kind, doc.get("spec"))]  # fmt: skip
    return findings


def lint_file(path: Path) -> tuple[int, list[Finding]]:
    """(number of Pilotboat objects checked, findings) for a YAML file of one or more documents."""
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    except yaml.YAMLError as exc:
        return 0, [Finding(str(path), "-", "-", f"not YAML: {exc}")]
    checked = sum(
        1
        for d in docs
        if isinstance(d, Mapping) and str(d.get("apiVersion", "")).split("/")[0] == GROUP
    )
    return checked, [f for i, d in enumerate(docs, 1) for f in lint_document(str(path), d, i)]


def _files(paths: tuple[Path, ...]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.suffix in {".yaml", ".yml"})
        else:
            yield path


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
def lint(paths: tuple[Path, ...], output: str) -> None:
    """Check Pilotboat manifests in PATHS (files or folders) offline, naming file, object and
    field of each problem, and lint each SchemaMigration's SQL phase by phase; exit 1 when
    any problem or SQL refusal is found (SQL warnings and findings that need approval are
    printed only)."""
    checked, findings = 0, []
    for path in _files(paths):
        n, found = lint_file(path)
        checked += n
        findings += found
    if output == "json":
        click.echo(json.dumps({"checked": checked, "findings": [asdict(f) for f in findings]},
                              indent=2))
    else:
        for finding in findings:
            click.secho(str(finding), fg="red" if finding.fails else "yellow", err=False)
        failing = sum(1 for f in findings if f.fails)
        summary = f"{checked} object(s) checked, {failing} problem(s)"
        if len(findings) > failing:
            summary += f", {len(findings) - failing} SQL warning(s) or approval(s) needed"
        click.secho(summary, fg="red" if failing else "green", bold=bool(failing))
    if any(f.fails for f in findings):
        raise SystemExit(1)
