"""What `callgate serve` runs for `[identity]`: the password sign-in and the directory check."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from callgate.accounts.service import AccountService
from callgate.identity.directory import LdapDirectory
from callgate.identity.errors import DirectoryUnavailable
from callgate.identity.ldap_signin import PasswordSignIn
from callgate.identity.ldap_sync import DirectoryCheck
from callgate.identity.settings import IdentitySettings
from callgate.storage.db import Store

log = logging.getLogger(__name__)


@dataclass
class IdentityRuntime:
    password_sign_in: PasswordSignIn | None = None
    check: DirectoryCheck | None = None

    async def stop(self) -> None:
        if self.check is not None:
            await self.check.stop()


async def start_identity(
    settings: IdentitySettings, store: Store, accounts: AccountService
) -> IdentityRuntime:
    """Build and start what the settings turn on. A directory that is down at start is logged,
    not fatal: local accounts (the break-glass admin) must still sign in."""
    if not settings.ldap.enabled:
        return IdentityRuntime()
    directory = LdapDirectory(settings.ldap)
    try:
        await asyncio.to_thread(_probe, directory)
        log.info("LDAP directory %s reachable", settings.ldap.url)
    except DirectoryUnavailable as exc:
        log.warning("LDAP directory not reachable at start: %s", exc)
    check = DirectoryCheck(directory, store, accounts.realm)
    check.start()
    return IdentityRuntime(PasswordSignIn(accounts, store, directory), check)


def _probe(directory: LdapDirectory) -> None:
    with directory.service():
        pass
