"""A small, strict, sans-IO HTTP/1.1 request reader for the monitor endpoints.

Only what a Prometheus scraper, a load balancer's health check or ``curl`` sends is
accepted: one request per connection (the answer always says ``Connection: close``), a
request line ``METHOD SP /path[?query] SP HTTP/1.x`` ending in CRLF, header fields
``name: value`` ending in CRLF, an empty line, and no body. Anything else is a
:class:`HttpError` carrying the status to answer (400, 413, 431, 501, 505); the reader
never raises anything else, whatever bytes it is fed (tests/mailq/server/test_http.py
fuzzes it). :func:`route` maps a request to a :class:`Response` (``GET``/``HEAD`` on a
known path; 405 with ``Allow`` for another method; 404 for another path), and
:meth:`Response.to_bytes` serialises it. The asyncio shell is
:mod:`mailq.server.httpshell`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

__all__ = [
    "MAX_HEAD",
    "HttpError",
    "Request",
    "RequestReader",
    "Response",
    "route",
]

MAX_HEAD: Final = 8192
"""Longest request head (request line + header fields) in bytes."""
MAX_FIELDS: Final = 64

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TARGET = re.compile(rb"/[\x21-\x7e]*")
_VERSION = re.compile(rb"HTTP/(\d)\.(\d)")
_FIELD_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")

REASONS: Final = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}


class HttpError(Exception):
    """The peer sent something we do not serve: answer ``status`` and close."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    target: str
    version: tuple[int, int]
    headers: tuple[tuple[str, str], ...]

    @property
    def path(self) -> str:
        """The target without its query string."""
        return self.target.partition("?")[0]


class RequestReader:
    """Feed bytes with :meth:`receive_data`; :meth:`next_request` returns the request
    once its head is complete, None while more data is needed, or raises
    :class:`HttpError`. After one request the reader is done (one per connection)."""

    def __init__(self, max_head: int = MAX_HEAD) -> None:
        self._buf = bytearray()
        self._max = max_head
        self._done = False

    def receive_data(self, data: bytes) -> None:
        if not self._done:
            self._buf += data[: self._max + 4]

    def next_request(self) -> Request | None:
        if self._done:
            return None
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buf) > self._max:
                self._done = True
                raise HttpError(431, "request head too long")
            if self._buf.startswith(
                b"\r\n"
            ):  # RFC 9112 2.2 allows one before; we don't
                self._done = True
                raise HttpError(400, "empty line before the request")
            return None
        self._done = True
        if end + 4 > self._max:
            raise HttpError(431, "request head too long")
        head = bytes(self._buf[:end])
        return _parse_head(head)


def _parse_head(head: bytes) -> Request:
    lines = head.split(b"\r\n")
    if any(b"\n" in line or b"\r" in line for line in lines):
        raise HttpError(400, "bare CR or LF in the request head")
    method, target, version = _request_line(lines[0])
    headers = tuple(_field(line) for line in lines[1:])
    if len(headers) > MAX_FIELDS:
        raise HttpError(431, "too many header fields")
    names = [name for name, _ in headers]
    if version >= (1, 1) and names.count("host") != 1:
        raise HttpError(400, "HTTP/1.1 needs exactly one Host field")
    if "transfer-encoding" in names:
        raise HttpError(501, "no request bodies here")
    for name, value in headers:
        if name == "content-length" and value.strip() not in ("", "0"):
            raise HttpError(413, "no request bodies here")
    return Request(method, target, version, headers)


def _request_line(line: bytes) -> tuple[str, str, tuple[int, int]]:
    parts = line.split(b" ")
    if len(parts) != 3:
        raise HttpError(400, "malformed request line")
    method, target, version = parts
    if not _TOKEN.fullmatch(method):
        raise HttpError(400, "malformed method")
    if not _TARGET.fullmatch(target):
        raise HttpError(400, "malformed request target")
    m = _VERSION.fullmatch(version)
    if m is None:
        raise HttpError(400, "malformed HTTP version")
    if m.group(1) != b"1":
        raise HttpError(505, "only HTTP/1.x")
    return method.decode("ascii"), target.decode("ascii"), (1, int(m.group(2)))


def _field(line: bytes) -> tuple[str, str]:
    name, colon, value = line.partition(b":")
    if not colon or not _TOKEN.fullmatch(name):
        raise HttpError(400, "malformed header field")  # also obs-fold and "name :"
    value = value.strip(b" \t")
    if not _FIELD_VALUE.fullmatch(value):
        raise HttpError(400, "malformed header field value")
    return name.decode("ascii").lower(), value.decode("latin-1")


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    def to_bytes(self, head_only: bool = False) -> bytes:
        reason = REASONS.get(self.status, "Unknown")
        lines = [
            f"HTTP/1.1 {self.status} {reason}",
            f"Content-Type: {self.content_type}",
            f"Content-Length: {len(self.body)}",
            "Cache-Control: no-store",
            "Connection: close",
            *(f"{k}: {v}" for k, v in self.headers),
        ]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head if head_only else head + self.body


def error_response(error: HttpError) -> Response:
    return Response(error.status, f"{error.status} {error.reason}\n".encode())


Handler = Callable[[Request], Response]


def route(request: Request, routes: Mapping[str, Handler]) -> Response:
    """``GET``/``HEAD`` on a path of ``routes`` runs its handler; else 405 or 404."""
    handler = routes.get(request.path)
    if handler is None:
        return Response(404, b"404 not found\n")
    if request.method not in ("GET", "HEAD"):
        return Response(
            405, b"405 method not allowed\n", headers=(("Allow", "GET, HEAD"),)
        )
    return handler(request)
