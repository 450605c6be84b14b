"""The MAILQ v2 challenge and authenticator.

The authenticator is the lowercase hex MD5 of the whole challenge line (without its LF,
including the ``220 `` prefix) followed by the password (MQ2-REF 6). MD5 is mandated by
the protocol; this is the one place it is computed.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

__all__ = ["CHALLENGE_PREFIX", "authenticator", "new_challenge", "verify"]

CHALLENGE_PREFIX = "220 MAILQ-V2-CHALLENGE: "


def new_challenge(counter: int, now: float | None = None) -> str:
    """A challenge line (without LF): ZMailer's ``sec.usec.n`` plus 128 random bits.

    The token has no whitespace, so old clients that hash the whole line still work.
    """
    t = time.time() if now is None else now
    sec = int(t)
    usec = int((t - sec) * 1_000_000)
    return f"{CHALLENGE_PREFIX}{sec}.{usec}.{counter}.{secrets.token_hex(16)}"


def authenticator(challenge: str, password: str) -> str:
    """``md5(challenge + password)`` as lowercase hex, as clients send it after AUTH."""
    digest = hashlib.md5((challenge + password).encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def verify(challenge: str, password: str, presented: str) -> bool:
    """Constant-time check of a presented authenticator (either hex case accepted)."""
    expected = authenticator(challenge, password)
    given = presented.strip().lower()
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace"))
