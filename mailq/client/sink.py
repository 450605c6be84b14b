"""Where the ``mailq`` command's text and JSON objects go (stdout, stderr)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import click

from mailq.client.output import json_line

__all__ = ["Sink"]


@dataclass
class Sink:
    """Where text and JSON objects go; bytes are written as received (surrogateescape)."""

    argv0: str
    as_json: bool = False
    section_label: str = ""

    def out(self, text: str) -> None:
        click.echo(text.encode("utf-8", "surrogateescape"), nl=False)

    def err(self, text: str) -> None:
        click.echo(text.encode("utf-8", "surrogateescape"), nl=False, err=True)

    def obj(self, obj: dict[str, Any]) -> None:
        self.out(json_line(obj))

    def error(
        self, kind: str, message: str, code: int, *, stdout: bool = False
    ) -> None:
        """A failure: ZMailer's text (stdout or stderr), plus a JSON object in JSON mode."""
        if self.as_json:
            self.obj(
                {
                    "type": "error",
                    "server": self.section_label,
                    "error": kind,
                    "message": message,
                    "exit_code": code,
                }
            )
            self.err(message + "\n")
        elif stdout:
            self.out(message + "\n")
        else:
            self.err(message + "\n")
