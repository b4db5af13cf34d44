"""The periodic directory check: accounts the directory disabled or deleted lose their tokens
(and so their signaling sockets, which re-check their token every 15 s) within
`check_interval_s` (≤ 60 s) plus that; the others get name, e-mail, groups and role from it.

A directory that cannot be reached changes nothing: an outage never locks everyone out; nor does
one where no linked account is found any more (a wrong base or lost read rights look like that).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from callgate.clock import Clock, SystemClock
from callgate.identity.directory import LdapDirectory
from callgate.identity.errors import DirectoryUnavailable
from callgate.identity.ldap_signin import SOURCE, ldap_rules, profile_of
from callgate.identity.linked import LinkedAccounts
from callgate.identity.mapping import decide
from callgate.storage.db import Store

log = logging.getLogger(__name__)

SUSPICIOUS_ALL_GONE = 3  # this many accounts or more, and none found: a directory problem


@dataclass(frozen=True, slots=True)
class CheckResult:
    checked: int
    disabled: int
    updated: int


class DirectoryCheck:
    def __init__(
        self, directory: LdapDirectory, store: Store, realm: str, clock: Clock | None = None
    ) -> None:
        self._directory = directory
        self._linked = LinkedAccounts(store, realm)
        self._clock = clock or SystemClock()
        self._task: asyncio.Task[None] | None = None

    def check_once(self) -> CheckResult:
        """One pass over the enabled ldap accounts (DirectoryUnavailable: nothing changed)."""
        accounts = self._linked.linked(SOURCE)
        disabled = updated = 0
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
                disabled += 1
                continue
            decision = decide(rules, entry.groups)
            if not decision.allowed:
                self._linked.disable(user, now, "no longer in an allowed directory group")
                disabled += 1
                continue
            why = {
                "dn": entry.dn,
                "directory_groups": list(entry.groups),
                "mapping": decision.as_json(),
                "reason": "directory check",
            }
            after = self._linked.refresh(user, profile_of(entry, user.handle, decision), now, why)
            updated += after != user
        return CheckResult(checked=len(accounts), disabled=disabled, updated=updated)

    async def _run(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(self.check_once)
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
