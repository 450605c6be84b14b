"""Command-line parsing as ZMailer's ``mq2.c`` does it (MQ2-REF 5.1), and the rights.

The verb is everything up to the first SPACE or TAB; the following blanks are skipped and
the rest is kept verbatim, trailing blanks included. Sub-commands split their argument
string again the same way.
"""

from __future__ import annotations

import enum
import re

__all__ = ["BLANKS", "Right", "parse_line", "split_word", "token_rights"]

BLANKS = " \t"


class Right(enum.IntFlag):
    """Token bits of scheduler.auth (MQ2-REF 7.2)."""

    NONE = 0
    SNMP = 0x01
    QQ = 0x02
    TT = 0x04
    ETRN = 0x10
    KILL = 0x20
    WATCH = 0x800  # stream delivery events: WATCH (extension, docs/monitoring.md)

    MSGS = 0x100  # read message details: SHOW MSG, SHOW MSGS, addresses (extension)
    CONTROL = (
        0x200  # act on messages: HOLD RELEASE RETRY BOUNCE DELETE UNDO (extension)
    )
    RULES = 0x400  # destination rules: SUSPEND RESUME POLICY (extension)
    ALL = 0x7FFFFFFF


_WORD = re.compile(r"([^ \t]*)[ \t]*(.*)", re.DOTALL)

_TOKENS: dict[str, Right] = {
    "NONE": Right.NONE,
    "SNMP": Right.SNMP,
    "QQ": Right.QQ,
    "TT": Right.TT,
    "ETRN": Right.ETRN,
    "KILL": Right.KILL,
    "WATCH": Right.WATCH,
    "MSGS": Right.MSGS,
    "CONTROL": Right.CONTROL,
    "RULES": Right.RULES,
    "ALL": Right.ALL,
}


def token_rights(tokens: str) -> Right:
    """OR of the known tokens in ``tokens`` (split on any whitespace: A9 fix)."""
    rights = Right.NONE
    for word in tokens.split():
        rights |= _TOKENS.get(word, Right.NONE)
    return rights


def split_word(text: str) -> tuple[str, str]:
    """``(word, rest)``: word up to the first SPACE/TAB, rest after the blanks."""
    m = _WORD.match(text)
    if m is None:  # pragma: no cover - the pattern matches every string
        return text, ""
    return m.group(1), m.group(2)


def parse_line(line: str) -> tuple[str, str]:
    """Split a received line (CR already removed) into ``(verb, rest)``."""
    return split_word(line)
