"""Digest authentication of SIP devices at the edge (RFC 3261 §22, RFC 8760; digest.py).

Failures count against the device name and the source address (accounts.throttle; a request
inside a call, from the call's address, only against the address), are audited
(`sip.auth.failure`, `sip.auth.replay`; once per refusal streak `sip.auth.throttled`), and past
the limit get 403 with Retry-After without a password check.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from callgate.accounts.throttle import LoginThrottle, ThrottleRule
from callgate.clock import Clock
from callgate.sip.credentials import Credential, CredentialStore
from callgate.sip.digest import DigestAuth, Verdict, parse_authorization
from callgate.sip.message import SipRequest, SipResponse
from callgate.sip.responses import response
from callgate.sip.transport import Peer

DEVICE_RULE = ThrottleRule(free=5, base_s=2.0, max_delay_s=300.0)
ADDRESS_RULE = ThrottleRule(free=30, base_s=2.0, max_delay_s=300.0)
Audit = Callable[[str, str, str, dict[str, Any]], Awaitable[None]]


class Authenticator:
    def __init__(
        self, credentials: CredentialStore, digest: DigestAuth, clock: Clock, audit: Audit
    ) -> None:
        self.credentials = credentials
        self.realm = credentials.realm
        self.digest = digest
        self._clock = clock
        self._audit = audit
        self._throttle = LoginThrottle(clock, account=DEVICE_RULE, address=ADDRESS_RULE)

    async def authenticate(
        self, request: SipRequest, peer: Peer, in_dialog: bool = False
    ) -> tuple[Credential | None, SipResponse | None]:
        """The device credential behind `request`, or the response that refuses it.

        `in_dialog`: a request inside a call, from the call's own address (a BYE). Only the
        address limit applies: anyone can fail digests under a device's name, and a lockout
        that refused the phone's own BYE would keep its call (and a carrier leg) up."""
        now = self._clock.wall()
        header = request.headers.get("authorization")
        if header is None:
            return None, self._challenge(request, now, stale=False)
        creds = parse_authorization(header)
        if creds is None:
            return None, response(request, 400, "Malformed Authorization")
        address = peer.address[0]
        credential = await asyncio.to_thread(self.credentials.get, creds.username)
        if not self.digest.nonce_fresh(creds.nonce, now):
            # old or forgotten nonce: a fresh challenge (RFC 7616 §3.3), neither charged nor
            # clearing anything — whatever the password, so it cannot reset a failure count
            return None, self._challenge(request, now, stale=True)
        # Charged, checked and given back with no await in between: parallel attempts of one
        # busy device (or of many phones behind one NAT) never see each other's charge.
        refusal = self._throttle.admit(creds.username, address, account=not in_dialog)
        if refusal is not None:
            if refusal.first:
                await self._failure("sip.auth.throttled", creds.username, address)
            return None, response(
                request,
                403,
                "Forbidden (too many failed attempts)",
                [("Retry-After", str(refusal.retry_after_s))],
            )
        usable = credential if credential is not None and credential.realm == self.realm else None
        stored = usable.ha1(creds.algorithm) if usable is not None else None
        verdict = self.digest.verify(creds, request.method, stored, now)
        if verdict is not Verdict.OK or usable is None:
            action = "sip.auth.replay" if verdict is Verdict.REPLAY else "sip.auth.failure"
            await self._failure(action, creds.username, address)
            return None, self._challenge(request, now, stale=False)
        self._throttle.succeeded(creds.username, address)
        if usable.disabled:
            return None, response(request, 403, "Forbidden (account disabled)")
        return usable, None

    def _challenge(self, request: SipRequest, now: float, stale: bool) -> SipResponse:
        values = self.digest.challenges(now, stale)
        return response(request, 401, "Unauthorized", [("WWW-Authenticate", v) for v in values])

    async def _failure(self, action: str, username: str, address: str) -> None:
        details = {"username": username[:64], "address": address}
        await self._audit(f"sip:{username[:64]}", action, f"sip-device:{username[:64]}", details)
