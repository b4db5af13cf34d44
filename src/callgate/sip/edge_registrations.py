"""REGISTER and OPTIONS at the edge, and the phones registrations bring and take (presence).

REGISTER needs digest credentials of a SIP device (auth.py); the bindings live in the
registrar (registrar.py). Every binding added, removed, expired or lost with its flow (a TCP/TLS
connection closed, RFC 5626's flow idea without its Outbound machinery) is audited and reported
to `on_device`, which puts the phone in or out of its user's presence.
"""

from __future__ import annotations

from collections.abc import Callable

from callgate.sip.auth import Authenticator
from callgate.sip.edge_audit import EdgeAudit
from callgate.sip.message import SipRequest, SipResponse
from callgate.sip.registrar import Binding, Registrar
from callgate.sip.responses import response
from callgate.sip.server_transactions import ServerTransactions
from callgate.sip.transport import Peer


class EdgeRegistrations(ServerTransactions):
    registrar: Registrar
    auth: Authenticator
    audits: EdgeAudit
    # (device username, its user's handle, whether it has bindings now): when that changes
    on_device: Callable[[str, str, bool], None] | None
    _closed: bool

    async def _options(self, request: SipRequest, peer: Peer) -> SipResponse:
        return response(request, 200, "OK", [("Allow", self.allow), ("Accept", "application/sdp")])

    async def _register(self, request: SipRequest, peer: Peer) -> SipResponse:
        credential, refusal = await self.auth.authenticate(request, peer)
        if refusal is not None or credential is None:
            assert refusal is not None
            return refusal
        outcome = self.registrar.register(request, credential, peer, self._clock.monotonic())
        for binding in outcome.added:
            await self.audits.binding("sip.register", binding)
        for binding in outcome.removed:
            await self.audits.binding("sip.unregister", binding)
        self._devices_changed([*outcome.added, *outcome.removed])
        return response(request, outcome.status, outcome.reason, outcome.headers)

    async def _expire(self, now: float) -> None:
        expired = self.registrar.expire(now)
        for binding in expired:
            await self.audits.binding("sip.register.expired", binding)
        self._devices_changed(expired)

    def _flow_closed(self, peer: Peer) -> None:
        if self._closed:
            return  # shutting down: bindings go with the process
        dropped = self.registrar.drop_flow(peer)
        if dropped:
            self._devices_changed(dropped)
            for binding in dropped:
                self._spawn(self.audits.binding("sip.register.closed", binding))

    def _devices_changed(self, bindings: list[Binding]) -> None:
        if self.on_device is None:
            return
        now = self._clock.monotonic()
        for username, handle in {(b.username, b.handle) for b in bindings}:
            present = any(b.username == username for b in self.registrar.bindings(now, handle))
            self.on_device(username, handle, present)

    def devices(self) -> list[tuple[str, str]]:
        """(device id, user handle) of every registered phone, for presence."""
        bindings = self.registrar.bindings(self._clock.monotonic())
        return [(f"sip:{b.username}:{b.contact}", b.handle) for b in bindings]

    def device_binding(self, username: str, handle: str) -> Binding | None:
        """The device's most recently registered binding, where we send its INVITEs."""
        found = [
            b
            for b in self.registrar.bindings(self._clock.monotonic(), handle)
            if b.username == username
        ]
        return max(found, key=lambda b: b.updated) if found else None
