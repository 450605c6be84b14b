"""``python -m spool``: the ``mailq-spool`` command."""

from .cli import main

main()
