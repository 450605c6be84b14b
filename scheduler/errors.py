"""Exceptions of the scheduler package: one root, with structured fields."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ConfigError", "ConfigProblem", "SchedulerError"]


class SchedulerError(Exception):
    """Root of every error raised by the scheduler package."""


@dataclass(frozen=True)
class ConfigProblem:
    """One problem (error or warning) found in a configuration file."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


class ConfigError(SchedulerError):
    """A configuration file is invalid; ``problems`` lists every error found, in order."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))
