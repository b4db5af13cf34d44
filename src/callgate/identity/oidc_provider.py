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

from callgate.identity.errors import DeviceGrantUnavailable, ProviderError, TokenRejected
from callgate.identity.settings import OidcSettings

log = logging.getLogger(__name__)

JWKS_REFRESH_S = 60.0
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"  # RFC 8628 §3.4
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
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self._settings.redirect_url,
            "code_verifier": verifier,
        }
        status, body = await self._post((await self.metadata()).token_endpoint, form)
        if status != 200:
            error = body.get("error") or ""
            raise ProviderError(f"token endpoint refused the code: HTTP {status} {error}".strip())
        return body

    async def device_authorization(self) -> dict[str, Any]:
        """A device authorization response (RFC 8628 §3.1-3.2): device_code, user_code,
        verification_uri, expires_in, maybe verification_uri_complete and interval."""
        endpoint = (await self.metadata()).device_authorization_endpoint
        if not endpoint:
            raise DeviceGrantUnavailable("the provider offers no device authorization endpoint")
        status, body = await self._post(endpoint, {"scope": " ".join(self._settings.scopes)})
        if status != 200:
            error = body.get("error") or ""
            raise ProviderError(f"device authorization refused: HTTP {status} {error}".strip())
        for name in ("device_code", "user_code", "verification_uri"):
            if not isinstance(body.get(name), str) or not body[name]:
                raise ProviderError(f"device authorization answer lacks {name}")
        return body

    async def poll_device(self, device_code: str) -> tuple[int, dict[str, Any]]:
        """The token endpoint's answer for a device code (RFC 8628 §3.4-3.5): (HTTP status,
        body); 400 with `error` authorization_pending, slow_down, access_denied or
        expired_token while the person has not finished."""
        form = {"grant_type": DEVICE_GRANT, "device_code": device_code}
        return await self._post((await self.metadata()).token_endpoint, form)

    async def _post(self, endpoint: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """POST `form` as our client (client_secret_basic when there is a secret, RFC 6749
        §2.3.1; else client_id in the form): (status, the JSON object answered or {})."""
        settings = self._settings
        form = {**form, "client_id": settings.client_id}
        try:
            if settings.client_secret is not None:
                secret = settings.client_secret.get_secret_value()
                auth = httpx.BasicAuth(settings.client_id, secret)
                response = await self._http.post(endpoint, data=form, auth=auth)
            else:
                response = await self._http.post(endpoint, data=form)
        except httpx.HTTPError as exc:
            raise ProviderError(f"{endpoint}: {type(exc).__name__}") from None
        if len(response.content) > MAX_DOCUMENT_BYTES:
            raise ProviderError(f"{endpoint}: answer too large")
        try:
            body = response.json()
        except ValueError:
            body = {}
        return response.status_code, body if isinstance(body, dict) else {}

    async def verify_id_token(self, id_token: str, nonce: str | None) -> dict[str, Any]:
        """The claims of a valid ID token for this sign-in; TokenRejected naming the check.
        `nonce` None: a device authorization grant, which has none (RFC 8628; its device code
        never left this server, so the token cannot be another sign-in's)."""
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

    def _check_claims(self, claims: dict[str, Any], nonce: str | None) -> None:
        settings = self._settings
        required: dict[str, Any] = {
            "iss": {"essential": True, "value": settings.issuer},
            "sub": {"essential": True},
            "aud": {"essential": True, "value": settings.client_id},
            "exp": {"essential": True},
            "iat": {"essential": True},
        }
        if nonce is not None:
            required["nonce"] = {"essential": True, "value": nonce}
        registry = jwt.JWTClaimsRegistry(
            now=lambda: int(self._clock()), leeway=settings.clock_skew_s, **required
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
