"""``python -m bambo.cli``: the command line."""

from bambo.cli import app

app()
