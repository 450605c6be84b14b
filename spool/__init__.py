"""The ZMailer postoffice on disk: control files, message files, spool ids."""

import logging

__all__: list[str] = []

logging.getLogger(__name__).addHandler(logging.NullHandler())
