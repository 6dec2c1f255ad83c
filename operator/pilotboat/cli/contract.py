"""`pilotboat contract check OLD NEW [--consumers DIR]`: the contract gate, outside the cluster.

For CI pipelines, like Pact's can-i-deploy or oasdiff's breaking check: exit 0 when NEW can
replace OLD, 1 on a break (each violation printed), 2 when a document cannot be read or is
not valid OpenAPI (one line naming the file and the JSON path of the problem).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import yaml
from pydantic import ValidationError

from pilotboat.api import MicroserviceSpec
from pilotboat.core.contracts import (
    ConsumerExpectation,
    ContractError,
    check_contract,
    expectations_for,
    load_document,
)

__all__ = ["contract"]


@click.group()
def contract() -> None:
    """Check OpenAPI contracts for breaking changes."""


def _consumers(directory: Path, service: str | None) -> list[ConsumerExpectation]:
    """Expectations declared by the Microservice manifests in ``directory`` (``*.yaml``,
    ``*.yml``, ``*.json``), of ``service``, or of any service when None."""
    specs: list[tuple[str, MicroserviceSpec]] = []
    for path in sorted(p for p in directory.rglob("*") if p.suffix in (".yaml", ".yml", ".json")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not isinstance(doc, dict) or doc.get("kind") != "Microservice":
                continue
            name = str((doc.get("metadata") or {}).get("name") or path.stem)
            try:
                specs.append((name, MicroserviceSpec.model_validate(doc.get("spec") or {})))
            except ValidationError as exc:
                raise ContractError(f"{path}: Microservice {name} is invalid: {exc}") from None
    if service is not None:
        return expectations_for(service, specs)
    providers = {u.service for _, spec in specs for u in (spec.api.consumes if spec.api else ())}
    return [e for provider in sorted(providers) for e in expectations_for(provider, specs)]


def _read(path: Path) -> dict[str, Any]:
    """The document at ``path``; a :class:`ContractError` names the file."""
    try:
        return load_document(path.read_text())
    except ContractError as exc:
        raise ContractError(f"{path}: {exc}") from None


@contract.command("check")
@click.argument("old", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("new", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--consumers",
    "consumers_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="A directory of Microservice manifests whose spec.api.consumes are checked too.",
)
@click.option(
    "--service",
    default=None,
    help="The provider's Microservice name, to pick its consumers' declarations; every "
    "declaration in --consumers when omitted.",
)
def check(old: Path, new: Path, consumers_dir: Path | None, service: str | None) -> None:
    """Exit 1 if NEW breaks clients of OLD or the consumers' declared expectations."""
    try:
        old_doc, new_doc = _read(old), _read(new)
        consumers = _consumers(consumers_dir, service) if consumers_dir else []
        violations = check_contract(old_doc, new_doc, consumers)
    except ContractError as exc:
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(2) from None
    if not violations:
        who = f" and {len(consumers)} consumer expectation(s)" if consumers else ""
        click.echo(f"compatible: {new} keeps the contract of {old}{who}")
        return
    click.echo(f"BREAKING: {len(violations)} violation(s) in {new} against {old}")
    for v in violations:
        line = f"  {v.rule:34} {v.location()}: {v.message}"
        if v.consumers:
            line += f"  [breaks {', '.join(v.consumers)}]"
        click.echo(line)
    raise SystemExit(1)
