"""What `callgate serve` runs for `[identity]`: the password sign-in with the directory and its
check, single sign-on (OIDC, SAML) and SCIM provisioning."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import APIRouter

from callgate.accounts.service import AccountService
from callgate.errors import ConfigError
from callgate.identity.errors import DirectoryUnavailable
from callgate.identity.ldap_signin import PasswordSignIn
from callgate.identity.ldap_sync import DirectoryCheck
from callgate.identity.oidc_device import DeviceSignIn
from callgate.identity.oidc_routes import sso_router
from callgate.identity.oidc_signin import OidcSignIn
from callgate.identity.settings import IdentitySettings
from callgate.storage.db import Store

if TYPE_CHECKING:
    from callgate.identity.directory import LdapDirectory
    from callgate.identity.oidc_provider import OidcProvider

    # Loaded only when turned on: pysaml2 builds XML schemas and scim2-models reads its own
    # source at import, together about half of `serve`'s start-up CPU.
    from callgate.identity.saml_signin import SamlSignIn
    from callgate.identity.scim_routes import Deprovisioned, ScimEndpoint

log = logging.getLogger(__name__)


@dataclass
class IdentityRuntime:
    password_sign_in: PasswordSignIn | None = None
    check: DirectoryCheck | None = None
    sso: OidcSignIn | None = None
    device: DeviceSignIn | None = None
    provider: OidcProvider | None = None
    saml: SamlSignIn | None = None
    scim: ScimEndpoint | None = None

    def router(self) -> APIRouter:
        """/api/sso (always there: it tells the pages whether to offer single sign-on), /api/saml
        when SAML is on and /scim/v2 when SCIM is on."""
        router = APIRouter()
        router.include_router(sso_router(self.sso, self.device, self.saml))
        if self.saml is not None:
            from callgate.identity.saml_routes import saml_router

            router.include_router(saml_router(self.saml))
        if self.scim is not None:
            from callgate.identity.scim_routes import scim_router

            router.include_router(scim_router(self.scim))
        return router

    def on_deprovisioned(self, end_sessions: Callable[[str], Deprovisioned]) -> None:
        """What ends at once the sessions and calls of accounts SCIM deactivated or deleted, or
        the directory check disabled: `end_sessions(actor)` gives it for each actor."""
        if self.scim is not None:
            self.scim.on_deprovisioned = end_sessions("identity:scim")
        if self.check is not None:
            self.check.on_deprovisioned = end_sessions("identity:ldap")

    async def stop(self) -> None:
        if self.check is not None:
            await self.check.stop()
        if self.provider is not None:
            await self.provider.aclose()


async def start_identity(
    settings: IdentitySettings, store: Store, accounts: AccountService
) -> IdentityRuntime:
    """Build and start what the settings turn on. A directory that is down at start is logged,
    not fatal: local accounts (the break-glass admin) must still sign in."""
    runtime = IdentityRuntime()
    if settings.oidc.enabled:
        from callgate.identity.oidc_provider import OidcProvider

        runtime.provider = OidcProvider(settings.oidc)
        runtime.sso = OidcSignIn(runtime.provider, accounts, store)
        runtime.device = DeviceSignIn(runtime.provider, runtime.sso)
        log.info("single sign-on with %s", settings.oidc.issuer)
    if settings.saml.enabled:
        from callgate.identity.saml_signin import SamlSignIn

        try:
            runtime.saml = SamlSignIn(settings.saml, accounts, store)
        except Exception as exc:  # pysaml2 raises many kinds for a bad metadata file
            raise ConfigError(f"[identity.saml]: {exc}") from None
        log.info("SAML single sign-on with %s", settings.saml.idp_metadata_file)
    if settings.scim.enabled:
        from callgate.identity.scim_routes import ScimEndpoint
        from callgate.identity.scim_service import ScimService

        scim = settings.scim
        service = ScimService(scim, store, accounts.realm)
        runtime.scim = ScimEndpoint(service, store, scim.token.get_secret_value(), scim.max_results)
        log.info("SCIM provisioning at /scim/v2")
    if not settings.ldap.enabled:
        return runtime
    from callgate.identity.directory import LdapDirectory  # ldap3: only with a directory

    directory = LdapDirectory(settings.ldap)
    try:
        await asyncio.to_thread(_probe, directory)
        log.info("LDAP directory %s reachable", settings.ldap.url)
    except DirectoryUnavailable as exc:
        log.warning("LDAP directory not reachable at start: %s", exc)
    runtime.check = DirectoryCheck(directory, store, accounts.realm)
    runtime.check.start()
    runtime.password_sign_in = PasswordSignIn(accounts, store, directory)
    return runtime


def _probe(directory: LdapDirectory) -> None:
    with directory.service():
        pass
