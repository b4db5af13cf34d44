"""TurnServer: binds the listeners, wires auth, peer filter, allocator and handlers, and runs
the once-a-second sweep that expires allocations, permissions, channels and reservations."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import ssl
from dataclasses import dataclass, field
from types import TracebackType

from callgate.clock import Clock, SystemClock
from callgate.turn.allocation import Allocation
from callgate.turn.auth import Authenticator, KeyLookup
from callgate.turn.callbound import withdraw_stale
from callgate.turn.config import TurnConfig
from callgate.turn.counters import TurnCounters
from callgate.turn.handlers import TurnHandler
from callgate.turn.kernel.fastpath import FastPath, open_fast_path
from callgate.turn.ledger import SharedLedger
from callgate.turn.manager import AllocationManager
from callgate.turn.peers import PeerFilter
from callgate.turn.protocol import StreamProtocol, UdpListener
from callgate.turn.relay import RelayAllocator
from callgate.types import Address, Transport
from callgate.types.events import AuthEventSink, EventSink, NullSink

log = logging.getLogger(__name__)

SWEEP_INTERVAL = 1.0
# Traffic counters of live allocations go to the event sink (the relay_sessions rows) this often
# while they grow: after a crash the next start closes the sessions with these (records/).
PROGRESS_INTERVAL = 2.0
# Port 0: binds of UDP then TCP on the port UDP got, tried this often (another process may hold it).
_BIND_ATTEMPTS = 20
# A TCP/TLS connection with no allocation that sends nothing this long is closed.
IDLE_STREAM_SECONDS = 60.0


def _family_of(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


@dataclass
class Prebound:
    """Listening sockets bound by someone else (a worker's share of a SO_REUSEPORT group, see
    runtime/relay_workers.py): the server serves on these instead of binding `config.listen`."""

    udp: list[socket.socket] = field(default_factory=list)
    tcp: list[socket.socket] = field(default_factory=list)
    tls: list[socket.socket] = field(default_factory=list)


class TurnServer:
    def __init__(
        self,
        config: TurnConfig,
        *,
        events: EventSink | None = None,
        clock: Clock | None = None,
        key_lookup: KeyLookup | None = None,
        auth_events: AuthEventSink | None = None,
        shared: SharedLedger | None = None,
        nonce_key: bytes | None = None,
        prebound: Prebound | None = None,
    ) -> None:
        self.config = config
        self.shared = shared
        self.prebound = prebound
        self.fast: FastPath | None = None
        self.clock = clock or SystemClock()
        self.counters = TurnCounters()
        self.events = events or NullSink()
        self.auth = Authenticator(
            config.realm,
            self.clock,
            static_users=config.users,
            key_lookup=key_lookup,
            rest_secret=config.auth_secret,
            nonce_lifetime=config.nonce_lifetime,
            nonce_key=nonce_key,
        )
        self.peers = PeerFilter(config.allow_peers, config.deny_peers)
        relay_ip = config.relay_ip or (config.listen[0][0] if config.listen else "127.0.0.1")
        ip4 = relay_ip if ":" not in relay_ip else None
        ip6 = config.relay_ip6 or (relay_ip if ":" in relay_ip else None)
        self.allocator = RelayAllocator(
            ip4,
            ip6,
            config.relay_port_min,
            config.relay_port_max,
            now=self.clock.monotonic,
            shared=shared,
        )
        self.manager = AllocationManager(
            self.clock,
            self.events,
            self.counters,
            max_per_user=config.max_allocations_per_user,
            max_total=config.max_allocations_total,
            shared=shared,
        )
        self.handler = TurnHandler(
            config, self.auth, self.peers, self.allocator, self.manager, self.counters, self.clock
        )
        self.handler.throttle.events = auth_events
        self.bound: list[tuple[Transport, Address]] = []
        self._udp: list[UdpListener] = []
        self._servers: list[asyncio.Server] = []
        self._streams: set[StreamProtocol] = set()
        self._sweeper: asyncio.Task[None] | None = None

    async def __aenter__(self) -> TurnServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.allocator.bind_loop(loop)
        try:
            # in this thread: a program attaches to the devices of the caller's network namespace
            self.fast = open_fast_path(self.config.fast_path, self.clock)
            self.manager.fast = self.fast
            if self.prebound is not None:
                await self._serve_prebound(loop, self.prebound)
            else:
                await self._listen_all(loop)
        except BaseException:
            await self.stop()
            raise
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="turn-sweeper")
        log.info(
            "TURN listening on %s",
            ", ".join(f"{t.value}://{h}:{p}" for t, (h, p) in self.bound),
        )

    async def _listen_all(self, loop: asyncio.AbstractEventLoop) -> None:
        for host, port in self.config.listen:
            await self._listen(loop, host, port)
        if self.config.tls_listen:
            context = self._tls_context()
            for host, port in self.config.tls_listen:
                await self._listen_stream(loop, host, port, Transport.TLS, context)

    async def _serve_prebound(self, loop: asyncio.AbstractEventLoop, prebound: Prebound) -> None:
        for sock in prebound.udp:
            sock.setblocking(False)
            listener = UdpListener(sock, self.handler, self.manager, self.counters)
            listener.start(loop)
            self._udp.append(listener)
            self.bound.append((Transport.UDP, listener.address))
        context = self._tls_context() if prebound.tls else None
        for kind, socks in ((Transport.TCP, prebound.tcp), (Transport.TLS, prebound.tls)):
            for sock in socks:
                await self._listen_stream(
                    loop, "", 0, kind, context if kind is Transport.TLS else None, sock=sock
                )

    async def _listen(self, loop: asyncio.AbstractEventLoop, host: str, port: int) -> None:
        """UDP and TCP on the same port; with port 0, TCP takes the port UDP was given, and when
        another process holds that TCP port, both are tried again on a new one."""
        attempts = _BIND_ATTEMPTS if port == 0 else 1
        for attempt in range(1, attempts + 1):
            sock = socket.socket(_family_of(host), socket.SOCK_DGRAM)
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
                await self._listen_stream(loop, host, sock.getsockname()[1], Transport.TCP, None)
            except OSError as exc:
                sock.close()
                if exc.errno == errno.EADDRINUSE and attempt < attempts:
                    continue
                raise
            listener = UdpListener(sock, self.handler, self.manager, self.counters)
            listener.start(loop)
            self._udp.append(listener)
            # before the TCP entry just added: "udp H:P, tcp H:P", as the start-up line shows
            self.bound.insert(len(self.bound) - 1, (Transport.UDP, listener.address))
            return

    async def _listen_stream(
        self,
        loop: asyncio.AbstractEventLoop,
        host: str,
        port: int,
        kind: Transport,
        context: ssl.SSLContext | None,
        *,
        sock: socket.socket | None = None,
    ) -> None:
        def protocol() -> StreamProtocol:
            return StreamProtocol(self.handler, self.manager, self.counters, kind, self._streams)

        if sock is not None:
            server = await loop.create_server(protocol, sock=sock, ssl=context)
        else:
            server = await loop.create_server(protocol, host, port, ssl=context, reuse_address=True)
        self._servers.append(server)
        sockname = server.sockets[0].getsockname()
        self.bound.append((kind, (sockname[0], sockname[1])))

    def _tls_context(self) -> ssl.SSLContext:
        if not self.config.cert_file or not self.config.key_file:
            raise ValueError("tls_listen needs cert_file and key_file")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.config.cert_file, self.config.key_file)
        return context

    async def _sweep_forever(self) -> None:
        reported = self.clock.monotonic()
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            self.sweep()
            if self.clock.monotonic() - reported >= PROGRESS_INTERVAL:
                reported = self.clock.monotonic()
                self.manager.report_progress()
            if self.shared is not None:
                self.shared.publish(self.counters)

    def sweep(self) -> None:
        try:
            now = self.clock.monotonic()
            if self.fast is not None:
                self.fast.collect(self.counters)  # the kernel's counts, before the totals
            self.manager.sweep()
            if self.config.call_bound and self.handler.call_guard is not None:
                withdraw_stale(self.handler.call_guard, self.manager.by_relay, list(self.manager))
            self.allocator.expire(now)
            if self.fast is not None:
                self.fast.sync_all()
            self.handler.throttle.sweep()
            for stream in [
                s for s in self._streams if s.idle_without_allocation(now, IDLE_STREAM_SECONDS)
            ]:
                stream.abort()
        except Exception:  # keep sweeping: one bad allocation must not stop expiry
            log.exception("sweep failed")

    def refuse_users(self, disabled: frozenset[str], removed: frozenset[str] = frozenset()) -> None:
        """Refuse the TURN REST credentials of these accounts' users from now on and end their
        allocations (end reason `account-disabled` or `account-removed`)."""
        users = disabled | removed
        if users != self.auth.refused_users:
            log.info(
                "relay refuses the credentials of %d disabled or removed account(s)", len(users)
            )
        self.auth.refused_users = users
        for allocation in [a for a in self.manager if a.user in users]:
            reason = "account-disabled" if allocation.user in disabled else "account-removed"
            self.manager.remove(allocation, reason)

    def end_allocation(self, allocation_id: str, reason: str) -> bool:
        """End the allocation with this id (e.g. its record could not be written)."""
        for allocation in self.manager:
            if allocation.id == allocation_id:
                self.manager.remove(allocation, reason)
                return True
        return False

    def udp_client(self, server: Address, client: Address) -> Allocation | None:
        """The allocation a UDP client at `client` holds through the listener at `server`, when
        that listener is this process's (the media anchor's legs are such clients: their
        packets are then handed over in-process, Allocation.attach_local)."""
        for host in (server[0], "0.0.0.0", "::"):
            clients = self.manager.by_listener.get(((host, server[1]), Transport.UDP.value))
            allocation = None if clients is None else clients.get(client)
            if allocation is not None:
                return allocation
        return None

    def live_counters(self) -> TurnCounters:
        """Counters with relayed traffic folded in up to this moment (for metrics scrapes; what
        the kernel fast path relayed, up to the last sweep: this may run in another thread)."""
        self.manager.refresh_totals()
        return self.counters

    def address(self, transport: Transport = Transport.UDP) -> Address:
        for kind, addr in self.bound:
            if kind is transport:
                return addr
        raise LookupError(f"no {transport.value} listener")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        self.manager.close_all("server-shutdown")
        if self.fast is not None:
            self.fast.close()
            self.manager.fast = self.fast = None
        self.allocator.close()
        for server in self._servers:
            server.close()  # stop accepting before closing the live connections
        for stream in list(self._streams):
            stream.abort()
        self._streams.clear()
        for listener in self._udp:
            listener.close()
        self._udp.clear()
        for server in self._servers:
            server.close()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2)
        self._servers.clear()
        self.manager.refresh_totals()
        if self.shared is not None:
            self.shared.publish(self.counters)
