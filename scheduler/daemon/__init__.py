"""The asyncio shell: the runner, agents as processes, load workers, the notify socket,
signals, the pid file and the ``mailq-scheduler`` command; the one place that wires the
scheduler core to the MAILQ v2 server."""
