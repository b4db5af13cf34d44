"""Responses to our requests are taken only from where the request went (sip/client.py), over
real sockets: the edge pings a carrier (OPTIONS); a spoofer that learnt the branch answers first
with `200 OK` from another port, and is ignored; the carrier's own answer is the one the edge
takes."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from callgate.sip.credentials import CredentialStore
from callgate.sip.edge import SipEdge
from callgate.sip.message import SipRequest, parse_datagram
from callgate.sip.responses import encode, response
from callgate.sip.trunks import Trunk, Trunks
from callgate.storage.db import open_store, sqlite_url


async def test_a_spoofed_response_from_another_port_is_ignored(tmp_path: Path) -> None:
    store = open_store(sqlite_url(tmp_path))
    carrier, spoofer = (socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2))
    carrier.bind(("127.0.0.1", 0))
    spoofer.bind(("127.0.0.1", 0))
    carrier.settimeout(30)
    trunk = Trunk("uk", frozenset(), outbound=carrier.getsockname())
    edge = SipEdge(CredentialStore(store, "callgate.test"), trunks=Trunks([trunk]))
    try:
        await edge.start(udp=[("127.0.0.1", 0)])
        ping = asyncio.ensure_future(edge.ping(trunk, 30.0))
        data, source = await asyncio.to_thread(carrier.recvfrom, 65536)
        options = parse_datagram(data)
        assert isinstance(options, SipRequest) and options.method == "OPTIONS"
        spoofer.sendto(encode(response(options, 200, "OK")), source)  # the right branch
        for _ in range(300):
            if edge.clients.wrong_source:
                break
            await asyncio.sleep(0.1)
        assert edge.clients.wrong_source == 1 and not ping.done()
        carrier.sendto(encode(response(options, 503, "Service Unavailable")), source)
        answered = await asyncio.wait_for(ping, 30)
        assert answered is not None and answered.status == 503  # the carrier's, not the spoof
    finally:
        await edge.close()
        carrier.close()
        spoofer.close()
        store.close()
