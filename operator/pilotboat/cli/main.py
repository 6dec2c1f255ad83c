"""The ``pilotboat`` command (also installed as the ``kubectl-pilotboat`` plugin)."""

from __future__ import annotations

import click

__all__ = ["main"]


@click.group()
@click.version_option(package_name="pilotboat")
def main() -> None:
    """Pilotboat: canary releases coordinated with schema migrations."""


def _register() -> None:
    from pilotboat.cli.contract import contract
    from pilotboat.cli.crds import crds
    from pilotboat.cli.release import abort, promote, retry, status
    from pilotboat.cli.run import run

    for command in (crds, contract, run, status, promote, abort, retry):
        main.add_command(command)


_register()
