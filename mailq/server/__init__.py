"""The MAILQ v2 server: the asyncio shell, the service that runs commands against the
scheduler's views, the report generators, listeners and ``scheduler.auth``."""
