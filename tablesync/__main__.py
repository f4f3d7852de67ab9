"""``python -m tablesync`` runs the CLI."""

from tablesync.cli import app

app()
