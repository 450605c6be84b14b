"""``python -m spool``: the ``mailq-spool`` command."""

from spool.cli import main

main()
