"""The allocation table: lookup by five-tuple, quotas, expiry and accounting events.

With worker processes (`callgate turn --workers`), each worker's table holds its own allocations
and a SharedLedger (ledger.py) answers for all of them: quotas and other workers' relayed
addresses."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from callgate.clock import Clock
from callgate.turn.allocation import Allocation
from callgate.turn.counters import TurnCounters
from callgate.turn.ledger import SharedLedger, quota_reason
from callgate.types import Address, FiveTuple
from callgate.types.events import AllocationEvent, EventKind, EventSink

if TYPE_CHECKING:
    from callgate.turn.kernel.fastpath import FastPath


class AllocationManager:
    def __init__(
        self,
        clock: Clock,
        events: EventSink,
        counters: TurnCounters,
        *,
        max_per_user: int = 0,
        max_total: int = 0,
        shared: SharedLedger | None = None,
    ) -> None:
        self.clock = clock
        self.events = events
        self.counters = counters
        self.max_per_user = max_per_user
        self.max_total = max_total
        self.shared = shared
        self.fast: FastPath | None = None  # the kernel fast path, set by the server when on
        self._by_tuple: dict[FiveTuple, Allocation] = {}
        self._per_user: dict[str, int] = {}
        # Traffic of deleted allocations; live totals = retired + sum over active (see refresh_totals).
        self._retired = [0, 0, 0, 0]
        # Relayed transport addresses of live allocations (RFC 8656 §2): local delivery and
        # permissions toward another party's relay on this server.
        self.by_relay: dict[Address, Allocation] = {}
        # Data-path index per listener: (server address, transport) -> client address -> allocation.
        self.by_listener: dict[tuple[Address, str], dict[Address, Allocation]] = {}
        # Packets each way at the last PROGRESS event, per live allocation id.
        self._reported: dict[str, tuple[int, int]] = {}

    def __len__(self) -> int:
        return len(self._by_tuple)

    def __iter__(self) -> Iterator[Allocation]:
        return iter(list(self._by_tuple.values()))

    def get(self, five_tuple: FiveTuple) -> Allocation | None:
        return self._by_tuple.get(five_tuple)

    def is_relay(self, address: Address) -> bool:
        """Is `address` a relayed transport address of a live allocation on this server (on any
        worker)?"""
        if address in self.by_relay:
            return True
        return self.shared is not None and self.shared.holds_relay(address)

    def allocations_of(self, user: str) -> int:
        """How many live allocations `user` holds (on all workers)."""
        if self.shared is not None:
            return self.shared.counts(user)[1]
        return self._per_user.get(user, 0)

    def quota_refusal(self, user: str) -> str | None:
        """The 486 reason phrase naming the quota `user` reached, or None while both allow more
        (RFC 8656 §7.2 step 10)."""
        if self.shared is not None:
            total, of_user = self.shared.counts(user)
        else:
            total, of_user = len(self._by_tuple), self._per_user.get(user, 0)
        return quota_reason(self.max_total, self.max_per_user, total, of_user)

    def quota_allows(self, user: str) -> bool:
        """RFC 8656 §7.2 step 10: per-user and global allocation quotas (486)."""
        return self.quota_refusal(user) is None

    def add(self, allocation: Allocation) -> str | None:
        """Enter a new allocation; with a shared ledger, only if the quotas still allow it once
        the other workers' claims are counted (else the 486 reason, and nothing is entered)."""
        if self.shared is not None:
            refusal = self.shared.claim(
                allocation.id,
                allocation.user,
                [relay.address for relay in allocation.relays.values()],
                max_total=self.max_total,
                max_user=self.max_per_user,
            )
            if refusal is not None:
                return refusal
        ft = allocation.five_tuple
        self._by_tuple[ft] = allocation
        self._per_user[allocation.user] = self._per_user.get(allocation.user, 0) + 1
        self.by_listener.setdefault((ft.server, ft.transport.value), {})[ft.client] = allocation
        for relay in allocation.relays.values():
            self.by_relay[relay.address] = allocation
        allocation.local_relays = self.by_relay
        self.counters.allocations_total += 1
        self.counters.allocations_active = len(self._by_tuple)
        if self.fast is not None:
            self.fast.adopt(allocation)
        self.emit(allocation, EventKind.CREATED)
        return None

    def remove(self, allocation: Allocation, reason: str) -> None:
        ft = allocation.five_tuple
        if self._by_tuple.get(ft) is not allocation:
            return
        del self._by_tuple[ft]
        left = self._per_user.get(allocation.user, 1) - 1
        if left:
            self._per_user[allocation.user] = left
        else:
            self._per_user.pop(allocation.user, None)
        index = self.by_listener.get((ft.server, ft.transport.value))
        if index is not None:
            index.pop(ft.client, None)
        for relay in allocation.relays.values():
            self.by_relay.pop(relay.address, None)
        allocation.close()
        if self.shared is not None:
            self.shared.release(allocation.id)
        self._reported.pop(allocation.id, None)
        retired = self._retired
        retired[0] += allocation.packets_to_peer
        retired[1] += allocation.bytes_to_peer
        retired[2] += allocation.packets_to_client
        retired[3] += allocation.bytes_to_client
        self.counters.allocations_active = len(self._by_tuple)
        self.emit(allocation, EventKind.DELETED, end_reason=reason)

    def remove_client(self, five_tuple: FiveTuple, reason: str) -> None:
        allocation = self._by_tuple.get(five_tuple)
        if allocation is not None:
            self.remove(allocation, reason)

    def sweep(self) -> None:
        """Expire allocations, then permissions and channels (RFC 8656 §7, §9, §12)."""
        now = self.clock.monotonic()
        for allocation in list(self._by_tuple.values()):
            if allocation.expires <= now:
                self.remove(allocation, "expired")
            else:
                allocation.expire(now)
        self.refresh_totals()

    def refresh_totals(self) -> None:
        """Fold per-allocation traffic counters into the server totals (metrics read these)."""
        totals = list(self._retired)
        # list() first: metrics may call this from their own thread while the loop mutates.
        for a in list(self._by_tuple.values()):
            totals[0] += a.packets_to_peer
            totals[1] += a.bytes_to_peer
            totals[2] += a.packets_to_client
            totals[3] += a.bytes_to_client
        c = self.counters
        c.packets_to_peer, c.bytes_to_peer, c.packets_to_client, c.bytes_to_client = totals

    def report_progress(self) -> int:
        """A PROGRESS event for every allocation that relayed packets since its last one, so the
        recorded counters trail the truth by one call of this at most; how many were sent."""
        if self.fast is not None:
            self.fast.collect(self.counters)  # what the kernel relayed counts too
        sent = 0
        for allocation in list(self._by_tuple.values()):
            packets = (allocation.packets_to_peer, allocation.packets_to_client)
            if packets == self._reported.get(allocation.id, (0, 0)):
                continue
            self._reported[allocation.id] = packets
            self.emit(allocation, EventKind.PROGRESS)
            sent += 1
        return sent

    def close_all(self, reason: str) -> None:
        for allocation in list(self._by_tuple.values()):
            self.remove(allocation, reason)

    def emit(
        self,
        allocation: Allocation,
        kind: EventKind,
        *,
        end_reason: str | None = None,
        detail: str | None = None,
    ) -> None:
        ft = allocation.five_tuple
        deleted = kind is EventKind.DELETED
        self.events.emit(
            AllocationEvent(
                kind=kind,
                allocation_id=allocation.id,
                username=allocation.username,
                user=allocation.user,
                client=ft.client,
                server=ft.server,
                transport=ft.transport,
                relay=allocation.relay_address,
                time=self.clock.wall(),
                started=allocation.started,
                lifetime=0 if deleted else allocation.lifetime,
                peers=tuple(sorted(allocation.peers_seen)),
                packets_to_peer=allocation.packets_to_peer,
                bytes_to_peer=allocation.bytes_to_peer,
                packets_to_client=allocation.packets_to_client,
                bytes_to_client=allocation.bytes_to_client,
                end_reason=end_reason,
                detail=detail,
            )
        )
