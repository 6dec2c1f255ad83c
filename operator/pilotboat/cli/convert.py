"""`pilotboat convert FILE...`: Argo Rollouts manifests to Pilotboat's, offline.

Prints the Microservices (and RolloutPolicies with ``--policies``) as YAML on stdout, and on
stderr one line per field that could not be carried over, with its path and why. Exit 0
when everything carried over, 1 when anything did not, 2 when an input cannot be read or
is not what it claims to be. The rules are :mod:`pilotboat.core.convert`'s (docs/convert.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
import yaml

from pilotboat.core.convert import ConversionError, SourceDocument, convert

__all__ = ["convert_command"]

EXIT_DROPPED = 1
EXIT_UNREADABLE = 2


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    raise SystemExit(EXIT_UNREADABLE)


def _read(name: str) -> list[SourceDocument]:
    source = "stdin" if name == "-" else name
    try:
        text = sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        _fail(f"{source}: cannot read: {getattr(exc, 'strerror', None) or exc}")
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        _fail(f"{source}: not YAML{where}: {getattr(exc, 'problem', None) or exc}")
    return [SourceDocument(source, doc) for doc in docs if doc is not None]


class _Dumper(yaml.SafeDumper):
    """Block style for strings of several lines (PromQL), so they read as written."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


@click.command("convert")
@click.argument("files", nargs=-1, required=True)
@click.option(
    "--policies",
    is_flag=True,
    help="Put each distinct canary strategy in a RolloutPolicy that the Microservices refer to.",
)
def convert_command(files: tuple[str, ...], policies: bool) -> None:
    """Convert Argo Rollouts Rollouts and (Cluster)AnalysisTemplates in FILES (`-` for stdin)
    into Microservices printed as YAML; name on stderr each field that was not carried over.

    Exit 0: all carried over; 1: something was not; 2: an input cannot be read.
    """
    documents = [doc for name in files for doc in _read(name)]
    if not documents:
        _fail(f"{', '.join(files)}: no documents to convert")
    try:
        result = convert(documents, policies=policies)
    except ConversionError as exc:
        _fail(str(exc))
    if result.manifests:
        text = yaml.dump_all(result.manifests, Dumper=_Dumper, sort_keys=False, width=4096)
        click.echo(text, nl=False)
    for dropped in result.dropped:
        click.echo(str(dropped), err=True)
    if result.dropped:
        raise SystemExit(EXIT_DROPPED)
