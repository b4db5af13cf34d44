"""The SIP edge: listeners, server transactions, digest authentication, the registrar.

Requests are handled in the order validate → authenticate → authorize → act → respond:

- the transport has parsed the message strictly (message.py) and answered what it could not;
- the top Via is stamped with `received`/`rport` (RFC 3581);
- a retransmitted request gets the same final response again without being handled twice
  (a server transaction, RFC 3261 §17.2.2, kept 32 s: Timer J);
- REGISTER and INVITE need digest credentials of a SIP device (auth.py), or come from a
  trunk's address (trunks.py);
- INVITE, ACK, BYE and CANCEL make and end dialogs (invite.py, outbound.py) for the call
  handler (runtime/sip_calls.py); INVITEs refused here are recorded (attempts.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from ssl import SSLContext
from typing import Any, Protocol

from callgate.clock import Clock, SystemClock
from callgate.records.audit import AuditLog
from callgate.sip.attempts import Attempt, Attempts, describe
from callgate.sip.auth import Authenticator
from callgate.sip.client import ClientTransactions
from callgate.sip.credentials import Credential, CredentialStore
from callgate.sip.dialog_party import same_party
from callgate.sip.digest import DigestAuth
from callgate.sip.invite import InboundCall
from callgate.sip.invite_limits import BURST, RATE, InviteLimits, retry_after
from callgate.sip.media_peers import MediaPeers
from callgate.sip.message import SipMessage, SipParseError, SipRequest, SipResponse, serialize
from callgate.sip.outbound import OutboundCall
from callgate.sip.registrar import Binding, Registrar
from callgate.sip.responses import ALLOW, ALLOW_CALLS, encode, response
from callgate.sip.transport import Counters, Peer, TcpTransport, UdpTransport
from callgate.sip.trunk_limits import Refusal, TrunkLimited, TrunkLimits, UserLimit
from callgate.sip.trunk_pings import TrunkPings, options_request
from callgate.sip.trunks import Trunk, Trunks
from callgate.sip.via import parse_via, response_target, stamp_received
from callgate.turn.peers import PeerFilter
from callgate.types import Address

log = logging.getLogger(__name__)

TRANSACTION_TTL = 32.0  # Timer J (RFC 3261 §17.2.2): 64 * T1
MAX_TRANSACTIONS = 20_000
SWEEP_INTERVAL = 15.0
MAX_CALLS = 500  # INVITE dialogs at once
HANDLER_AUDITS = 30  # entries a minute per actor and action from the call handlers
FORGED_AUDITS = 5  # audit entries per call for in-dialog requests from others
CALL_SETUP_LIMIT = 180.0  # seconds an INVITE may wait for its final response
Handler = Callable[[SipRequest, Peer], Awaitable[SipResponse | None]]


class CallHandler(Protocol):
    """What the edge hands an authenticated INVITE to (runtime/sip_calls.py)."""

    async def invite(self, call: InboundCall) -> None: ...


class SipEdge:
    def __init__(
        self,
        credentials: CredentialStore,
        audit: AuditLog | None = None,
        clock: Clock | None = None,
        algorithms: Sequence[str] = ("SHA-256", "MD5"),
        attempts: Attempts | None = None,
        trunks: Trunks | None = None,
        media: MediaPeers | None = None,
    ) -> None:
        # where calls' RTP/RTCP may go (media_peers.py); default: the relay's default ranges
        self.media = media or MediaPeers(PeerFilter())
        self.attempts = attempts  # CDRs of INVITEs refused here (attempts.py)
        self.trunks = trunks or Trunks([])  # INVITEs from their addresses skip digest
        self.credentials = credentials
        self.realm = credentials.realm
        self.digest = DigestAuth(self.realm, algorithms)
        self.registrar = Registrar()
        self.counters = Counters()
        self._audit = audit
        self._clock = clock or SystemClock()
        self.auth = Authenticator(credentials, self.digest, self._clock, self._append)
        self._transactions: dict[tuple[str, str, str], tuple[float, bytes | None]] = {}
        self._udp: list[asyncio.DatagramTransport] = []
        self._udp_protocols: list[UdpTransport] = []
        self._tcp: list[TcpTransport] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self.bound: list[tuple[str, Address]] = []
        self.handlers: dict[str, Handler] = {
            "REGISTER": self._register,
            "OPTIONS": self._options,
        }
        self._closed = False
        self.calls: dict[str, InboundCall | OutboundCall] = {}  # by Call-ID
        self.clients = ClientTransactions()  # our requests to phones
        self.call_handler: CallHandler | None = None
        # (device username, its user's handle, whether it has bindings now): when that changes
        self.on_device: Callable[[str, str, bool], None] | None = None
        self.closing: list[Callable[[], Awaitable[None]]] = []  # run first by close()
        self.trunk_limits = TrunkLimits(self._clock)
        self.invite_limits = InviteLimits(self._clock)  # each device's INVITE rate
        # OPTIONS to carriers: up or down (trunk_pings.py), started with the UDP listeners
        self.pings = TrunkPings(self.trunks.all, self.ping, self._clock, self._append)
        self._trunk_calls: dict[str, str] = {}  # Call-ID -> the trunk whose channel it holds
        self._call_users: dict[str, str] = {}  # Call-ID -> the user who dialled it
        self._audit_minute = -1  # handler audit entries this minute (_audit_admits)
        self._audited: dict[tuple[str, str], int] = {}

    def take_calls(self, handler: CallHandler) -> None:
        """Answer INVITEs (and their ACK, BYE, CANCEL) by handing them to `handler`."""
        self.call_handler = handler
        self.handlers.update({"INVITE": self._invite, "BYE": self._bye, "CANCEL": self._cancel})

    @property
    def clock(self) -> Clock:
        return self._clock

    @property
    def allow(self) -> str:
        return ALLOW_CALLS if self.call_handler is not None else ALLOW

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
            expired = self.registrar.expire(now)
            for binding in expired:
                await self._audit_binding("sip.register.expired", binding)
            self._devices_changed(expired)
            if self.attempts is not None:
                for attempt in self.attempts.due():
                    await self._record(attempt)
            self._transactions = {
                k: v for k, v in self._transactions.items() if v[0] > now or v[1] is None
            }

    def devices(self) -> list[tuple[str, str]]:
        """(device id, user handle) of every registered phone, for presence."""
        bindings = self.registrar.bindings(self._clock.monotonic())
        return [(f"sip:{b.username}:{b.contact}", b.handle) for b in bindings]

    # -- dispatch --------------------------------------------------------------------------------

    def dispatch(self, message: SipMessage, peer: Peer) -> None:
        if isinstance(message, SipResponse):
            self.clients.response(message, peer.address)
            return
        try:
            via = stamp_received(message.headers, peer.address)
        except SipParseError as exc:
            self._send(peer, None, encode(response(message, exc.status, exc.reason)))
            return
        key = (via.branch or "", f"{via.host}:{via.port}", message.method)
        if via.branch and via.branch.startswith("z9hG4bK") and message.method != "ACK":
            cached = self._transactions.get(key)
            if cached is not None:  # a retransmission (§17.2.3)
                if cached[1] is not None:
                    self._send(peer, message, cached[1])
                return
            if len(self._transactions) >= MAX_TRANSACTIONS:
                self._send(peer, message, encode(_busy(message)))
                return
            self._transactions[key] = (0.0, None)
        self._spawn(self._handle(message, peer, key))

    async def _handle(self, request: SipRequest, peer: Peer, key: tuple[str, str, str]) -> None:
        handler = self.handlers.get(request.method)
        try:
            if request.method == "ACK":
                self._ack(request, peer)  # an ACK of our non-2xx final ends there (§17.2.1)
                return
            if handler is None:
                reply: SipResponse | None = response(
                    request, 405, "Method Not Allowed", [("Allow", self.allow)]
                )
            else:
                reply = await handler(request, peer)
        except SipParseError as exc:
            reply = response(request, exc.status, exc.reason)
        except Exception:
            log.exception("sip %s from %s failed", request.method, peer.address[0])
            reply = response(request, 500, "Server Internal Error")
        if reply is None:
            self._transactions.pop(key, None)
            return
        data = encode(reply)
        self.counters.by_status[reply.status] = self.counters.by_status.get(reply.status, 0) + 1
        if key[0]:
            self._transactions[key] = (self._clock.monotonic() + TRANSACTION_TTL, data)
        self._send(peer, request, data)

    def _send(self, peer: Peer, request: SipRequest | None, data: bytes) -> None:
        if peer.transport == "UDP" and request is not None:
            via = parse_via(request.headers.all("via")[0])
            peer.send(data, response_target(via, peer.address))
        else:
            peer.send(data)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- authentication --------------------------------------------------------------------------

    async def authenticate(
        self, request: SipRequest, peer: Peer
    ) -> tuple[Credential | None, SipResponse | None]:
        """The device credential behind `request`, or the response that refuses it (auth.py)."""
        return await self.auth.authenticate(request, peer)

    # -- methods ---------------------------------------------------------------------------------

    async def _options(self, request: SipRequest, peer: Peer) -> SipResponse:
        return response(request, 200, "OK", [("Allow", self.allow), ("Accept", "application/sdp")])

    async def _register(self, request: SipRequest, peer: Peer) -> SipResponse:
        credential, refusal = await self.authenticate(request, peer)
        if refusal is not None or credential is None:
            assert refusal is not None
            return refusal
        outcome = self.registrar.register(request, credential, peer, self._clock.monotonic())
        for binding in outcome.added:
            await self._audit_binding("sip.register", binding)
        for binding in outcome.removed:
            await self._audit_binding("sip.unregister", binding)
        self._devices_changed([*outcome.added, *outcome.removed])
        return response(request, outcome.status, outcome.reason, outcome.headers)

    # -- calls (RFC 3261 §13, §15) ---------------------------------------------------------------

    async def _invite(self, request: SipRequest, peer: Peer) -> SipResponse | None:
        call_id = request.headers.get("call-id") or ""
        trunk = self.trunks.by_address(peer.address[0])
        if trunk is not None:  # IP-based trunk authentication
            credential: Credential | None = None
            refusal: SipResponse | None = None
        else:
            credential, refusal = await self.authenticate(request, peer)
        if refusal is not None or (credential is None and trunk is None):
            assert refusal is not None
            if self.attempts is not None and refusal.status == 401:
                self.attempts.challenged(call_id, self._attempt(request, peer, refusal))
            else:
                await self._record(self._attempt(request, peer, refusal))
            return refusal
        if self.attempts is not None:
            self.attempts.authenticated(call_id)
        if call_id in self.calls:
            call = self._dialog(request)
            if call is not None and not self._same_party(call, request, peer, credential):
                return self._forged(call, request, peer, credential)
            if isinstance(call, InboundCall) and call.answered and not call.ended.is_set():
                return call.reoffer(request)  # a re-INVITE (RFC 3261 §14.2)
            return response(request, 491, "Request Pending")
        if credential is not None and trunk is None:
            limited = self._invite_limited(request, credential)
            if limited is not None:
                return limited  # no record: a flood must not grow the records (invite_limits.py)
        if len(self.calls) >= MAX_CALLS or self.call_handler is None:
            busy = _busy(request)
            await self._record(self._attempt(request, peer, busy))
            return busy
        if trunk is not None:  # the trunk's channels and call rate (trunk_limits.py)
            limit = self.trunk_limits.acquire(trunk.name, trunk.max_calls, trunk.max_cps, "inbound")
            if limit is not None:
                refused = response(request, limit.status, limit.reason, TrunkLimited(limit).headers)
                await self._record(self._attempt(request, peer, refused))
                self._trunk_refused(trunk.name, limit, "inbound")
                return refused
            self._trunk_calls[call_id] = trunk.name

        def send(reply: SipResponse) -> None:
            self._send(peer, request, encode(reply))

        call = InboundCall(request, peer, credential, send, self.clients.send_request, trunk)
        self.calls[call_id] = call
        call.trying()
        self._spawn(self._run_call(call))
        try:
            return await asyncio.wait_for(asyncio.shield(call.final), CALL_SETUP_LIMIT)
        except TimeoutError:
            call.reject(408, "Request Timeout")
            return await call.final

    async def _run_call(self, call: InboundCall) -> None:
        assert self.call_handler is not None
        try:
            await self.call_handler.invite(call)
        except Exception:
            log.exception("sip call %s failed", call.call_id)
            call.reject(500, "Server Internal Error")
        finally:
            call.close()
            self.calls.pop(call.call_id, None)
            self._release_trunk(call.call_id)
            final = call.final.result() if call.final.done() else None
            if final is not None and final.status >= 300 and not call.recorded:
                await self._record(self._attempt(call.request, call.peer, final))

    def _attempt(self, request: SipRequest, peer: Peer, final: SipResponse) -> Attempt:
        return describe(request, peer.address[0], final.status, final.reason, self._clock.wall())

    async def _record(self, attempt: Attempt) -> None:
        if self.attempts is None:
            return
        try:
            await asyncio.to_thread(self.attempts.record, attempt)
        except Exception:
            log.exception("sip: call record of a refused INVITE not written")

    def _flow_closed(self, peer: Peer) -> None:
        if self._closed:
            return  # shutting down: bindings go with the process
        dropped = self.registrar.drop_flow(peer)
        if dropped:
            self._devices_changed(dropped)
            for binding in dropped:
                self._spawn(self._audit_binding("sip.register.closed", binding))

    def _devices_changed(self, bindings: list[Binding]) -> None:
        if self.on_device is None:
            return
        now = self._clock.monotonic()
        for username, handle in {(b.username, b.handle) for b in bindings}:
            present = any(b.username == username for b in self.registrar.bindings(now, handle))
            self.on_device(username, handle, present)

    def device_binding(self, username: str, handle: str) -> Binding | None:
        """The device's most recently registered binding, where we send its INVITEs."""
        found = [
            b
            for b in self.registrar.bindings(self._clock.monotonic(), handle)
            if b.username == username
        ]
        return max(found, key=lambda b: b.updated) if found else None

    def outbound(self, binding: Binding, caller: str) -> OutboundCall:
        """A call from `caller` to a registered phone (outbound.py); `forget` it when done."""

        def send(request: SipRequest, peer: Peer) -> None:
            peer.send(serialize(request), peer.address)

        call = OutboundCall(
            binding, caller, self.realm, self.clients.register, send, self.clients.send_request
        )
        self.calls[call.call_id] = call
        return call

    def dial(
        self,
        trunk: Trunk,
        number: str,
        caller: str,
        emergency: bool = False,
        user: str | None = None,
    ) -> OutboundCall | None:
        """A call to `number` through `trunk`'s carrier (UDP), None without a UDP listener;
        TrunkLimited past the trunk's limits or the dialling `user`'s share of it (never for an
        emergency call). `forget` gives the trunk's channel back."""
        if trunk.outbound is None or not self._udp_protocols:
            return None
        share = (
            None
            if user is None
            else UserLimit(user, trunk.max_calls_per_user, trunk.max_calls_per_user_hour)
        )
        limit = self.trunk_limits.acquire(
            trunk.name, trunk.max_calls, trunk.max_cps, "outbound", emergency, share
        )
        if limit is not None:
            if limit.limit.startswith("user-") and user is not None:
                self._user_refused(trunk.name, user, limit)
            else:
                self._trunk_refused(trunk.name, limit, "outbound")
            raise TrunkLimited(limit)
        peer = self._udp_protocols[0].peer(trunk.outbound)
        host, port = trunk.outbound
        now = self._clock.monotonic()
        target = Binding(
            number, f"trunk:{trunk.name}", f"sip:{number}@{host}:{port}", peer, now, "", 0
        )
        call = self.outbound(target, caller)
        call.auth = trunk.auth
        self._trunk_calls[call.call_id] = trunk.name
        if user is not None and not emergency:  # not counted in the user's share
            self._call_users[call.call_id] = user
        return call

    async def ping(self, trunk: Trunk, wait_s: float) -> SipResponse | None:
        """OPTIONS to the trunk's carrier (trunk_pings.py): its final response, or None."""
        if trunk.outbound is None or not self._udp_protocols:
            return None
        peer = self._udp_protocols[0].peer(trunk.outbound)
        request = options_request(trunk, peer.local, self.realm)
        try:
            return await asyncio.wait_for(self.clients.send_request(request, peer), wait_s)
        except TimeoutError:
            return None

    def forget(self, call_id: str) -> None:
        self.calls.pop(call_id, None)
        self._release_trunk(call_id)

    def _release_trunk(self, call_id: str) -> None:
        trunk = self._trunk_calls.pop(call_id, None)
        if trunk is not None:
            self.trunk_limits.release(trunk, self._call_users.pop(call_id, None))

    def _invite_limited(self, request: SipRequest, credential: Credential) -> SipResponse | None:
        """`503` with Retry-After when the device is over its INVITE rate (invite_limits.py);
        the first refusal of a run is audited (`sip.invite.limit`)."""
        wait = self.invite_limits.take(credential.username)
        if wait is None:
            return None
        if self.invite_limits.first_of_run(credential.username):
            details = {"burst": BURST, "rate": RATE}
            actor, obj = f"sip:{credential.username}", f"user:{credential.handle}"
            self._spawn(self._append(actor, "sip.invite.limit", obj, details))
        headers = [("Retry-After", retry_after(wait))]
        return response(request, 503, "Service Unavailable (INVITE rate)", headers)

    def _user_refused(self, trunk: str, user: str, limit: Refusal) -> None:
        """Audit a user's first refusal at their dial-out limit (`sip.dialout.limit`)."""
        if self.trunk_limits.first_of_user_run(trunk, user):
            details = {"limit": limit.limit, "status": limit.status, "trunk": trunk,
                       "active": self.trunk_limits.user_active[(trunk, user)]}  # fmt: skip
            self._spawn(self._append(user, "sip.dialout.limit", f"user:{user}", details))

    def _trunk_refused(self, trunk: str, limit: Refusal, direction: str) -> None:
        """Alert once a run of refusals: a WARNING and a `sip.trunk.limit` audit entry."""
        if self.trunk_limits.first_of_run(trunk):
            details = {"limit": limit.limit, "direction": direction, "status": limit.status,
                       "active": self.trunk_limits.active[trunk]}  # fmt: skip
            self._spawn(self._append("sip", "sip.trunk.limit", f"trunk:{trunk}", details))

    def _dialog(self, request: SipRequest) -> InboundCall | OutboundCall | None:
        call = self.calls.get(request.headers.get("call-id") or "")
        if call is None:
            return None
        if isinstance(call, OutboundCall):
            return call if call.matches(request) else None
        ours = f"tag={call.to_tag}"
        theirs = request.headers.get("from") or ""
        if request.method != "CANCEL" and ours not in (request.headers.get("to") or ""):
            return None
        return call if theirs == call.request.headers.get("from") else None

    # -- who may speak in a dialog (dialog_party.py) ----------------------------------------

    def _same_party(
        self,
        call: InboundCall | OutboundCall,
        request: SipRequest,
        peer: Peer,
        credential: Credential | None = None,
    ) -> bool:
        name = self._trunk_calls.get(call.call_id) if isinstance(call, OutboundCall) else None
        trunk = next((t for t in self.trunks.all if t.name == name), None) if name else None
        return same_party(call, request.method, peer.address[0], credential, trunk)

    def _forged(
        self,
        call: InboundCall | OutboundCall,
        request: SipRequest,
        peer: Peer,
        credential: Credential | None = None,
    ) -> SipResponse:
        """403 to an in-dialog request from someone else; the call goes on unchanged. Audited
        `sip.dialog.forged`, the first few per call (the rest are counted in responses)."""
        call.forged += 1
        if call.forged <= FORGED_AUDITS:
            actor = (
                f"sip:{credential.username}" if credential is not None else f"sip:{peer.address[0]}"
            )
            details = {"method": request.method, "source": f"{peer.address[0]}:{peer.address[1]}"}
            self._spawn(self._append(actor, "sip.dialog.forged", f"call:{call.call_id}", details))
        log.warning("sip %s in call %s from %s: not a party of the dialog", request.method,
                    call.call_id, peer.address[0])  # fmt: skip
        return response(request, 403, "Forbidden (not a party to this dialog)")

    def _ack(self, request: SipRequest, peer: Peer) -> None:
        call = self._dialog(request)
        if isinstance(call, InboundCall) and self._same_party(call, request, peer):
            call.acked.set()

    async def _bye(self, request: SipRequest, peer: Peer) -> SipResponse:
        call = self._dialog(request)
        if call is None or not call.answered:
            return response(request, 481, "Call/Transaction Does Not Exist")
        if not self._same_party(call, request, peer):
            return self._forged(call, request, peer)
        call.phone_ended("bye")
        return response(request, 200, "OK")

    async def _cancel(self, request: SipRequest, peer: Peer) -> SipResponse:
        call = self._dialog(request)
        if not isinstance(call, InboundCall) or call.final.done():
            return response(request, 481, "Call/Transaction Does Not Exist")
        if not self._same_party(call, request, peer):
            return self._forged(call, request, peer)
        call.phone_ended("cancel")
        call.reject(487, "Request Terminated")  # the INVITE's final (§9.2)
        return response(request, 200, "OK")

    # -- audit -----------------------------------------------------------------------------------

    async def _audit_binding(self, action: str, binding: Binding) -> None:
        details = {
            "device": binding.username,
            "transport": binding.peer.transport,
            "address": f"{binding.peer.address[0]}:{binding.peer.address[1]}",
        }
        await self._append(f"sip:{binding.username}", action, f"user:{binding.handle}", details)

    async def audit(self, actor: str, action: str, obj: str, details: dict[str, Any]) -> None:
        """An audit entry from the call handlers (a refused media address): at most
        HANDLER_AUDITS a minute per actor and action, so a device or a trunk sending the same
        bad request in a loop cannot flood the log (the rest are logged, not audited)."""
        if self._audit_admits(actor, action):
            await self._append(actor, action, obj, details)

    def audit_soon(self, actor: str, action: str, obj: str, details: dict[str, Any]) -> None:
        """`audit` from code that cannot wait for it (a re-INVITE's answer)."""
        if self._audit_admits(actor, action):
            self._spawn(self._append(actor, action, obj, details))

    def _audit_admits(self, actor: str, action: str) -> bool:
        minute = int(self._clock.monotonic() // 60)
        if minute != self._audit_minute or len(self._audited) > 10_000:
            self._audit_minute, self._audited = minute, {}
        count = self._audited[(actor, action)] = self._audited.get((actor, action), 0) + 1
        if count > HANDLER_AUDITS:
            log.info("sip: %s by %s not audited (over %d a minute)", action, actor, HANDLER_AUDITS)
        return count <= HANDLER_AUDITS

    async def _append(self, actor: str, action: str, obj: str, details: dict[str, Any]) -> None:
        if self._audit is None:
            return
        try:
            await asyncio.to_thread(self._audit.append, actor, action, obj, details)
        except Exception:
            log.exception("sip: audit entry %s not written", action)


def _busy(request: SipRequest) -> SipResponse:
    return response(request, 503, "Service Unavailable", [("Retry-After", "5")])
