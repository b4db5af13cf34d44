"""The periodic directory check: accounts the directory disabled or deleted lose their tokens
within `check_interval_s` (≤ 60 s), and `on_deprovisioned` ends their calls and closes their
signaling sockets right then (else the sockets' own token check does within 15 s); the others
get name, e-mail, groups and role from it.

A directory that cannot be reached changes nothing: an outage never locks everyone out; nor does
one where no linked account is found any more (a wrong base or lost read rights look like that).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from callgate.clock import Clock, SystemClock
from callgate.identity.errors import DirectoryUnavailable
from callgate.identity.ldap_signin import SOURCE, ldap_rules, profile_of
from callgate.identity.linked import LinkedAccounts
from callgate.identity.mapping import decide
from callgate.storage.db import Store

if TYPE_CHECKING:  # ldap3 is loaded only when [identity.ldap] is on (service.py)
    from callgate.identity.directory import LdapDirectory

log = logging.getLogger(__name__)

SUSPICIOUS_ALL_GONE = 3  # this many accounts or more, and none found: a directory problem


@dataclass(frozen=True, slots=True)
class CheckResult:
    checked: int
    disabled: int
    updated: int
    gone: tuple[str, ...] = ()  # the handles disabled


class DirectoryCheck:
    def __init__(
        self, directory: LdapDirectory, store: Store, realm: str, clock: Clock | None = None
    ) -> None:
        self._directory = directory
        self._linked = LinkedAccounts(store, realm)
        self._clock = clock or SystemClock()
        self._task: asyncio.Task[None] | None = None
        self.on_deprovisioned: Callable[[list[str]], Awaitable[None]] | None = None

    def check_once(self) -> CheckResult:
        """One pass over the enabled ldap accounts (DirectoryUnavailable: nothing changed)."""
        accounts = self._linked.linked(SOURCE)
        gone: list[str] = []
        updated = 0
        now = datetime.fromtimestamp(self._clock.wall(), UTC)
        rules = ldap_rules(self._directory)
        with self._directory.service() as session:
            found = [(user, session.by_id(external_id)) for user, external_id in accounts]
        if len(found) >= SUSPICIOUS_ALL_GONE and all(entry is None for _, entry in found):
            # More likely a wrong user_base or a service account that lost its read rights
            # than everybody leaving at once: disable nobody.
            raise DirectoryUnavailable(
                f"none of the {len(found)} directory accounts was found; check user_base and "
                "the service account's rights (nobody disabled)"
            )
        for user, entry in found:
            if entry is None or entry.disabled:
                reason = (
                    "removed from the directory" if entry is None else "disabled in the directory"
                )
                self._linked.disable(user, now, reason)
                log.info("account %s disabled: %s", user.handle, reason)
                gone.append(user.handle)
                continue
            decision = decide(rules, entry.groups)
            if not decision.allowed:
                self._linked.disable(user, now, "no longer in an allowed directory group")
                gone.append(user.handle)
                continue
            why = {
                "dn": entry.dn,
                "directory_groups": list(entry.groups),
                "mapping": decision.as_json(),
                "reason": "directory check",
            }
            after = self._linked.refresh(user, profile_of(entry, user.handle, decision), now, why)
            updated += after != user
        return CheckResult(len(accounts), len(gone), updated, tuple(gone))

    async def _run(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                result = await asyncio.to_thread(self.check_once)
                if result.gone and self.on_deprovisioned is not None:
                    await self.on_deprovisioned(list(result.gone))
            except DirectoryUnavailable as exc:
                log.warning("directory check skipped: %s", exc)
            except Exception:
                log.exception("directory check failed")

    def start(self) -> None:
        self._task = asyncio.create_task(
            self._run(self._directory.settings.check_interval_s), name="ldap-directory-check"
        )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
