"""MAILQ v2: the ZMailer scheduler query protocol, its server and its ``mailq`` client."""

import logging

__version__ = "0.1.0"
__all__ = ["__version__"]

logging.getLogger(__name__).addHandler(logging.NullHandler())
