"""``python -m mailq``: the ``mailq`` command."""

from mailq.client.cli import main

if __name__ == "__main__":
    main(prog_name="mailq")
