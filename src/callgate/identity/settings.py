"""The `[identity]` settings: which sign-in methods are on and how they reach the directory.

`[identity.ldap]` / `CALLGATE_IDENTITY__LDAP__*` (docs/identity.md has every field). Plain
`ldap://` is refused unless `start_tls` is on: a directory password never crosses the network in
clear, and the server's certificate is always verified (`ca_file`, else the system's CAs).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

ROLE_NAMES = ("admin", "compliance", "security", "user")
ATTRIBUTE_RE = re.compile(r"[A-Za-z][A-Za-z0-9-]{0,63}")
GROUP_NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")  # callgate group names (accounts.service)


def check_attribute(value: str) -> str:
    if not ATTRIBUTE_RE.fullmatch(value):
        raise ValueError(f"expected an LDAP attribute name, got {value!r}")
    return value


def check_filter(value: str) -> str:
    """A filter from the configuration: parenthesised and balanced (the server checks the rest)."""
    depth = 0
    for char in value.replace("\\(", "").replace("\\)", ""):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            break
    if not (value.startswith("(") and value.endswith(")")) or depth != 0:
        raise ValueError(f"expected a parenthesised LDAP filter (RFC 4515), got {value!r}")
    return value


def check_role_map(value: dict[str, str]) -> dict[str, str]:
    for group, role in value.items():
        if role not in ROLE_NAMES:
            raise ValueError(f"role_map[{group!r}]: expected one of {', '.join(ROLE_NAMES)}")
    return value


def check_group_map(value: dict[str, list[str]]) -> dict[str, list[str]]:
    for source, targets in value.items():
        for target in targets:
            if not GROUP_NAME_RE.fullmatch(target):
                raise ValueError(
                    f"group_map[{source!r}]: callgate group {target!r} must be 1-64 of "
                    "A-Z a-z 0-9 . _ -"
                )
    return value


# Both directories map their groups to callgate roles and groups the same way.
RoleMap = Annotated[dict[str, str], AfterValidator(check_role_map)]
GroupMap = Annotated[dict[str, list[str]], AfterValidator(check_group_map)]


class LdapSettings(BaseModel):
    """`[identity.ldap]`: sign-in with the directory password (simple bind, RFC 4513 §5.1.3)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    # ldaps://HOST:PORT, or ldap://HOST:PORT with start_tls = true (RFC 4513 §3).
    url: str = "ldaps://127.0.0.1:636"
    start_tls: bool = False
    ca_file: Path | None = None  # PEM CA bundle verifying the server; none = the system's CAs
    timeout_s: float = Field(default=5.0, gt=0, le=60)
    # The service account that looks users up (never the user's own password).
    bind_dn: str = ""
    bind_password: SecretStr = SecretStr("")
    user_base: str = ""
    user_filter: str = "(objectClass=person)"
    # What people type: uid, sAMAccountName, mail or userPrincipalName.
    login_attribute: str = "uid"
    handle_attribute: str = "uid"  # becomes the callgate handle (lower-cased; a-z 0-9 . _ -)
    name_attribute: str = "displayName"
    mail_attribute: str = "mail"
    id_attribute: str = "entryUUID"  # stable id: entryUUID (OpenLDAP), objectGUID (AD)
    # An entry matching this filter is disabled: AD "(userAccountControl:1.2.840.113556.1.4.803:=2)".
    disabled_filter: str | None = None
    group_base: str = ""
    group_filter: str = "(|(objectClass=groupOfNames)(objectClass=group))"
    group_member_attribute: str = "member"
    group_name_attribute: str = "cn"
    nested_groups: bool = True
    max_group_depth: int = Field(default=8, ge=1, le=32)
    # Directory group (its name) -> callgate groups; -> role. Unlisted directory groups are ignored.
    group_map: GroupMap = Field(default_factory=dict)
    role_map: RoleMap = Field(default_factory=dict)
    default_role: str = "user"
    allowed_groups: list[str] = Field(default_factory=list)  # empty: every directory user
    create_accounts: bool = True  # just-in-time accounts at first sign-in
    # How often disabled/removed accounts are looked for; with the sockets' 15 s token re-check,
    # at most 45 keeps "out within 60 s" true.
    check_interval_s: float = Field(default=30.0, gt=0, le=45)

    @field_validator(
        "login_attribute",
        "handle_attribute",
        "name_attribute",
        "mail_attribute",
        "id_attribute",
        "group_member_attribute",
        "group_name_attribute",
    )
    @classmethod
    def _attribute(cls, value: str) -> str:
        return check_attribute(value)

    @field_validator("user_filter", "group_filter")
    @classmethod
    def _filter(cls, value: str) -> str:
        return check_filter(value)

    @field_validator("disabled_filter")
    @classmethod
    def _disabled(cls, value: str | None) -> str | None:
        return check_filter(value) if value else None

    @field_validator("default_role")
    @classmethod
    def _default_role(cls, value: str) -> str:
        if value not in ROLE_NAMES:
            raise ValueError(f"expected one of {', '.join(ROLE_NAMES)}")
        return value

    @model_validator(mode="after")
    def _coherent(self) -> LdapSettings:
        if not self.enabled:
            return self
        scheme = self.url.partition("://")[0].lower()
        if scheme not in ("ldap", "ldaps"):
            raise ValueError(f"url must be ldaps://HOST:PORT or ldap://HOST:PORT, got {self.url!r}")
        if scheme == "ldap" and not self.start_tls:
            raise ValueError("ldap:// without start_tls would send passwords in clear")
        if scheme == "ldaps" and self.start_tls:
            raise ValueError("start_tls is for ldap:// URLs (ldaps:// is TLS already)")
        if not self.user_base:
            raise ValueError("user_base is needed (e.g. ou=people,dc=example,dc=com)")
        if not self.bind_dn or not self.bind_password.get_secret_value():
            raise ValueError("bind_dn and bind_password (the service account) are needed")
        return self


class OidcSettings(BaseModel):
    """`[identity.oidc]`: single sign-on with an OpenID Connect provider (authorization code flow
    with PKCE, state and nonce; OpenID Connect Core 1.0 §3.1)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    issuer: str = ""  # https://login.example.com/realms/corp (http only on loopback, for tests)
    client_id: str = ""
    client_secret: SecretStr | None = None  # none: a public client (PKCE only)
    # Our callback as browsers reach it: https://callgate.example.com/api/sso/callback
    redirect_url: str = ""
    label: str = "your company"  # the button says "Sign in with <label>"
    scopes: list[str] = Field(default_factory=lambda: ["openid", "profile", "email"])
    handle_claim: str = "preferred_username"
    name_claim: str = "name"
    email_claim: str = "email"
    groups_claim: str = "groups"
    group_map: GroupMap = Field(default_factory=dict)
    role_map: RoleMap = Field(default_factory=dict)
    default_role: str = "user"
    allowed_groups: list[str] = Field(default_factory=list)
    create_accounts: bool = True
    clock_skew_s: int = Field(default=60, ge=0, le=300)
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256", "PS256", "EdDSA"])
    ca_file: Path | None = None  # PEM CA bundle for the provider's HTTPS; none = system CAs
    timeout_s: float = Field(default=10.0, gt=0, le=60)

    @field_validator("algorithms")
    @classmethod
    def _algorithms(cls, value: list[str]) -> list[str]:
        bad = [alg for alg in value if alg.lower() == "none" or alg.startswith("HS")]
        if bad or not value:
            raise ValueError("algorithms must be asymmetric signature algorithms (no none, no HS*)")
        return value

    @model_validator(mode="after")
    def _coherent(self) -> OidcSettings:
        if not self.enabled:
            return self
        for name in ("issuer", "redirect_url"):
            url = getattr(self, name)
            scheme, _, rest = url.partition("://")
            host = rest.split("/", 1)[0].rsplit(":", 1)[0].strip("[]")
            if scheme == "http" and host in ("127.0.0.1", "localhost", "::1"):
                continue
            if scheme != "https":
                raise ValueError(f"{name} must be an https:// URL (http only on loopback)")
        if not self.client_id:
            raise ValueError("client_id is needed")
        if "openid" not in self.scopes:
            raise ValueError('scopes must include "openid"')
        if self.default_role not in ROLE_NAMES:
            raise ValueError(f"default_role: expected one of {', '.join(ROLE_NAMES)}")
        return self


class ScimSettings(BaseModel):
    """`[identity.scim]`: provisioning by the identity provider over SCIM 2.0 (RFC 7643/7644) at
    /scim/v2, with a bearer token of its own."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    # The bearer token the provider sends (at least 32 characters; keep it in a 0600 file or the
    # environment). Only its SHA-256 is compared, in constant time.
    token: SecretStr = SecretStr("")
    # SCIM group (its displayName) -> callgate groups; -> role, as for LDAP and OIDC.
    group_map: GroupMap = Field(default_factory=dict)
    role_map: RoleMap = Field(default_factory=dict)
    default_role: str = "user"
    max_results: int = Field(default=200, ge=1, le=1000)  # resources per page (RFC 7644 §3.4.2.4)

    @model_validator(mode="after")
    def _coherent(self) -> ScimSettings:
        if self.default_role not in ROLE_NAMES:
            raise ValueError(f"default_role: expected one of {', '.join(ROLE_NAMES)}")
        if self.enabled and len(self.token.get_secret_value()) < 32:
            raise ValueError("token must be at least 32 characters (e.g. openssl rand -hex 32)")
        return self


def _https_or_loopback(name: str, url: str) -> None:
    scheme, _, rest = url.partition("://")
    host = rest.split("/", 1)[0].rsplit(":", 1)[0].strip("[]")
    if scheme == "http" and host in ("127.0.0.1", "localhost", "::1"):
        return
    if scheme != "https":
        raise ValueError(f"{name} must be an https:// URL (http only on loopback)")


class SamlSettings(BaseModel):
    """`[identity.saml]`: single sign-on with a SAML 2.0 identity provider (Web Browser SSO
    profile: AuthnRequest by HTTP-Redirect, signed assertion back by HTTP-POST), with pysaml2."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    idp_metadata_file: Path | None = (
        None  # the IdP's metadata XML (entity id, SSO URL, certificate)
    )
    # Our entity id (the audience the IdP must name) and our Assertion Consumer Service URL as
    # browsers reach it: https://callgate.example.com/api/saml/metadata, …/api/saml/acs
    sp_entity_id: str = ""
    acs_url: str = ""
    label: str = "your company"
    handle_attribute: str = ""  # empty: the NameID gives the handle
    name_attribute: str = "displayName"
    email_attribute: str = "mail"
    groups_attribute: str = "groups"
    group_map: GroupMap = Field(default_factory=dict)
    role_map: RoleMap = Field(default_factory=dict)
    default_role: str = "user"
    allowed_groups: list[str] = Field(default_factory=list)
    create_accounts: bool = True
    clock_skew_s: int = Field(default=60, ge=0, le=300)
    xmlsec_binary: Path = Path("/usr/bin/xmlsec1")  # Debian's xmlsec1 checks the signatures
    # callgate's own key pair as SP (PEM; the key mode 0600): published in our metadata, it
    # signs AuthnRequests (sign_requests) and decrypts encrypted assertions.
    sp_key_file: Path | None = None
    sp_cert_file: Path | None = None
    sign_requests: bool = False
    require_encrypted_assertions: bool = False

    @model_validator(mode="after")
    def _coherent(self) -> SamlSettings:
        if not self.enabled:
            return self
        if self.idp_metadata_file is None:
            raise ValueError("idp_metadata_file (the identity provider's metadata XML) is needed")
        if not self.sp_entity_id:
            raise ValueError("sp_entity_id is needed (e.g. https://HOST/api/saml/metadata)")
        _https_or_loopback("acs_url", self.acs_url)
        if (self.sp_key_file is None) != (self.sp_cert_file is None):
            raise ValueError("sp_key_file and sp_cert_file go together")
        if self.sp_key_file is None and (self.sign_requests or self.require_encrypted_assertions):
            raise ValueError(
                "sign_requests and require_encrypted_assertions need sp_key_file and sp_cert_file"
            )
        if self.default_role not in ROLE_NAMES:
            raise ValueError(f"default_role: expected one of {', '.join(ROLE_NAMES)}")
        return self


class IdentitySettings(BaseModel):
    """`[identity]`: directory sign-in methods. Local accounts always work (break-glass)."""

    model_config = ConfigDict(extra="forbid")

    ldap: LdapSettings = Field(default_factory=LdapSettings)
    oidc: OidcSettings = Field(default_factory=OidcSettings)
    saml: SamlSettings = Field(default_factory=SamlSettings)
    scim: ScimSettings = Field(default_factory=ScimSettings)
