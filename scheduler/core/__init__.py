"""The scheduler's pure decision core: events in, commands out.

No clock, no files, no processes: the daemon (:mod:`scheduler.daemon.wiring`) owns those and
feeds this core events. Nothing here imports asyncio, subprocess or the file system
helpers of :mod:`spool.store`; ``tests/scheduler/core/test_purity.py`` checks it.
"""
