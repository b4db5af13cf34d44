"""Which of the server's STUN/TURN URLs this network can reach, for an ICE agent that uses one.

aiortc 1.16 takes only the first `stun:` and the first `turn:`/`turns:` URL of its configuration
(`aiortc.rtcicetransport.connection_kwargs`). `hello` lists TURN over UDP first; behind a
firewall that drops UDP and lets only TCP 443 out — the usual corporate network — the client
would gather no relayed candidate and the call would fail with `setup-failed`, although the
server offered `turn:…:443?transport=tcp`. (It also waited 5 s for a srflx candidate from an
unreachable STUN server.) A browser's agent tries every URL; this module gets the same result
before each call: one STUN Binding request (RFC 8489 §6, no authentication; our relay answers it
on every listener) over each URL at once, then `reachable_hello()` puts the first TURN URL that
answered in front and drops STUN URLs that did not. When no TURN URL answers, the TURN list is
left as it was (the agent tries anyway, and the server's setup watchdog reports the failure).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiortc.rtcicetransport import parse_stun_turn_uri

from callgate.stun.attributes import unpack_xor_address
from callgate.stun.constants import HEADER_LENGTH, Attr, MessageClass, Method
from callgate.stun.message import (
    StunDecodeError,
    build,
    decode,
    encode,
    new_transaction_id,
)
from callgate.types import Address

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 1.0  # seconds for one URL to answer
UDP_SENDS = (0.0, 0.25, 0.5)  # when the UDP request is (re)sent, s after the start


@dataclass(frozen=True, slots=True)
class IceUrl:
    text: str
    scheme: str  # stun, turn, turns
    host: str
    port: int
    transport: str  # udp, tcp


def parse_url(text: str) -> IceUrl:
    """A `stun:`/`turn:`/`turns:` URL (RFC 7064, RFC 7065); ValueError when malformed."""
    parsed: dict[str, Any] = parse_stun_turn_uri(text)
    scheme = str(parsed["scheme"])
    transport = parsed.get("transport") or ("tcp" if scheme in ("stuns", "turns") else "udp")
    return IceUrl(text, scheme, str(parsed["host"]), int(parsed["port"]), str(transport))


def _request() -> tuple[bytes, bytes]:
    transaction_id = new_transaction_id()
    return transaction_id, encode(build(Method.BINDING, MessageClass.REQUEST, transaction_id))


def _mapped(data: bytes, transaction_id: bytes) -> Address | None:
    """The XOR-MAPPED-ADDRESS of a success response to our request, else None."""
    try:
        message = decode(data)
    except StunDecodeError:
        return None
    if message.transaction_id != transaction_id or message.cls != MessageClass.SUCCESS:
        return None
    value = message.get(Attr.XOR_MAPPED_ADDRESS)
    try:
        return None if value is None else unpack_xor_address(value, transaction_id)
    except StunDecodeError:
        return None


class _BindingProtocol(asyncio.DatagramProtocol):
    def __init__(self, transaction_id: bytes) -> None:
        self.transaction_id = transaction_id
        self.answer: asyncio.Future[Address] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        mapped = _mapped(data, self.transaction_id)
        if mapped is not None and not self.answer.done():
            self.answer.set_result(mapped)

    def error_received(self, exc: Exception) -> None:
        if not self.answer.done():
            self.answer.set_exception(exc)


async def _udp_binding(url: IceUrl) -> Address:
    transaction_id, request = _request()
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: _BindingProtocol(transaction_id), remote_addr=(url.host, url.port)
    )
    try:
        previous = 0.0
        for at in UDP_SENDS:
            await asyncio.wait([protocol.answer], timeout=at - previous)
            if protocol.answer.done():
                break
            transport.sendto(request)
            previous = at
        return await protocol.answer
    finally:
        transport.close()


async def _stream_binding(url: IceUrl) -> Address:
    transaction_id, request = _request()
    context = ssl.create_default_context() if url.scheme in ("turns", "stuns") else None
    reader, writer = await asyncio.open_connection(url.host, url.port, ssl=context)
    try:
        writer.write(request)
        header = await reader.readexactly(HEADER_LENGTH)
        body = await reader.readexactly(int.from_bytes(header[2:4], "big"))
        mapped = _mapped(header + body, transaction_id)
        if mapped is None:
            raise ConnectionError(f"{url.text}: not a Binding success response")
        return mapped
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()


async def binding(url: IceUrl, within: float = PROBE_TIMEOUT) -> Address:
    """Our address as the STUN server at `url` sees it (server-reflexive); TimeoutError or
    OSError when the server cannot be reached over that URL's transport."""
    run = _udp_binding(url) if url.transport == "udp" else _stream_binding(url)
    return await asyncio.wait_for(run, within)


async def _answers(url: IceUrl, within: float) -> bool:
    try:
        await binding(url, within)
    except (TimeoutError, OSError, asyncio.IncompleteReadError):
        return False
    return True


async def reachable_hello(
    hello: Mapping[str, Any], within: float = PROBE_TIMEOUT
) -> dict[str, Any]:
    """A copy of `hello` whose `ice_servers` start with the first TURN URL that answers and keep
    only the STUN URLs that answer; all URLs are probed at once, within `within` s in all."""
    servers = [
        dict(entry) for entry in hello.get("ice_servers") or [] if isinstance(entry, Mapping)
    ]
    urls: list[tuple[int, IceUrl]] = []
    for index, entry in enumerate(servers):
        listed = entry.get("urls")
        for text in [listed] if isinstance(listed, str) else list(listed or []):
            with contextlib.suppress(ValueError, KeyError, TypeError):
                urls.append((index, parse_url(str(text))))
    probes = {url.text: asyncio.create_task(_answers(url, within)) for _, url in urls}
    try:
        turn = [(i, u) for i, u in urls if u.scheme in ("turn", "turns")]
        chosen: tuple[int, IceUrl] | None = None
        for index, url in turn:  # in the server's order of preference
            if await probes[url.text]:
                chosen = (index, url)
                break
        stun_dead = set()
        for _, url in urls:
            if url.scheme == "stun" and not await probes[url.text]:
                stun_dead.add(url.text)
    finally:
        for task in probes.values():
            task.cancel()
    if chosen is not None and turn and chosen[1] != turn[0][1]:
        log.info("TURN: %s unreachable from here; using %s", turn[0][1].text, chosen[1].text)
    return {**hello, "ice_servers": _reordered(servers, chosen, stun_dead)}


def _reordered(
    servers: list[dict[str, Any]], chosen: tuple[int, IceUrl] | None, stun_dead: set[str]
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for index, entry in enumerate(servers):
        listed = entry.get("urls")
        texts = [listed] if isinstance(listed, str) else [str(t) for t in listed or []]
        texts = [t for t in texts if t not in stun_dead]
        if chosen is not None and index == chosen[0]:
            texts = [chosen[1].text, *(t for t in texts if t != chosen[1].text)]
        if texts:
            out.append({**entry, "urls": texts})
    if chosen is not None:  # the entry holding the chosen URL goes before other TURN entries
        holder = next(e for e in out if chosen[1].text in e["urls"])
        out.remove(holder)
        first_turn = next((n for n, e in enumerate(out) if _has_turn(e)), len(out))
        out.insert(first_turn, holder)
    return out


def _has_turn(entry: Mapping[str, Any]) -> bool:
    return any(str(t).startswith("turn") for t in entry["urls"])
