"""A ZMailer-compatible delivery scheduler: threads, agenda, transport agents."""

import logging

__all__: list[str] = []

logging.getLogger(__name__).addHandler(logging.NullHandler())
