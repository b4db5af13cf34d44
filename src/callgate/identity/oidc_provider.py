"""The OpenID provider as callgate talks to it: discovery, the token endpoint and ID token
checks (OpenID Connect Core 1.0 §3.1.3.7; Discovery 1.0 §4), with joserfc (authlib's JOSE
library) for every signature.

ID tokens are accepted only when signed with one of the configured asymmetric algorithms by a
key from the provider's JWKS; a token naming a key we do not have makes us fetch the JWKS again
(key rotation), at most once every JWKS_REFRESH_S seconds so forged `kid`s cannot make us hammer
the provider. `iss` must equal the configured issuer, `aud` contain our client id (and `azp` be
it when there are several audiences), `exp`/`iat` hold within `clock_skew_s`, and `nonce` match
the one this sign-in sent.
"""

from __future__ import annotations

import logging
import ssl
import time
from dataclasses import dataclass
from typing import Any

import httpx
from joserfc import errors as jose_errors
from joserfc import jwt
from joserfc.jwk import KeySet

from callgate.identity.errors import ProviderError, TokenRejected
from callgate.identity.settings import OidcSettings

log = logging.getLogger(__name__)

JWKS_REFRESH_S = 60.0
MAX_DOCUMENT_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class ProviderMetadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    device_authorization_endpoint: str | None


class OidcProvider:
    def __init__(self, settings: OidcSettings, clock: Any = time.time) -> None:
        self._settings = settings
        self._clock = clock
        verify: ssl.SSLContext | bool = True
        if settings.ca_file is not None:
            verify = ssl.create_default_context(cafile=str(settings.ca_file))
        self._http = httpx.AsyncClient(timeout=settings.timeout_s, verify=verify)
        self._metadata: ProviderMetadata | None = None
        self._keys: KeySet | None = None
        self._keys_fetched = 0.0
        self._forced: float | None = None  # when an unknown kid last made us re-fetch the JWKS

    @property
    def settings(self) -> OidcSettings:
        return self._settings

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _get_json(self, url: str) -> dict[str, Any]:
        try:
            response = await self._http.get(url, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise ProviderError(f"{url}: {type(exc).__name__}") from None
        if response.status_code != 200 or len(response.content) > MAX_DOCUMENT_BYTES:
            raise ProviderError(f"{url}: HTTP {response.status_code}")
        try:
            body = response.json()
        except ValueError:
            raise ProviderError(f"{url}: not JSON") from None
        if not isinstance(body, dict):
            raise ProviderError(f"{url}: not a JSON object")
        return body

    async def metadata(self) -> ProviderMetadata:
        """The provider's discovery document (fetched once; its issuer must be ours, §4.3)."""
        if self._metadata is not None:
            return self._metadata
        issuer = self._settings.issuer.rstrip("/")
        doc = await self._get_json(f"{issuer}/.well-known/openid-configuration")
        if doc.get("issuer") != self._settings.issuer:
            raise ProviderError(
                f"discovery names issuer {doc.get('issuer')!r}, not {self._settings.issuer!r}"
            )
        try:
            self._metadata = ProviderMetadata(
                issuer=doc["issuer"],
                authorization_endpoint=str(doc["authorization_endpoint"]),
                token_endpoint=str(doc["token_endpoint"]),
                jwks_uri=str(doc["jwks_uri"]),
                device_authorization_endpoint=doc.get("device_authorization_endpoint"),
            )
        except KeyError as exc:
            raise ProviderError(f"discovery document lacks {exc.args[0]}") from None
        return self._metadata

    async def _key_set(self, refresh: bool = False) -> KeySet:
        now = time.monotonic()
        forced = refresh and (self._forced is None or now - self._forced >= JWKS_REFRESH_S)
        if forced:
            self._forced = now
        if self._keys is None or forced:
            doc = await self._get_json((await self.metadata()).jwks_uri)
            try:
                self._keys = KeySet.import_key_set(doc)  # type: ignore[arg-type]
            except (jose_errors.JoseError, ValueError, KeyError, TypeError):
                raise ProviderError("the provider's JWKS is not a valid key set") from None
            self._keys_fetched = now
        return self._keys

    async def exchange(self, code: str, verifier: str) -> dict[str, Any]:
        """The token response for an authorization code (RFC 6749 §4.1.3, RFC 7636 §4.5)."""
        settings = self._settings
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": settings.redirect_url,
            "code_verifier": verifier,
            "client_id": settings.client_id,
        }
        endpoint = (await self.metadata()).token_endpoint
        try:
            if settings.client_secret is not None:  # client_secret_basic (RFC 6749 §2.3.1)
                secret = settings.client_secret.get_secret_value()
                auth = httpx.BasicAuth(settings.client_id, secret)
                response = await self._http.post(endpoint, data=form, auth=auth)
            else:
                response = await self._http.post(endpoint, data=form)
        except httpx.HTTPError as exc:
            raise ProviderError(f"token endpoint: {type(exc).__name__}") from None
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code != 200 or not isinstance(body, dict):
            error = body.get("error") if isinstance(body, dict) else None
            raise ProviderError(
                f"token endpoint refused the code: HTTP {response.status_code} {error or ''}".strip()
            )
        return body

    async def verify_id_token(self, id_token: str, nonce: str) -> dict[str, Any]:
        """The claims of a valid ID token for this sign-in; TokenRejected naming the check."""
        if not id_token or len(id_token) > 16_384:
            raise TokenRejected("no ID token, or one too large")
        keys = await self._key_set()
        try:
            token = self._decode(id_token, keys)
        except (jose_errors.MissingKeyError, jose_errors.InvalidKeyIdError):
            keys = await self._key_set(refresh=True)  # the provider may have rotated its keys
            try:
                token = self._decode(id_token, keys)
            except (jose_errors.MissingKeyError, jose_errors.InvalidKeyIdError):
                raise TokenRejected("signed with a key the provider does not publish") from None
        self._check_claims(token.claims, nonce)
        return dict(token.claims)

    def _decode(self, id_token: str, keys: KeySet) -> jwt.Token:
        try:
            return jwt.decode(id_token, keys, algorithms=self._settings.algorithms)
        except (jose_errors.MissingKeyError, jose_errors.InvalidKeyIdError):
            raise
        except jose_errors.BadSignatureError:
            raise TokenRejected("bad signature") from None
        except jose_errors.UnsupportedAlgorithmError:
            raise TokenRejected("signature algorithm not allowed") from None
        except (jose_errors.JoseError, ValueError) as exc:
            raise TokenRejected(f"malformed ID token ({type(exc).__name__})") from None

    def _check_claims(self, claims: dict[str, Any], nonce: str) -> None:
        settings = self._settings
        registry = jwt.JWTClaimsRegistry(
            now=lambda: int(self._clock()),
            leeway=settings.clock_skew_s,
            iss={"essential": True, "value": settings.issuer},
            sub={"essential": True},
            aud={"essential": True, "value": settings.client_id},
            exp={"essential": True},
            iat={"essential": True},
            nonce={"essential": True, "value": nonce},
        )
        try:
            registry.validate(claims)
        except jose_errors.ExpiredTokenError:
            raise TokenRejected("expired (exp)") from None
        except jose_errors.MissingClaimError as exc:
            raise TokenRejected(f"missing claim {exc.claim}") from None
        except jose_errors.ClaimError as exc:
            if exc.claim in ("iat", "nbf"):
                raise TokenRejected(f"issued in the future ({exc.claim})") from None
            raise TokenRejected(f"wrong {exc.claim}") from None
        iat = claims.get("iat")
        if not isinstance(iat, int | float) or iat > self._clock() + settings.clock_skew_s:
            raise TokenRejected("issued in the future (iat)")
        audience = claims.get("aud")
        if (
            isinstance(audience, list)
            and len(audience) > 1
            and claims.get("azp") != settings.client_id
        ):
            raise TokenRejected("wrong azp")  # Core §3.1.3.7 items 4-5
