"""The ``pilotboat`` command (also installed as the ``kubectl-pilotboat`` plugin)."""

from __future__ import annotations

import click

__all__ = ["main"]


@click.group()
@click.version_option(package_name="pilotboat")
def main() -> None:
    """Pilotboat: canary releases coordinated with schema migrations."""


def _register() -> None:
    from pilotboat.cli.crds import crds
    from pilotboat.cli.run import run

    main.add_command(crds)
    main.add_command(run)


_register()
