"""`python -m pilotboat` is the `pilotboat` command."""

from pilotboat.cli.main import main

main()
