"""MAILQ v2 sans I/O: the server connection and its states, command parsing, replies,
dot-stuffed line framing, the AUTH authenticator and the package's errors."""
