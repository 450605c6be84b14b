"""The MAILQ v2 client: the sans-I/O client connection, the library, the ``mailq``
command with its options, modes and renderers, and what it reads from the local spool."""
