"""The sans-IO HTTP/1.1 request reader: whole, byte by byte, with trailing data, and
fuzzed (arbitrary bytes never raise anything but HttpError)."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from mailq.server.http import (
    MAX_HEAD,
    HttpError,
    Request,
    RequestReader,
    Response,
    route,
)

GOOD = b"GET /metrics?x=1 HTTP/1.1\r\nHost: localhost:9174\r\nAccept: */*\r\n\r\n"


def read_all(data: bytes, chunk: int | None = None) -> Request | None:
    reader = RequestReader()
    if chunk is None:
        reader.receive_data(data)
        return reader.next_request()
    for i in range(0, len(data), chunk):
        reader.receive_data(data[i : i + chunk])
        request = reader.next_request()
        if request is not None:
            return request
    return None


@pytest.mark.parametrize("chunk", [None, 1, 7])
def test_good_request_whole_and_in_pieces(chunk: int | None) -> None:
    request = read_all(GOOD + b"trailing junk", chunk)
    assert request == Request(
        "GET",
        "/metrics?x=1",
        (1, 1),
        (("host", "localhost:9174"), ("accept", "*/*")),
    )
    assert request.path == "/metrics"


def test_http10_needs_no_host() -> None:
    request = read_all(b"HEAD /ready HTTP/1.0\r\n\r\n")
    assert request is not None
    assert request.method == "HEAD"


def test_incomplete_needs_more() -> None:
    assert read_all(GOOD[:-2]) is None


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"GET /metrics HTTP/1.1\r\n\r\n", 400),  # no Host
        (b"GET /m HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (b"GET /m HTTP/2.0\r\nHost: a\r\n\r\n", 505),
        (b"GET http://x/m HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (b"GET  /m HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (b"GET /m HTTP/1.1\r\nHost : a\r\n\r\n", 400),
        (b"GET /m HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", 400),
        (b"GET /m HTTP/1.1\nHost: a\r\n\r\n", 400),
        (b"GET /m HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello", 413),
        (b"GET /m HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
        (b"\r\nGET /m HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (b"GET /m HTTP/1.0\r\n" + b"X: y\r\n" * 100 + b"\r\n", 431),
        (b"GET /" + b"a" * MAX_HEAD + b" HTTP/1.0\r\n\r\n", 431),
    ],
)
def test_bad_requests(data: bytes, status: int) -> None:
    with pytest.raises(HttpError) as info:
        read_all(data)
    assert info.value.status == status


def test_only_one_request() -> None:
    reader = RequestReader()
    reader.receive_data(GOOD + GOOD)
    assert reader.next_request() is not None
    assert reader.next_request() is None


@given(st.binary(max_size=300), st.integers(1, 64))
def test_fuzz_never_raises_anything_else(data: bytes, chunk: int) -> None:
    status = 0
    try:
        read_all(data, chunk)
    except HttpError as exc:
        status = exc.status
    assert status in (0, 400, 413, 431, 501, 505)


_tokens = st.sampled_from(
    [b"GET", b"HEAD", b"POST", b" ", b"/", b"/metrics", b"HTTP/1.1", b"HTTP/1.0",
     b"\r\n", b"\n", b":", b"Host", b"Host: x", b"\t", b"\x00", b"\xff", b"?"]
)  # fmt: skip


@given(st.lists(_tokens, max_size=30).map(b"".join), st.integers(1, 16))
def test_fuzz_structured(data: bytes, chunk: int) -> None:
    try:
        request = read_all(data + b"\r\n\r\n", chunk)
    except HttpError:
        return
    assert request is not None
    assert request.target.startswith("/")


def test_route_and_response() -> None:
    routes = {"/ok": lambda r: Response(200, b"fine\n")}
    get = Request("GET", "/ok?a", (1, 1), (("host", "x"),))
    assert route(get, routes).status == 200
    assert route(Request("PUT", "/ok", (1, 1), ()), routes).status == 405
    assert route(Request("GET", "/no", (1, 1), ()), routes).status == 404
    data = Response(200, b"fine\n").to_bytes()
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nContent-Length: 5\r\n" in data
    assert data.endswith(b"\r\n\r\nfine\n")
    assert Response(200, b"fine\n").to_bytes(head_only=True).endswith(b"\r\n\r\n")
