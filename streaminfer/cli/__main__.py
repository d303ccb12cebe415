"""`python -m streaminfer.cli`: the same as the `streaminfer` command."""

from streaminfer.cli.main import main

main()
