"""The ``pilotboat`` command (also installed as the ``kubectl-pilotboat`` plugin)."""

from __future__ import annotations

import click

__all__ = ["main"]


@click.group()
@click.version_option(package_name="pilotboat")
def main() -> None:
    """Pilotboat: canary releases coordinated with schema migrations."""


def _register() -> None:
    from pilotboat.cli.approve import approve
    from pilotboat.cli.contract import contract
    from pilotboat.cli.crds import crds
    from pilotboat.cli.dashboard import dashboard
    from pilotboat.cli.get import get
    from pilotboat.cli.lint import lint
    from pilotboat.cli.release import abort, promote, retry, status
    from pilotboat.cli.run import run
    from pilotboat.cli.version import version

    for command in (crds, contract, run, get, status, promote, abort, retry, approve, lint,
                    version, dashboard):
        main.add_command(command)


_register()
