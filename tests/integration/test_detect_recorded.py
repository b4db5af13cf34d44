"""The detector on traffic recorded here: a real aiortc call through our own relay (found, and
sanctioned once the relay is allow-listed) and plain non-RTC traffic (nothing found)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from callgate.detect import detect
from callgate.types import Transport
from tests.conftest import run_turn_server, server_address
from tests.integration.loopback_recorder import private_loopback_address, record_loopback


@pytest.fixture
def address() -> str:
    return private_loopback_address()


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_call_through_our_relay_is_found_and_sanctioned(
    tmp_path: Path, address: str, transport: str
) -> None:
    from tests.interop.test_aiortc_relay import FRAMES, call  # aiortc: imported only here

    capture = tmp_path / "call.pcap"
    async with run_turn_server(listen=((address, 0),), relay_ip=address) as server:
        relay = server_address(server, Transport.TCP if transport == "tcp" else Transport.UDP)
        with record_loopback(capture, address):
            frames, _ = await call(relay, transport)
    assert frames >= FRAMES

    unlisted = detect([capture])
    assert unlisted.sessions, "the call was not detected"
    assert len([s for s in unlisted.sessions if not s.sanctioned]) >= 1
    protocols = {p for s in unlisted.sessions for p in s.protocols}
    assert {"TURN", "RTP"} <= protocols or {"TURN", "DTLS-SRTP"} <= protocols
    assert any(s.path == "relayed" for s in unlisted.sessions)
    media = [
        s for s in unlisted.sessions if s.peer == address and s.packets_in + s.packets_out >= FRAMES
    ]
    assert media, "no session carried the call's media"

    listed = detect([capture], relays=[f"{relay[0]}:{relay[1]}"])
    assert listed.sessions
    assert all(s.sanctioned for s in listed.sessions), [
        s for s in listed.sessions if not s.sanctioned
    ]
    assert listed.summary()["unsanctioned_sessions"] == 0


async def test_plain_http_and_dns_like_udp_raise_nothing(tmp_path: Path, address: str) -> None:
    capture = tmp_path / "plain.pcap"

    async def http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        body = os.urandom(2000).hex().encode()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()

    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            assert isinstance(self.transport, asyncio.DatagramTransport)
            self.transport.sendto(data[:2] + b"\x81\x80" + data[4:] + os.urandom(40), addr)

    loop = asyncio.get_running_loop()
    server = await asyncio.start_server(http, address, 0)
    web_port = server.sockets[0].getsockname()[1]
    udp, _ = await loop.create_datagram_endpoint(Echo, local_addr=(address, 0))
    udp_port = udp.get_extra_info("sockname")[1]
    client, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, remote_addr=(address, udp_port)
    )
    try:
        with record_loopback(capture, address):
            for i in range(20):
                reader, writer = await asyncio.open_connection(address, web_port)
                writer.write(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
                await reader.read()
                writer.close()
                # A DNS query for example.com (RFC 1035 §4.1), off port 53 on purpose.
                client.sendto(os.urandom(2) + b"\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
                              b"\x07example\x03com\x00\x00\x01\x00\x01")  # fmt: skip
                await asyncio.sleep(0.01)
    finally:
        client.close()
        udp.close()
        server.close()
        await server.wait_closed()

    report = detect([capture])
    assert len(report.flows) >= 21  # 20 HTTP connections and the UDP exchange were recorded
    assert report.rtc_flows == []
    assert report.sessions == []
