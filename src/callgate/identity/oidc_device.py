"""Single sign-on for the command line: the device authorization grant (RFC 8628), carried out
by the server on the CLI's behalf (`callgate login --sso`; docs/identity.md).

The CLI asks `start`: callgate asks the provider's device authorization endpoint (as the same
client as the browser sign-in, its secret never leaving the server) and hands the CLI the
user code and verification URI to show, plus a random attempt id of its own. The device code
stays here. The CLI then calls `poll` with the attempt id every `interval` seconds; callgate asks
the provider's token endpoint no more often than the provider allows (RFC 8628 §3.5: `slow_down`
adds 5 s), and once the person has approved, checks the ID token like any other (without a
nonce: this grant has none) and signs the account in exactly as the browser flow does.

Attempts live in memory for the provider's `expires_in` (at most MAX_LIFETIME_S), at most
MAX_PENDING in all and MAX_PENDING_PER_CLIENT per client address, and are used once.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from callgate.accounts.records import UserRecord
from callgate.identity.errors import ProviderError, TokenRejected
from callgate.identity.oidc_signin import OidcSignIn

if TYPE_CHECKING:
    from callgate.identity.oidc_provider import OidcProvider  # httpx: loaded when OIDC is on

log = logging.getLogger(__name__)

GRANT = "device_code"
DEFAULT_INTERVAL_S = 5  # RFC 8628 §3.2
SLOW_DOWN_S = 5  # §3.5
MAX_LIFETIME_S = 1800
MAX_PENDING = 1000
MAX_PENDING_PER_CLIENT = 5


@dataclass(slots=True)
class Attempt:
    device_code: str
    expires: float  # monotonic
    interval: float
    client: str | None
    next_poll: float = field(default=0.0)


@dataclass(frozen=True, slots=True)
class Pending:
    """Not finished yet: the CLI asks again after `interval` seconds. `error` is RFC 8628's
    authorization_pending or slow_down."""

    error: str
    interval: int


class DeviceSignIn:
    def __init__(self, provider: OidcProvider, sign_in: OidcSignIn) -> None:
        self._provider = provider
        self._sign_in = sign_in
        self._attempts: dict[str, Attempt] = {}

    async def start(self, client: str | None) -> dict[str, Any]:
        """What the CLI shows (user_code, verification_uri[_complete]) and its attempt id;
        ProviderError (DeviceGrantUnavailable when the provider has no such grant)."""
        self._expire()
        self._make_room(client)
        answer = await self._provider.device_authorization()
        now = time.monotonic()
        lifetime = _number(answer.get("expires_in"), 600, 1, MAX_LIFETIME_S)
        interval = _number(answer.get("interval"), DEFAULT_INTERVAL_S, 1, 60)
        attempt_id = secrets.token_urlsafe(32)
        self._attempts[attempt_id] = Attempt(
            str(answer["device_code"]), now + lifetime, interval, client, now + interval
        )
        shown = {
            "attempt": attempt_id,
            "user_code": str(answer["user_code"])[:64],
            "verification_uri": str(answer["verification_uri"])[:512],
            "expires_in": int(lifetime),
            "interval": int(interval),
        }
        complete = answer.get("verification_uri_complete")
        if isinstance(complete, str) and complete:
            shown["verification_uri_complete"] = complete[:512]
        return shown

    async def poll(
        self, attempt_id: str, client: str | None
    ) -> Pending | tuple[UserRecord, str, datetime]:
        """Pending while the person has not approved; (account, token, expiry) once they did;
        SsoFailed (audited) when the attempt is unknown, used, expired, denied or the ID token
        is bad."""
        self._expire()
        attempt = self._attempts.get(attempt_id)
        if attempt is None:
            raise self._sign_in.failure(
                client, "unknown, expired or already used sign-in (device)", 400
            )
        now = time.monotonic()
        if now < attempt.next_poll:  # asked too soon: the provider is not asked (§3.5)
            return Pending("slow_down", int(attempt.interval))
        attempt.next_poll = now + attempt.interval
        try:
            status, body = await self._provider.poll_device(attempt.device_code)
        except ProviderError as exc:
            raise self._sign_in.failure(client, f"provider error: {exc}", 502) from None
        if status != 200:
            return self._not_yet(attempt_id, attempt, str(body.get("error") or ""), client)
        del self._attempts[attempt_id]
        try:
            claims = await self._provider.verify_id_token(str(body.get("id_token") or ""), None)
        except ProviderError as exc:
            raise self._sign_in.failure(client, f"provider error: {exc}", 502) from None
        except TokenRejected as exc:
            raise self._sign_in.failure(client, f"ID token rejected: {exc}", 401) from None
        return self._sign_in.sign_in(claims, client, device="cli-sso", grant=GRANT)

    def _not_yet(
        self, attempt_id: str, attempt: Attempt, error: str, client: str | None
    ) -> Pending:
        if error == "authorization_pending":
            return Pending(error, int(attempt.interval))
        if error == "slow_down":
            attempt.interval += SLOW_DOWN_S
            attempt.next_poll = time.monotonic() + attempt.interval
            return Pending(error, int(attempt.interval))
        del self._attempts[attempt_id]
        if error == "access_denied":
            raise self._sign_in.failure(client, "the provider answered 'access_denied'", 403)
        if error == "expired_token":
            raise self._sign_in.failure(client, "the user code expired before approval", 400)
        raise self._sign_in.failure(client, f"provider error: {error[:64] or 'no error'}", 502)

    def _make_room(self, client: str | None) -> None:
        mine = [a for a, p in self._attempts.items() if p.client == client]
        for attempt_id in mine[: max(0, len(mine) - MAX_PENDING_PER_CLIENT + 1)]:
            del self._attempts[attempt_id]
        while len(self._attempts) >= MAX_PENDING:
            del self._attempts[next(iter(self._attempts))]

    def _expire(self) -> None:
        now = time.monotonic()
        for attempt_id in [a for a, p in self._attempts.items() if p.expires <= now]:
            del self._attempts[attempt_id]


def _number(value: Any, default: float, low: float, high: float) -> float:
    """A provider's number within [low, high]; `default` when it sent none usable."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    return float(min(max(value, low), high))
