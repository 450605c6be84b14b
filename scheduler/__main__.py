"""``python -m scheduler``: the ``mailq-scheduler`` command."""

from scheduler.daemon.cli import main

if __name__ == "__main__":
    main(prog_name="mailq-scheduler")
