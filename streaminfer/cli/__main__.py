"""`python -m streaminfer.cli`: the same as the `streaminfer` command."""

import sys

from streaminfer.cli.main import main

sys.exit(main())
