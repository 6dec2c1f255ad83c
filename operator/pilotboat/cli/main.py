"""The ``pilotboat`` command (also installed as the ``kubectl-pilotboat`` plugin)."""

from __future__ import annotations

import os
from typing import Any

import click

from pilotboat.cli.errors import CommandError, explain

__all__ = ["CommandLine", "main"]


class CommandLine(click.Group):
    """The command group: whatever a command raises about talking to the cluster is shown
    as one line (`pilotboat.cli.errors.explain`) with a non-zero exit, never a traceback;
    ``NO_COLOR`` (https://no-color.org) turns colour off for every command.

    ``PILOTBOAT_DEBUG=1`` keeps the traceback, for bug reports.
    """

    def invoke(self, ctx: click.Context) -> Any:
        if os.environ.get("NO_COLOR"):
            ctx.color = False
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.Abort, click.UsageError, CommandError):
            raise
        except click.ClickException as exc:
            raise CommandError(exc.message, exit_code=exc.exit_code) from None
        except Exception as exc:
            failure = explain(exc)
            if failure is None or os.environ.get("PILOTBOAT_DEBUG"):
                raise
            raise failure from None


@click.group(cls=CommandLine, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pilotboat")
def main() -> None:
    """Pilotboat: canary releases coordinated with schema migrations.

    Errors are one line on stderr; exit codes: 0 done, 1 error, 2 usage error (or
    `status --wait` timed out). See docs/cli.md.
    """


def _register() -> None:
    from pilotboat.cli.approve import approve
    from pilotboat.cli.contract import contract
    from pilotboat.cli.convert import convert_command
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
    main.add_command(convert_command)


_register()
