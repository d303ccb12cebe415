"""The `streaminfer` command line: main.py holds the app and its top-level commands, one module per command group beside it."""
