"""Unmanaged calling found by the monitor inside `serve` (docs/detection.md, "Inside serve").

    GET /api/findings?limit=&unsanctioned=   admin, security: the monitor's state and the
        [&after=VERSION&wait=S]              findings seen most recently first, with the
                                             table's `version`; with `wait`, an answer is held
                                             (long poll, at most 25 s) until the version
                                             differs from `after`: the console's page sees a
                                             finding this server stores the moment it is
                                             stored, one another node stores within 1 s
    GET /api/findings/nftables               admin, security: an nftables ruleset dropping the
                                             unsanctioned peers and relays found (audited)

Anyone else signed in gets 403, and the refusal is written to the audit log. Built by
`findings_router()` around the findings table, the running monitor's status and what a block
list must spare (our own relays, internal addresses).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Response, status

from callgate.api.deps import UserDep
from callgate.records.audit import AuditLog
from callgate.records.findings import FindingRepository

if TYPE_CHECKING:
    from callgate.detect.nftables import Address  # the detection engine: loaded for the ruleset

SEES_FINDINGS = frozenset({"admin", "security"})
MAX_WAIT_S = 25.0  # longest long poll (under proxies' usual 30-60 s idle timeouts)
MAX_WAITERS = 64  # long polls held at once; beyond, answered at once (the page then polls)
RECHECK_S = 1.0  # how often a long poll looks for findings another node stored
MAX_VERSION_CHARS = 100


class FindingsFeed:
    """What long polls wait on: the findings table's `version` (FindingRepository.version),
    read again the moment this server's monitor stored something (`bump`, from any thread) and
    at most every `RECHECK_S` otherwise (another node's monitor writing to the same database),
    one query shared by all the waiters."""

    def __init__(self, loop: asyncio.AbstractEventLoop, version: Callable[[], str]) -> None:
        self.waiters = 0
        self._loop = loop
        self._read = version
        self._changed = asyncio.Event()
        self._bumps = 0  # a read that a bump overtook is not cached
        self._cached: tuple[float, int, str] | None = None  # (loop time, bumps, version)
        self._lock = asyncio.Lock()

    def bump(self) -> None:
        """Thread-safe: this server stored findings."""
        self._loop.call_soon_threadsafe(self._bump)

    def _bump(self) -> None:
        self._bumps += 1
        self._changed.set()
        self._changed = asyncio.Event()

    async def version(self) -> str:
        """The table's version, read at most every RECHECK_S unless `bump` came meanwhile."""
        async with self._lock:
            now, bumps, cached = self._loop.time(), self._bumps, self._cached
            if cached is None or cached[1] != bumps or now - cached[0] >= RECHECK_S:
                cached = self._cached = (now, bumps, await asyncio.to_thread(self._read))
            return cached[2]

    async def wait(self, after: str, seconds: float) -> None:
        """Return once the version is not `after`, or after `seconds`, or at once when
        `MAX_WAITERS` already wait."""
        if self.waiters >= MAX_WAITERS:
            return
        self.waiters += 1
        deadline = self._loop.time() + seconds
        try:
            while (left := deadline - self._loop.time()) > 0:
                changed = self._changed  # before the read: a bump during it ends the wait
                if await self.version() != after:
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), min(left, RECHECK_S))
        finally:
            self.waiters -= 1


def findings_router(
    repository: FindingRepository,
    monitor_status: Callable[[], dict[str, Any]],
    audit: AuditLog,
    allowed: Iterable[Address] = (),
    internal: Callable[[Address], bool] = lambda address: address.is_private,
    feed: FindingsFeed | None = None,
) -> APIRouter:
    router = APIRouter(prefix="/api/findings", tags=["detection"])
    spared = frozenset(allowed)

    async def authorize(user: UserDep, what: str) -> None:
        if user.role not in SEES_FINDINGS:
            await asyncio.to_thread(
                audit.append, user.handle, "detect.access_denied", what, {"role": user.role}
            )
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, detail="security officers and admins only"
            )

    @router.get("")
    async def list_findings(
        user: UserDep,
        limit: Annotated[int, Query(ge=1, le=1000)] = 200,
        unsanctioned: bool = False,
        after: Annotated[str | None, Query(max_length=MAX_VERSION_CHARS)] = None,
        wait: Annotated[float, Query(ge=0, le=MAX_WAIT_S)] = 0,
    ) -> dict[str, Any]:
        await authorize(user, "findings")
        if feed is not None and after is not None and wait > 0:
            await feed.wait(after, wait)
        # read before the rows: a change between the two makes the next long poll answer at once
        version = await feed.version() if feed is not None else None
        rows = await asyncio.to_thread(repository.recent, limit, unsanctioned)
        return {
            "monitor": monitor_status(), "version": version,
            "findings": [row.as_json() for row in rows],
        }  # fmt: skip

    @router.get(
        "/nftables",
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}, "description": "an nftables ruleset"}},
    )
    async def block_list(user: UserDep) -> Response:
        await authorize(user, "findings/nftables")
        targets = await asyncio.to_thread(repository.block_targets)
        from callgate.detect.nftables import findings_ruleset

        text = findings_ruleset(targets, spared, internal)
        details = {"findings": len(targets)}
        await asyncio.to_thread(audit.append, user.handle, "detect.nftables", "findings", details)
        disposition = 'attachment; filename="callgate-block.nft"'
        return Response(text, media_type="text/plain; charset=utf-8",
                        headers={"Content-Disposition": disposition})  # fmt: skip

    return router
