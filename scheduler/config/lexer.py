"""The scheduler.conf lexer (SCHED-REF 1.2).  Pure: no I/O.

The file is a stream of tokens.  A token that starts in column 0 is a selector (or a
``PARAM`` line); every other token is a clause parameter, ``keyword`` or
``keyword=value``.  Values are ``"quoted"`` (a backslash at the end of the line joins
the next line) or run up to the next blank, ``#`` included.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from scheduler.errors import ConfigProblem

__all__ = ["Kind", "Token", "tokenize"]

_BLANKS = " \t"


class Kind(Enum):
    SELECTOR = "selector"
    PARAM = "param"  # a column-0 PARAM<name> = value line
    KEYWORD = "keyword"  # an indented clause parameter


@dataclass(frozen=True, slots=True)
class Token:
    kind: Kind
    name: str  # selector text, PARAM name (without "PARAM"), or keyword as written
    value: str | None  # None: no "=" was written
    line: int
    quoted: bool = False


class _Lexer:
    def __init__(self, text: str, source: str) -> None:
        self.lines = [ln.removesuffix("\r") for ln in text.split("\n")]
        if self.lines and self.lines[-1] == "":
            self.lines.pop()
        self.source = source
        self.tokens: list[Token] = []
        self.problems: list[ConfigProblem] = []
        self.n = 0  # index of the current physical line
        self.line = ""
        self.pos = 0

    def error(self, line_no: int, message: str) -> None:
        self.problems.append(ConfigProblem(self.source, line_no, message))

    def run(self) -> None:
        while self.n < len(self.lines):
            self.line = self.lines[self.n]
            self.pos = 0
            self.logical_line()
            self.n += 1

    def logical_line(self) -> None:
        line = self.line
        if line and line[0] not in _BLANKS and line[0] != "#":
            if line[:5].lower() == "param":
                if not self.param_line():
                    return
            else:
                end = _find_any(line, _BLANKS, 0)
                self.tokens.append(Token(Kind.SELECTOR, line[:end], None, self.n + 1))
                self.pos = end
        self.parameters()

    def param_line(self) -> bool:
        line_no = self.n + 1
        end = _find_any(self.line, _BLANKS + "=#", 0)
        name = self.line[5:end]
        self.pos = end
        self.skip_blanks()
        if not name:
            self.error(line_no, "illegal syntax (PARAM needs a name right after PARAM)")
            return False
        if not self.peek("="):
            self.error(line_no, f"illegal syntax (PARAM{name} without '= value')")
            return False
        value, quoted = self.read_value()
        if value is None:
            return False
        if value == "" and not quoted:
            self.error(line_no, f"illegal syntax (PARAM{name} without a value)")
            return False
        self.tokens.append(Token(Kind.PARAM, name, value, line_no, quoted))
        return True

    def parameters(self) -> None:
        while True:
            self.skip_blanks()
            if self.pos >= len(self.line) or self.line[self.pos] == "#":
                return
            line_no = self.n + 1
            end = _find_any(self.line, _BLANKS + "=#", self.pos)
            keyword = self.line[self.pos : end]
            self.pos = end
            self.skip_blanks()
            value: str | None = None
            quoted = False
            if self.peek("="):
                value, quoted = self.read_value()
                if value is None:
                    return
            if not keyword:
                self.error(line_no, "illegal syntax (a value without a keyword)")
                continue
            self.tokens.append(Token(Kind.KEYWORD, keyword, value, line_no, quoted))

    def peek(self, char: str) -> bool:
        return self.pos < len(self.line) and self.line[self.pos] == char

    def skip_blanks(self) -> None:
        while self.pos < len(self.line) and self.line[self.pos] in _BLANKS:
            self.pos += 1

    def read_value(self) -> tuple[str | None, bool]:
        """At ``=``: read the value.  (None, _) after an error (rest of line dropped)."""
        self.pos += 1
        self.skip_blanks()
        if not self.peek('"'):
            end = _find_any(self.line, _BLANKS, self.pos)
            value = self.line[self.pos : end]
            self.pos = end
            return value, False
        return self.read_quoted(), True

    def read_quoted(self) -> str | None:
        start_line = self.line
        start = self.pos + 1
        parts: list[str] = []
        while True:
            close = self.line.find('"', start)
            if close >= 0:
                parts.append(self.line[start:close])
                self.pos = close + 1
                return "".join(parts)
            if not self.line.endswith("\\"):
                self.error(self.n + 1, f"missing end-quote in: {start_line}")
                self.pos = len(self.line)
                return None
            parts.append(self.line[start:-1])
            if self.n + 1 >= len(self.lines):
                self.error(self.n + 1, "bad continuation line (end of file)")
                self.pos = len(self.line)
                return None
            self.n += 1
            self.line = self.lines[self.n]
            start = 0


def _find_any(text: str, chars: str, start: int) -> int:
    for i in range(start, len(text)):
        if text[i] in chars:
            return i
    return len(text)


def tokenize(
    text: str, source: str = "<string>"
) -> tuple[list[Token], list[ConfigProblem]]:
    """Split scheduler.conf text into tokens; lexical errors are returned, not raised."""
    lexer = _Lexer(text, source)
    lexer.run()
    return lexer.tokens, lexer.problems
