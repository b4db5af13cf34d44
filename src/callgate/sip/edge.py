"""The SIP edge: its listeners and the parts that answer requests, put together.

Requests are handled in the order validate → authenticate → authorize → act → respond:

- the transport has parsed the message strictly (message.py) and answered what it could not;
- the server transaction layer stamps the Via (RFC 3581), answers retransmissions and hands
  each request to its method's handler (server_transactions.py);
- REGISTER and OPTIONS: edge_registrations.py (bindings in registrar.py, digest in auth.py);
- INVITE, ACK, BYE and CANCEL make and end dialogs for the call handler (runtime/sip_calls.py):
  edge_dialogs.py (invite.py); calls we make to phones and carriers: edge_outbound.py;
- audit entries: edge_audit.py; responses to our own requests: client.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from ssl import SSLContext
from typing import Any

from callgate.clock import Clock, SystemClock
from callgate.records.audit import AuditLog
from callgate.sip.attempts import Attempts
from callgate.sip.auth import Authenticator
from callgate.sip.client import ClientTransactions
from callgate.sip.credentials import Credential, CredentialStore
from callgate.sip.digest import DigestAuth
from callgate.sip.edge_audit import EdgeAudit
from callgate.sip.edge_dialogs import CallHandler, EdgeDialogs
from callgate.sip.edge_registrations import EdgeRegistrations
from callgate.sip.invite_limits import InviteLimits
from callgate.sip.media_peers import MediaPeers
from callgate.sip.message import SipRequest, SipResponse
from callgate.sip.registrar import FLOW_TIMER, Registrar
from callgate.sip.transport import Peer, TcpTransport, UdpTransport
from callgate.sip.trunk_limits import TrunkLimits
from callgate.sip.trunk_pings import TrunkPings
from callgate.sip.trunks import Trunks
from callgate.turn.peers import PeerFilter
from callgate.types import Address

__all__ = ["CallHandler", "SipEdge"]

SWEEP_INTERVAL = 15.0
ENDING_GRACE_S = 2.0  # how long close() lets calls' server-ended BYEs finish


class SipEdge(EdgeRegistrations, EdgeDialogs):
    def __init__(
        self,
        credentials: CredentialStore,
        audit: AuditLog | None = None,
        clock: Clock | None = None,
        algorithms: Sequence[str] = ("SHA-256", "MD5"),
        attempts: Attempts | None = None,
        trunks: Trunks | None = None,
        media: MediaPeers | None = None,
        flow_timer: int = FLOW_TIMER,
    ) -> None:
        super().__init__(clock or SystemClock())
        # where calls' RTP/RTCP may go (media_peers.py); default: the relay's default ranges
        self.media = media or MediaPeers(PeerFilter())
        self.attempts = attempts
        self.trunks = trunks or Trunks([])
        self.credentials = credentials
        self.realm = credentials.realm
        self.digest = DigestAuth(self.realm, algorithms)
        self.registrar = Registrar(flow_timer)
        self.audits = EdgeAudit(audit, self._clock, self._spawn)
        self.auth = Authenticator(credentials, self.digest, self._clock, self.audits.append)
        self._udp: list[asyncio.DatagramTransport] = []
        self._udp_protocols = []
        self._tcp: list[TcpTransport] = []
        self.bound: list[tuple[str, Address]] = []
        self.handlers.update({"REGISTER": self._register, "OPTIONS": self._options})
        self._closed = False
        self.calls = {}
        self.endings = set()
        self.clients = ClientTransactions()
        self.call_handler = None
        self.on_device = None
        self.closing: list[Callable[[], Awaitable[None]]] = []  # run first by close()
        self.trunk_limits = TrunkLimits(self._clock)
        self.invite_limits = InviteLimits(self._clock)
        # OPTIONS to carriers: up or down (trunk_pings.py), started with the UDP listeners
        self.pings = TrunkPings(self.trunks.all, self.ping, self._clock, self.audits.append)
        self._trunk_calls = {}
        self._call_users = {}
        self._trunk_leases = {}

    # -- life ------------------------------------------------------------------------------------

    async def start(
        self,
        udp: Sequence[Address] = (),
        tcp: Sequence[Address] = (),
        tls: Sequence[Address] = (),
        ssl: SSLContext | None = None,
    ) -> None:
        loop = asyncio.get_running_loop()
        for host, port in udp:
            transport, protocol = await loop.create_datagram_endpoint(
                lambda: UdpTransport(self.dispatch, self.counters), local_addr=(host, port)
            )
            self._udp.append(transport)
            self._udp_protocols.append(protocol)
            self.bound.append(("udp", protocol.local))
        for host, port in tcp:
            server = TcpTransport(self.dispatch, self.counters)
            server.on_close = self._flow_closed
            self.bound.append(("tcp", await server.start(host, port)))
            self._tcp.append(server)
        for host, port in tls:
            if ssl is None:
                raise ValueError("SIP over TLS needs a certificate")
            server = TcpTransport(self.dispatch, self.counters, ssl)
            server.on_close = self._flow_closed
            self._tcp.append(server)
            self.bound.append(("tls", await server.start(host, port)))
        self._spawn(self._sweep())
        if self._udp_protocols:
            self._spawn(self.pings.run())

    async def close(self) -> None:
        self._closed = True
        for hook in self.closing:
            await hook()
        for call in list(self.calls.values()):
            call.close()  # their tasks (re-INVITE watch, retransmissions)
        if self.endings:  # BYEs of calls the server ended (reinvites.py): time to finish
            _, late = await asyncio.wait(set(self.endings), timeout=ENDING_GRACE_S)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for transport in self._udp:
            transport.close()
        for server in self._tcp:
            await server.close()

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            now = self._clock.monotonic()
            await self._expire(now)
            if self.attempts is not None:
                for attempt in self.attempts.due():
                    await self._record(attempt)
            self._prune(now)

    def _response(self, message: SipResponse, peer: Peer) -> None:
        self.clients.response(message, peer.address)

    # -- what the call handlers use --------------------------------------------------------------

    async def authenticate(
        self, request: SipRequest, peer: Peer
    ) -> tuple[Credential | None, SipResponse | None]:
        """The device credential behind `request`, or the response that refuses it (auth.py)."""
        return await self.auth.authenticate(request, peer)

    async def audit(self, actor: str, action: str, obj: str, details: dict[str, Any]) -> None:
        """An audit entry from the call handlers (a refused media address), rate-limited per
        actor and action (edge_audit.py)."""
        await self.audits.handler(actor, action, obj, details)

    def audit_soon(self, actor: str, action: str, obj: str, details: dict[str, Any]) -> None:
        """`audit` from code that cannot wait for it (a re-INVITE's answer)."""
        self.audits.handler_soon(actor, action, obj, details)
