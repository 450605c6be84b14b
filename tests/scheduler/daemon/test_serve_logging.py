"""The daemon's logging set-up: no statistics line per recipient unless asked for."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from scheduler.daemon.serve import setup_logging


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    stats = logging.getLogger("scheduler.stats")
    saved = (root.level, list(root.handlers), stats.level)
    yield
    root.setLevel(saved[0])
    root.handlers[:] = saved[1]
    stats.setLevel(saved[2])


def test_statistics_are_off_at_the_default_level() -> None:
    setup_logging(logging.INFO, use_syslog=False)
    assert logging.getLogger("scheduler").isEnabledFor(logging.INFO)
    assert not logging.getLogger("scheduler.stats").isEnabledFor(logging.INFO)


def test_statistics_on_request() -> None:
    setup_logging(logging.INFO, use_syslog=False, stats=True)
    assert logging.getLogger("scheduler.stats").isEnabledFor(logging.INFO)


def test_statistics_follow_debug() -> None:
    setup_logging(logging.DEBUG, use_syslog=False)
    assert logging.getLogger("scheduler.stats").isEnabledFor(logging.INFO)
