"""Attacks on the HTTP side of a running `callgate serve` (issue 12 items 3, 9 and 14): huge
bodies, echoed input, half-sent requests, oversized heads, unauthenticated metrics, a CSP open
to any host, an oversized device label."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from tests.integration.serve_fixture import WebServer, serve
from tests.integration.test_cli import free_port

pytestmark = pytest.mark.timeout(120)
HEADER_TIMEOUT_S = 2


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    metrics_port = free_port()
    yield from serve(
        tmp_path_factory.mktemp("http"),
        "--metrics", f"127.0.0.1:{metrics_port}",
        CALLGATE_LIMITS__HTTP_HEADER_TIMEOUT_S=str(HEADER_TIMEOUT_S),
        metrics_url=f"http://127.0.0.1:{metrics_port}/metrics",
    )  # fmt: skip


def address(server: WebServer) -> tuple[str, int]:
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


# ---- item 3: body caps, no echo ----


def test_a_10_mb_login_body_is_refused_before_it_is_read(server: WebServer) -> None:
    body = b'{"handle": "alice", "password": "' + b"A" * 10_000_000 + b'"}'
    with server.client() as client:
        answer = client.post("/api/login", content=body,
                             headers={"content-type": "application/json"})  # fmt: skip
    assert answer.status_code == 413
    assert answer.json() == {
        "detail": "the request body is over 4096 bytes (the limit of this endpoint)"
    }


def test_a_chunked_body_is_cut_off_at_the_cap(server: WebServer) -> None:
    headers = {
        "Authorization": f"Bearer {server.token('admin')}",
        "content-type": "application/json",
    }

    def chunks() -> Iterator[bytes]:
        yield b'{"handle": "zed", "password": "'
        for _ in range(200):
            yield b"B" * 1000  # 200 KB, no Content-Length
        yield b'"}'

    with server.client() as client:
        answer = client.post("/api/users", content=chunks(), headers=headers)
    assert answer.status_code == 413
    assert "over 65536 bytes" in answer.json()["detail"]


def test_a_422_names_the_field_and_never_echoes_what_was_sent(server: WebServer) -> None:
    secret = "hunter2-but-longer"
    with server.client() as client:
        answer = client.post(
            "/api/login", json={"handle": "h" * 500, "password": secret, "extra": secret}
        )
    assert answer.status_code == 422
    detail = answer.json()["detail"]
    assert {tuple(e["loc"]) for e in detail} == {("body", "handle"), ("body", "extra")}
    assert all(set(e) == {"loc", "msg", "type"} for e in detail)
    assert secret not in answer.text and "hhhh" not in answer.text
    assert len(answer.content) < 1000


# ---- item 9: half-sent requests, oversized heads ----


async def test_half_sent_requests_are_closed_after_the_header_timeout(server: WebServer) -> None:
    async def half_sent() -> bytes:
        reader, writer = await asyncio.open_connection(*address(server))
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: 1")  # never finished
        await writer.drain()
        try:
            return await asyncio.wait_for(reader.read(), 60)  # b"" once the server closes
        finally:
            writer.close()

    async def silent() -> bytes:
        reader, writer = await asyncio.open_connection(*address(server))
        try:
            return await asyncio.wait_for(reader.read(), 60)
        finally:
            writer.close()

    closed = await asyncio.gather(*(half_sent() for _ in range(10)), silent())
    assert all(data == b"" for data in closed)  # closed by the server, nothing answered


def test_a_slow_but_complete_request_is_still_served(server: WebServer) -> None:
    with socket.create_connection(address(server), timeout=30) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        time.sleep(HEADER_TIMEOUT_S / 10)  # split in time; 1.8 s to spare for a loaded machine
        sock.sendall(b"Host: x\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200")


def raw_answer(server: WebServer, request: bytes) -> bytes:
    """What the server answers to `request` before it closes; a reset (the server closed while
    we were still sending) counts as an empty answer."""
    answer = b""
    with socket.create_connection(address(server), timeout=30) as sock:
        try:
            sock.sendall(request)
            while chunk := sock.recv(65536):
                answer += chunk
        except (ConnectionResetError, BrokenPipeError):
            pass
    return answer


def test_a_100_kb_head_is_refused(server: WebServer) -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n"
    answer = raw_answer(server, request)
    assert answer == b"" or answer.startswith((b"HTTP/1.1 400", b"HTTP/1.1 431")), answer[:200]


def test_5000_header_fields_are_refused(server: WebServer) -> None:
    head = "".join(f"X-H{i}: 1\r\n" for i in range(5000)).encode()
    answer = raw_answer(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + head + b"\r\n")
    assert answer == b"" or answer.startswith((b"HTTP/1.1 400", b"HTTP/1.1 431")), answer[:200]


def test_150_header_fields_within_the_size_are_refused_with_431(server: WebServer) -> None:
    headers = {f"X-H{i}": "1" for i in range(150)}
    with server.client() as client:
        answer = client.get("/healthz", headers=headers)
    assert answer.status_code == 431 and "more than 100 header fields" in answer.text


# ---- item 14: metrics, CSP, device label ----


def test_metrics_are_not_on_the_public_http_port(server: WebServer) -> None:
    with server.client() as client:
        assert client.get("/metrics").status_code == 404
    assert server.metrics_url is not None
    assert "callgate_turn_allocations_active" in httpx.get(server.metrics_url, timeout=10).text


def test_csp_connects_only_to_this_origin(server: WebServer) -> None:
    with server.client() as client:
        csp = client.get("/").headers["content-security-policy"]
    host = server.url.removeprefix("http://")
    connect = next(d for d in csp.split(";") if d.strip().startswith("connect-src"))
    assert connect.split() == ["connect-src", "'self'", f"ws://{host}", f"wss://{host}"]


async def test_a_5000_character_device_label_is_refused(server: WebServer) -> None:
    token = await asyncio.to_thread(server.token, "alice")
    url = server.url.replace("http://", "ws://") + f"/ws?token={token}&device={'d' * 5000}"
    async with ws_connect(url) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 20)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4400
    url = server.url.replace("http://", "ws://") + f"/ws?token={token}&device=laptop"
    async with ws_connect(url) as ws:
        assert json.loads(await asyncio.wait_for(ws.recv(), 20))["type"] == "hello"
