"""Calls the edge makes: to registered phones (outbound.py) and through a trunk to its carrier,
within the trunk's channels and rates and each user's share of them (trunk_limits.py); OPTIONS
pings to carriers (trunk_pings.py).

A call through a trunk holds one of its channels from `dial` until `forget` (or, for an
inbound call from the trunk, until the call handler is done with it: dialogs.py).
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

from callgate.sip.client import ClientTransactions
from callgate.sip.edge_audit import EdgeAudit
from callgate.sip.invite import InboundCall
from callgate.sip.message import SipRequest, SipResponse, serialize
from callgate.sip.outbound import OutboundCall
from callgate.sip.registrar import Binding
from callgate.sip.server_transactions import ServerTransactions
from callgate.sip.transport import Peer, UdpTransport
from callgate.sip.trunk_limits import Refusal, TrunkLimited, TrunkLimits, UserLimit
from callgate.sip.trunk_pings import options_request
from callgate.sip.trunks import Trunk


class EdgeOutbound(ServerTransactions):
    realm: str
    calls: dict[str, InboundCall | OutboundCall]  # by Call-ID
    endings: set[asyncio.Task[None]]  # calls' BYEs that outlive them (reinvites.py `_ending`)
    clients: ClientTransactions  # our requests to phones and carriers
    audits: EdgeAudit
    trunk_limits: TrunkLimits
    _udp_protocols: list[UdpTransport]
    _trunk_calls: dict[str, str]  # Call-ID -> the trunk whose channel it holds
    _call_users: dict[str, str]  # Call-ID -> the user who dialled it
    _trunk_leases: dict[str, str]  # Call-ID -> its lease on the cluster's limits (trunk_limits.py)

    def outbound(self, binding: Binding, caller: str) -> OutboundCall:
        """A call from `caller` to a registered phone (outbound.py); `forget` it when done."""

        def send(request: SipRequest, peer: Peer) -> None:
            peer.send(serialize(request), peer.address)

        call = OutboundCall(
            binding, caller, self.realm, self.clients.register, send, self.clients.send_request
        )
        call.reinvites.endings = self.endings
        self.calls[call.call_id] = call
        return call

    async def dial(
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
        lease = secrets.token_hex(12)
        limit = await self.trunk_limits.admit(
            lease, trunk.name, trunk.max_calls, trunk.max_cps, "outbound", emergency, share
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
        self._trunk_leases[call.call_id] = lease
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
        call = self.calls.pop(call_id, None)
        if call is not None:
            call.close()  # its re-INVITE watch and retransmissions (sip/reinvites.py)
        self._release_trunk(call_id)

    def _release_trunk(self, call_id: str) -> None:
        trunk = self._trunk_calls.pop(call_id, None)
        if trunk is not None:
            user, lease = self._call_users.pop(call_id, None), self._trunk_leases.pop(call_id, None)
            self.trunk_limits.release(trunk, user, lease)

    def _user_refused(self, trunk: str, user: str, limit: Refusal) -> None:
        """Audit a user's first refusal at their dial-out limit (`sip.dialout.limit`)."""
        if self.trunk_limits.first_of_user_run(trunk, user):
            details: dict[str, Any] = {"limit": limit.limit, "status": limit.status,
                "trunk": trunk, "active": self.trunk_limits.user_active[(trunk, user)]}  # fmt: skip
            self.audits.soon(user, "sip.dialout.limit", f"user:{user}", details)

    def _trunk_refused(self, trunk: str, limit: Refusal, direction: str) -> None:
        """Alert once a run of refusals: a WARNING and a `sip.trunk.limit` audit entry."""
        if self.trunk_limits.first_of_run(trunk):
            details: dict[str, Any] = {"limit": limit.limit, "direction": direction,
                "status": limit.status, "active": self.trunk_limits.active[trunk]}  # fmt: skip
            self.audits.soon("sip", "sip.trunk.limit", f"trunk:{trunk}", details)
