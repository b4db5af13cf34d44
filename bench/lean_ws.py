"""A lean WebSocket client for the signaling benchmarks' load generator (`--lean-client`).

The load generator shares the box's two cores with the servers it measures, so its own CPU per
call attempt lowers what the box can show. `websockets`' asyncio client (signaling_load.py's
`Peer`) costs ≈ 0.3 ms of CPU per attempt (3 messages sent, 8 received); this one speaks the same
protocol with less machinery: an `asyncio.Protocol` that does the RFC 6455 opening handshake
(§4.1, the server's Sec-WebSocket-Accept checked), sends each message as one masked text frame
(§5.3: a client must mask) and parses the server's unmasked frames in `data_received` (§5.2),
answering pings (§5.5.2). The server does exactly the same work for it as for any client: same
handshake, same frames, same messages. No extensions, no fragmented messages (the server sends
none): anything else is a protocol error here, not a silent skip.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
from collections import deque
from typing import Any
from urllib.parse import urlsplit

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3


class LeanSocket(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.handshake: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.buffer = b""
        self.upgraded = False
        self.messages: deque[str] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self.closed: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.upgraded:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head, self.buffer = self.buffer[: end + 4], self.buffer[end + 4 :]
            self.upgraded = True
            self.handshake.set_result(head)
        self._frames()

    def _frames(self) -> None:
        buffer, offset, size = self.buffer, 0, len(self.buffer)
        while size - offset >= 2:
            first, second = buffer[offset], buffer[offset + 1]
            length, at = second & 0x7F, offset + 2
            if second & 0x80:
                self._fail("the server masked a frame (RFC 6455 §5.1)")
                return
            if length == 126:
                if size - at < 2:
                    break
                length, at = int.from_bytes(buffer[at : at + 2], "big"), at + 2
            elif length == 127:
                if size - at < 8:
                    break
                length, at = int.from_bytes(buffer[at : at + 8], "big"), at + 8
            if size - at < length:
                break
            payload, offset = buffer[at : at + length], at + length
            opcode = first & 0x0F
            if opcode == 1 and first & 0x80:
                self.messages.append(payload.decode())
            elif opcode == 9:  # ping: pong with its payload
                self._send_frame(0x8A, payload)
            elif opcode == 8:
                self._fail("closed by the server")
                return
            elif opcode != 10:
                self._fail(f"unexpected frame {first:#04x} (no fragments, no binary here)")
                return
        self.buffer = buffer[offset:]
        if self.messages and self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def _fail(self, why: str) -> None:
        self.closed = ConnectionError(why)
        if self.transport is not None:
            self.transport.close()
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed is None:
            self.closed = exc or ConnectionError("connection closed")
        if not self.handshake.done():
            self.handshake.set_exception(self.closed)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def _send_frame(self, first: int, payload: bytes) -> None:
        n = len(payload)
        if n < 126:
            head = bytes((first, 0x80 | n))
        elif n < 65536:
            head = bytes((first, 0x80 | 126)) + n.to_bytes(2, "big")
        else:
            head = bytes((first, 0x80 | 127)) + n.to_bytes(8, "big")
        mask = os.urandom(4)
        stream = (mask * (n // 4 + 1))[:n]
        masked = (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big")
        assert self.transport is not None
        self.transport.write(head + mask + masked)

    async def send(self, text: str) -> None:
        if self.closed is not None:
            raise self.closed
        self._send_frame(0x81, text.encode())

    async def recv(self) -> str:
        while not self.messages:
            if self.closed is not None:
                raise self.closed
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
        return self.messages.popleft()

    async def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self._send_frame(0x88, (1000).to_bytes(2, "big"))
            self.transport.close()


async def lean_connect(url: str, open_timeout: float = 10.0) -> LeanSocket:
    """Open `ws://HOST:PORT/PATH?QUERY` (RFC 6455 §4.1), the server's answer checked."""
    parts = urlsplit(url)
    assert parts.scheme == "ws" and parts.hostname and parts.port, url
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(open_timeout):
        _, sock = await loop.create_connection(LeanSocket, parts.hostname, parts.port)
        key = base64.b64encode(os.urandom(16))
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        sock.transport.write(  # type: ignore[union-attr]
            f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key.decode()}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = (await sock.handshake).decode("latin-1").split("\r\n")
    accept = base64.b64encode(hashlib.sha1(key + GUID).digest()).decode()
    fields = {
        k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:])
    }
    if " 101 " not in head[0] + " " or fields.get("sec-websocket-accept") != accept:
        raise ConnectionError(f"handshake refused: {head[0]}")
    return sock


class LeanPeer:
    """signaling_load.py's `Peer` on a `LeanSocket`: same messages, same checks."""

    def __init__(self, ws: LeanSocket) -> None:
        self.ws = ws
        self.ids = 0

    async def send(self, type: str, **fields: Any) -> None:
        self.ids += 1
        await self.ws.send(json.dumps({"type": type, "id": f"m{self.ids}", **fields}))

    async def until(self, wanted: str, stats: Any, timeout: float = 10.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                message = json.loads(await self.ws.recv())
                kind = message["type"]
                if kind == wanted:
                    return message
                if kind == "error":
                    stats.error(f"error {message.get('code')}: {message.get('message')}")
                elif kind == "call.ended" and wanted != "call.ended":
                    stats.error(f"call.ended {message.get('reason')} while waiting for {wanted}")
                    raise RuntimeError("ended early")


async def open_lean_peer(url: str, token: str, device: str, open_timeout: float = 10.0) -> LeanPeer:
    ws_url = url.replace("http://", "ws://") + f"/ws?token={token}&device={device}"
    ws = await lean_connect(ws_url, open_timeout)
    hello = json.loads(await ws.recv())
    assert hello["type"] == "hello", hello
    return LeanPeer(ws)
