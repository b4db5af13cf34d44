"""Settings: defaults < TOML config file < environment (CALLGATE_*) < command-line options.

The environment uses the prefix `CALLGATE_` and `__` between levels: `CALLGATE_HTTP`,
`CALLGATE_TURN__LISTEN`, `CALLGATE_TURN__RELAY_PORTS`. The config file (`--config FILE` or
`CALLGATE_CONFIG`) is TOML with the same names: top-level keys and a `[turn]` table.
Values are parsed and checked here; a bad value raises `ConfigError` naming the option.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import tomllib
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from callgate.errors import ConfigError
from callgate.identity.settings import IdentitySettings
from callgate.media.prompt_wav import read_prompt_wav
from callgate.storage.db import check_url, sqlite_url
from callgate.turn.config import TurnConfig
from callgate.types import Address

ENV_PREFIX = "CALLGATE_"
CONFIG_ENV = "CALLGATE_CONFIG"
NODE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

# Command-line flag for each settings path, for error messages.
CLI_FLAGS: dict[tuple[str, ...], str] = {
    ("data_dir",): "--data-dir",
    ("http",): "--http",
    ("https",): "--https",
    ("self_signed",): "--self-signed",
    ("metrics",): "--metrics",
    ("log_level",): "--log-level",
    ("database_url",): "--database-url",
    ("node_id",): "--node-id",
    ("redis_url",): "--redis-url",
    ("region",): "--region",
    ("turn", "listen"): "--listen",
    ("turn", "tls_listen"): "--tls-listen",
    ("turn", "cert"): "--cert",
    ("turn", "key"): "--key",
    ("turn", "relay_ip"): "--relay-ip",
    ("turn", "relay_ip6"): "--relay-ip",
    ("turn", "relay_ports"): "--relay-ports",
    ("turn", "realm"): "--realm",
    ("turn", "users"): "--user",
    ("turn", "auth_secret"): "--auth-secret",
    ("turn", "allow_peers"): "--allow-peer",
    ("turn", "max_allocations_per_user"): "--max-allocations-per-user",
    ("turn", "max_allocations"): "--max-allocations",
    ("turn", "bandwidth"): "--bandwidth",
    ("monitor", "interface"): "--monitor",
    ("sip", "listen"): "--sip-listen",
    ("sip", "tls_listen"): "--sip-tls-listen",
}


# ---- parsing helpers (raise ValueError with a message that never echoes secrets) ----


def parse_ip(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise ValueError(f"expected an IP address, got {text!r}") from None


def parse_hostport(text: str) -> Address:
    """'127.0.0.1:3478', '[::1]:3478', '0.0.0.0:0' -> (host, port); host must be an IP address."""
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]:")
        ok_shape = bool(sep)
    else:
        host, sep, rest = text.rpartition(":")
        ok_shape = bool(sep) and ":" not in host
    if not ok_shape or not rest.isdigit() or not host:
        raise ValueError(f"expected HOST:PORT (IPv6 as [ADDR]:PORT), got {text!r}")
    port = int(rest)
    if port > 65535:
        raise ValueError(f"port out of range 0-65535 in {text!r}")
    return (parse_ip(host), port)


def parse_port_range(text: str) -> tuple[int, int]:
    """'49152-65535' -> (49152, 65535), with 1 <= MIN <= MAX <= 65535."""
    low, sep, high = text.strip().partition("-")
    if not sep or not low.strip().isdigit() or not high.strip().isdigit():
        raise ValueError(f"expected MIN-MAX, got {text!r}")
    pmin, pmax = int(low), int(high)
    if not 1 <= pmin <= pmax <= 65535:
        raise ValueError(f"expected 1 <= MIN <= MAX <= 65535, got {text!r}")
    return (pmin, pmax)


def parse_user(text: str) -> tuple[str, str]:
    """'NAME:PASSWORD' -> (name, password). The password may contain ':'; the name may not."""
    name, sep, password = text.partition(":")
    if not sep or not name.strip() or not password:
        # Never echo the value: it holds a password.
        raise ValueError("expected NAME:PASSWORD with a non-empty name and password")
    return (name.strip(), password)


def parse_cidr(text: str) -> str:
    """'10.0.0.0/8', '::1', '192.168.1.7/32' -> normalized network text (host bits must be 0)."""
    try:
        return str(ipaddress.ip_network(text.strip(), strict=True))
    except ValueError as exc:
        raise ValueError(f"expected a CIDR such as 10.0.0.0/8 or ::1/128: {exc}") from None


# ---- list fields: TOML arrays, JSON arrays in env, or comma-separated env values ----


def _as_list(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except json.JSONDecodeError:
                raise ValueError("not a valid JSON array") from None
        return [item.strip() for item in text.split(",") if item.strip()]
    return value


def _each(parse: Any) -> Any:
    def run(value: Any) -> Any:
        value = _as_list(value)
        if not isinstance(value, list | tuple):
            raise ValueError("expected a list")
        return [parse(v) if isinstance(v, str) else v for v in value]

    return run


def _users(value: Any) -> Any:
    if isinstance(value, Mapping):  # TOML table: [turn.users] alice = "secret"
        return {str(k): v for k, v in value.items()}
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    users: dict[str, str] = {}
    for item in _as_list(value):
        text = item.get_secret_value() if isinstance(item, SecretStr) else item
        if not isinstance(text, str):
            raise ValueError("expected NAME:PASSWORD strings")
        name, password = parse_user(text)
        users[name] = password
    return users


AddressList = Annotated[list[Address], NoDecode, BeforeValidator(_each(parse_hostport))]
CidrList = Annotated[list[str], NoDecode, BeforeValidator(_each(parse_cidr))]
UserMap = Annotated[dict[str, SecretStr], NoDecode, BeforeValidator(_users)]
HostPort = Annotated[
    Address, BeforeValidator(lambda v: parse_hostport(v) if isinstance(v, str) else v)
]
OptAddress = Annotated[
    Address | None, BeforeValidator(lambda v: parse_hostport(v) if isinstance(v, str) else v)
]
PortRange = Annotated[
    tuple[int, int], BeforeValidator(lambda v: parse_port_range(v) if isinstance(v, str) else v)
]


class CallSettings(BaseModel):
    """The `[calls]` table / `CALLGATE_CALLS__*`: how `callgate serve` runs calls."""

    model_config = ConfigDict(extra="forbid")

    # "relay": media must cross our relays (non-relay candidates are stripped server-side);
    # "all": direct paths allowed. Per-user policy arrives with the control plane.
    ice_policy: Literal["relay", "all"] = "relay"
    ring_timeout: float = Field(default=30.0, gt=0, le=600)
    setup_timeout: float = Field(default=10.0, gt=0, le=120)
    silence_timeout: float = Field(default=8.0, gt=0, le=300)
    # How long a SIP party may hold a call (re-INVITE, RFC 3264 §8.4) before the server ends it
    # `hold-timeout`: a held party sends no media, so no watchdog notices one that vanished.
    max_hold_s: float = Field(default=7200.0, ge=60, le=86400)
    # Lifetime of the TURN REST credentials handed out in `hello`.
    credential_ttl: int = Field(default=600, ge=60, le=86400)
    # Per account: signaling sockets open at once (more are closed with 4429), and call attempts
    # (call.invite) per minute, in bursts of as many (more are refused `rate-limited`, no record).
    max_devices_per_user: int = Field(default=10, ge=1, le=1000)
    call_attempts_per_minute: int = Field(default=30, ge=1, le=10_000)


class AuditSettings(BaseModel):
    """The `[audit]` table / `CALLGATE_AUDIT__*`: the audit log's signed checkpoints."""

    model_config = ConfigDict(extra="forbid")

    # `callgate serve` signs a checkpoint this often (seconds) when the log has grown; 0 = never.
    checkpoint_interval_s: float = Field(default=60.0, ge=0, le=7 * 86400)
    # The Ed25519 signing key (PKCS#8 PEM, created 0600 when missing); default
    # DATA_DIR/keys/audit-ed25519.pem.
    key_file: Path | None = None


class ArchiveSettingsModel(BaseModel):
    """`[recording.archive]` / `CALLGATE_RECORDING__ARCHIVE__*`: the WORM copy of closed recordings
    in an S3 bucket with Object Lock (`serve`, `callgate recording archive`; docs/recording.md). Off while
    `bucket` is unset. Credentials come from boto3's usual chain (AWS_ACCESS_KEY_ID and
    AWS_SECRET_ACCESS_KEY, ~/.aws/credentials, an instance role), never from this file."""

    model_config = ConfigDict(extra="forbid")

    # An existing bucket created with Object Lock enabled; anything else is refused.
    bucket: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    # The S3 API's URL (MinIO, Ceph, …); default AWS. Plain http only to a loopback host.
    endpoint_url: str | None = Field(default=None, max_length=2048)
    region: str = Field(default="us-east-1", pattern=r"^[a-z0-9-]{1,32}$")
    # Objects go to PREFIX<recording id>/recording.cgrec and …/metadata.json.
    prefix: str = Field(default="callgate/recordings/", pattern=r"^[A-Za-z0-9!_.*'()/-]{0,200}$")
    # `callgate serve` archives what has closed this often (seconds); 0 = only by
    # `callgate recording archive`.
    interval_s: float = Field(default=600.0, ge=0, le=7 * 86400)
    # While it archives, serve looks this often (seconds) for a legal hold put or lifted by any
    # path — the CLI on the store, another server, the API — and mirrors it to S3 at once.
    hold_check_s: float = Field(default=2.0, ge=0.2, le=300)
    # /healthz says `degraded` (still 200: calls go on) once a closed recording has waited this
    # long for its copy; keep it above interval_s.
    max_lag_s: float = Field(default=3600.0, gt=0, le=30 * 86400)

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s)://HOST[:PORT] URL")
        if parts.scheme == "http" and not _loopback(parts.hostname):
            raise ValueError("plain http only to a loopback host; use https")
        return value


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class RecordingSettingsModel(BaseModel):
    """The `[recording]` table / `CALLGATE_RECORDING__*`: compliance recording (docs/recording.md)."""

    model_config = ConfigDict(extra="forbid")

    # Where recording files go; default DATA_DIR/recordings.
    directory: Path | None = None
    # The master key file (base64, 0600, created when missing); default
    # DATA_DIR/keys/recording-master.key. CALLGATE_RECORDING_MASTER_KEY overrides it.
    key_file: Path | None = None
    # A chunk is not written when less than this is free: the call ends `recording-failed`.
    min_free_mb: int = Field(default=64, ge=0, le=1 << 20)
    # How often buffered packets are written (and fsynced) as one chunk.
    flush_interval_s: float = Field(default=0.5, gt=0, le=1.5)
    # A leg that has sent media and then nothing for this long fails the recording.
    silence_limit_s: float = Field(default=5.0, gt=0, le=300)
    # Calls recorded at once (each holds two peer connections on the server); beyond this a call
    # that must be recorded ends `recording-unavailable`.
    max_active: int = Field(default=100, ge=1, le=100_000)
    # Both parties of a recorded call hear two short beeps when it connects (media/prompt.py),
    # besides the `call.recording` message their clients show.
    prompt: bool = False
    # With `prompt`: this announcement instead of the beeps (16-bit PCM WAV, mono or stereo,
    # 8-48 kHz, 0.2-15 s; media/prompt_wav.py), checked when the configuration loads.
    prompt_file: Path | None = None
    # Days a recording is kept after it ends; nothing deletes it sooner, for any role (MiFID II
    # art. 16(7): 5 years, 7 on request; SEC 17a-4 / FINRA 4511: 3 to 6). Default 7 years.
    retention_days: int = Field(default=2557, ge=1, le=36525)
    # Per policy rule name, e.g. {"trading-desk" = 2557, "sales" = 1827}: recordings made under
    # that rule are kept this many days instead.
    retention_by_rule: dict[str, Annotated[int, Field(ge=1, le=36525)]] = Field(
        default_factory=dict, max_length=1000
    )
    archive: ArchiveSettingsModel = Field(default_factory=ArchiveSettingsModel)

    @field_validator("prompt_file")
    @classmethod
    def _prompt_file(cls, value: Path | None) -> Path | None:
        if value is not None:
            read_prompt_wav(value)  # PromptFileError (a ValueError) names what is wrong
        return value

    @model_validator(mode="after")
    def _prompt_file_needs_prompt(self) -> RecordingSettingsModel:
        if self.prompt_file is not None and not self.prompt:
            raise ValueError("prompt_file is set but prompt is off: set recording.prompt = true")
        return self


class LimitSettings(BaseModel):
    """The `[limits]` table / `CALLGATE_LIMITS__*`: what one account or address may do
    (docs/security.md)."""

    model_config = ConfigDict(extra="forbid")

    # POST /api/login: failures allowed per handle and per client address before a delay, which
    # starts at login_delay_s and doubles with every further failure up to login_max_delay_s.
    login_account_failures: int = Field(default=5, ge=1, le=1000)
    login_address_failures: int = Field(default=20, ge=1, le=100_000)
    login_delay_s: float = Field(default=1.0, gt=0, le=3600)
    login_max_delay_s: float = Field(default=300.0, gt=0, le=86400)
    # HTTP: a request head must arrive within http_header_timeout_s; at most
    # http_max_connections connections and requests in progress at once (more: 503).
    # WebSockets count as connections.
    http_header_timeout_s: float = Field(default=10.0, gt=0, le=300)
    http_max_connections: int = Field(default=2000, ge=1, le=1_000_000)


_IFACE = re.compile(r"[A-Za-z0-9_.:@-]{1,15}")  # IFNAMSIZ - 1, no '/' or spaces


class MonitorSettings(BaseModel):
    """The `[monitor]` table / `CALLGATE_MONITOR__*`: unmanaged-calling detection inside `serve`
    (docs/detection.md, "Inside serve")."""

    model_config = ConfigDict(extra="forbid")

    # The interface to watch (needs root / CAP_NET_RAW); unset: no monitoring. --monitor IFACE.
    interface: str | None = None
    # The networks whose hosts are reported (default: private, loopback, link-local, ULA).
    internal: CidrList = Field(default_factory=list)
    # Our relays besides this server's own TURN listeners and relay addresses: HOST:PORT.
    allow_relays: AddressList = Field(default_factory=list)
    # How often findings are computed, stored and alerted (the delay from packet to console).
    interval_s: float = Field(default=1.0, ge=0.1, le=60)
    max_flows: int = Field(default=100_000, ge=16, le=10_000_000)
    idle_timeout_s: float = Field(default=180.0, ge=0, le=86400)
    # Findings not seen for this many days are deleted (checked hourly, audited).
    retention_days: int = Field(default=90, ge=1, le=3650)
    # Alerts for fresh unsanctioned findings: RFC 5424 messages over UDP to HOST:PORT, and/or a
    # JSON POST to a URL signed with HMAC-SHA256 of webhook_secret, retried webhook_attempts times.
    syslog: OptAddress = None
    webhook_url: str | None = Field(default=None, max_length=2048)
    webhook_secret: SecretStr | None = None
    webhook_attempts: int = Field(default=5, ge=1, le=20)
    webhook_timeout_s: float = Field(default=5.0, gt=0, le=60)

    @field_validator("interface")
    @classmethod
    def _interface(cls, value: str | None) -> str | None:
        if value is not None and not _IFACE.fullmatch(value):
            raise ValueError(
                f"expected an interface name (1-15 of A-Z a-z 0-9 _ . : @ -), got {value[:32]!r}"
            )
        return value

    @field_validator("webhook_url")
    @classmethod
    def _webhook_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        parsed = urlsplit(value.strip())
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError("expected an http:// or https:// URL")
        if parsed.username or parsed.password:
            raise ValueError("no credentials in the URL: the request is signed with webhook_secret")
        return value.strip()

    @model_validator(mode="after")
    def _signed(self) -> MonitorSettings:
        if self.webhook_url is not None:
            if self.webhook_secret is None:
                raise ValueError("webhook_url needs webhook_secret (requests are signed)")
            if len(self.webhook_secret.get_secret_value()) < 16:
                raise ValueError("webhook_secret: at least 16 characters")
        return self


class TrunkSettings(BaseModel):
    """One `[[sip.trunks]]`: a carrier's trunk, inbound calls to DIDs (docs/sip.md, "Trunks")."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,31}$")
    # Where its INVITEs come from: they are taken without digest (IP-based trunk authentication).
    addresses: list[str] = Field(min_length=1, max_length=64)
    # E.164 number -> the callgate user it rings.
    dids: dict[str, str] = Field(default_factory=dict)
    # E.164 number -> the group (callgate group) whose members' devices all ring (ring all).
    did_groups: dict[str, Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")]] = Field(
        default_factory=dict
    )
    # Dialling out: where the carrier takes INVITEs (UDP), who may dial numbers through it (the
    # members of these groups; none: nobody — emergency numbers are always let through), and
    # the number presented as the caller.
    outbound: OptAddress = None
    dial_out_groups: list[str] = Field(default_factory=list)
    caller_id: str | None = Field(default=None, pattern=r"^\+[1-9][0-9]{1,14}$")
    # The dial plan (docs/sip.md, "Dial plan"): the E.164 prefixes this trunk carries (none:
    # any number; the longest match wins), the country whose national numbers it reads
    # ("0…" with national_prefix "0"), and how the carrier wants numbers.
    routes: list[Annotated[str, Field(pattern=r"^\+[0-9]{0,15}$")]] = Field(
        default_factory=list, max_length=256
    )
    country_code: str | None = Field(default=None, pattern=r"^[1-9][0-9]{0,2}$")
    national_prefix: str = Field(default="0", pattern=r"^[0-9]{1,3}$")
    number_format: Literal["e164", "national"] = "e164"
    # Toll-fraud guard (docs/sip.md, "Trunk limits"): calls at once (both ways; past it 486)
    # and new calls a second (past it 503 + Retry-After).
    max_calls: int = Field(default=30, ge=1, le=100_000)
    max_cps: float = Field(default=5.0, gt=0, le=10_000)
    # Each user's share when dialling out (phones and softphones): calls at once (past it 403)
    # and calls in any hour (past it 503 + Retry-After); emergency numbers are never refused.
    max_calls_per_user: int = Field(default=3, ge=1, le=10_000)
    max_calls_per_user_hour: int = Field(default=100, ge=1, le=100_000)
    # OPTIONS pings to `outbound` (RFC 3261 §11): seconds between them (0: none), and how many
    # in a row unanswered mark the carrier down (the dial plan then prefers another trunk).
    options_interval: float = Field(default=30.0, ge=0, le=3600)
    options_failures: int = Field(default=2, ge=1, le=100)
    # Our account at the carrier: its 401/407 challenges to our INVITEs are answered with it
    # (digest, RFC 8760). The password is never logged; keep the config file private.
    username: str | None = Field(default=None, pattern=r"^[!#-\[\]-~]{1,128}$")
    password: SecretStr | None = None
    # The emergency numbers put through to this carrier whatever the rules say (flagged). The
    # default is its country's (country_code: e.g. 44 -> 999, 112), else 112 and 911: a code
    # that is an emergency number elsewhere may be a chargeable service in this network.
    emergency: list[Annotated[str, Field(pattern=r"^[0-9]{2,4}$")]] | None = Field(
        default=None, max_length=16
    )
    # Media towards this carrier (docs/sip.md, "SRTP towards carriers"): "required" offers only
    # RTP/SAVP with our SDES key (RFC 4568, AES_CM_128_HMAC_SHA1_80) on calls we dial through it,
    # ends a call whose answer is not SRTP under our key's tag, and refuses its plain RTP
    # INVITEs (488); "off": plain RTP offered, its SRTP offers taken.
    srtp: Literal["off", "required"] = "off"

    @model_validator(mode="after")
    def _account(self) -> TrunkSettings:
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")
        if 0 < self.options_interval < 1:
            raise ValueError("options_interval is 0 (no pings) or at least 1 second")
        both = sorted(set(self.dids) & set(self.did_groups))
        if both:
            raise ValueError(f"DID {both[0]} is in both dids and did_groups: one or the other")
        return self

    @field_validator("addresses")
    @classmethod
    def _ips(cls, value: list[str]) -> list[str]:
        return [parse_ip(v) for v in value]

    @field_validator("srtp", mode="before")
    @classmethod
    def _srtp(cls, value: object, info: ValidationInfo) -> object:
        if value not in ("off", "required"):  # the error names the trunk (its index does not)
            name = info.data.get("name", "?")
            raise ValueError(f'trunk {name!r}: "off" or "required", not {str(value)[:32]!r}')
        return value

    @field_validator("dids", "did_groups")
    @classmethod
    def _e164(cls, value: dict[str, str]) -> dict[str, str]:
        for number in value:
            if not re.fullmatch(r"\+[1-9][0-9]{1,14}", number):
                raise ValueError(f"DID {number!r} is not E.164 (+ country code, ≤ 15 digits)")
        return value


DigestAlgorithm = Literal["SHA-256", "MD5"]
DIGEST_DEFAULT: tuple[DigestAlgorithm, ...] = ("SHA-256", "MD5")


class SipSettings(BaseModel):
    """The `[sip]` table / `CALLGATE_SIP__*`: the SIP edge of `callgate serve` (docs/sip.md)."""

    model_config = ConfigDict(extra="forbid")

    # Each address gets a UDP and a TCP listener; none (the default): no SIP edge.
    listen: AddressList = Field(default_factory=list)
    # SIP over TLS listeners (RFC 3261 §26.2.1), with turn.cert/turn.key or --self-signed.
    tls_listen: AddressList = Field(default_factory=list)
    trunks: list[TrunkSettings] = Field(default_factory=list, max_length=100)
    # The digest realm phones authenticate in (their credentials are bound to it); default: the
    # TURN realm.
    realm: str | None = Field(default=None, min_length=1, max_length=255)
    # Digest algorithms offered, preferred first, one WWW-Authenticate each (RFC 8760 §2.3).
    # Clients that answer only the first challenge and know only MD5 (SIPp, older phones) need
    # MD5 first; dropping MD5 refuses them.
    algorithms: list[DigestAlgorithm] = Field(
        default_factory=lambda: list(DIGEST_DEFAULT), min_length=1, max_length=2
    )

    # The IP put in SDP for calls' RTP and bound for it; default: the address the phone's
    # INVITE arrived on (set it when listening on 0.0.0.0).
    media_ip: str | None = None
    # Ranges phones' and carriers' media may be sent to on top of turn.allow_peers (the relay's
    # filter judges every SDP address; turn.deny_peers still wins): desk phones on a private LAN.
    allow_media: CidrList = Field(default_factory=list)
    # Seconds between the keep-alives of phones registering with SIP Outbound (RFC 5626 §5.4,
    # the `Flow-Timer` we answer): keep it under the UDP timeout of the NATs phones sit behind.
    flow_timer: int = Field(default=25, ge=1, le=3600)
    # The most users a trunk DID's ring group may ring: each member costs a presence lookup, a
    # policy decision and an SDP offer per carrier call. A DID whose group has more members is
    # refused at start; a group that grows past it later has its calls refused (503, CDR
    # `policy_rule` ring-group-size).
    ring_group_max_members: int = Field(default=50, ge=1, le=1000)

    @field_validator("media_ip")
    @classmethod
    def _media_ip(cls, value: str | None) -> str | None:
        if value is None:
            return None
        ip = ipaddress.ip_address(parse_ip(value))
        if ip.version != 4 or ip.is_unspecified:
            raise ValueError("media_ip must be a specific IPv4 address (SDP: IN IP4)")
        return str(ip)

    @field_validator("algorithms")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("each algorithm at most once")
        return value


class TurnSettings(BaseModel):
    """The `[turn]` table / `CALLGATE_TURN__*`: everything TurnConfig holds."""

    model_config = ConfigDict(extra="forbid")

    listen: AddressList = Field(default_factory=lambda: [("127.0.0.1", 3478)])
    tls_listen: AddressList = Field(default_factory=list)
    # The name clients are given in `turns:` URLs (it must match the certificate); default: the
    # TLS listener's address (or relay_ip when it listens on a wildcard).
    tls_name: str | None = Field(default=None, min_length=1, max_length=253)
    cert: Path | None = None
    key: Path | None = None
    relay_ip: str | None = None
    relay_ip6: str | None = None
    relay_ports: PortRange = (49152, 65535)
    realm: str = Field(default="callgate", min_length=1, max_length=763)
    users: UserMap = Field(default_factory=dict)
    auth_secret: SecretStr | None = None
    allow_peers: CidrList = Field(default_factory=list)
    deny_peers: CidrList = Field(default_factory=list)
    default_lifetime: int = Field(default=600, ge=1)
    max_lifetime: int = Field(default=3600, ge=1)
    permission_lifetime: int = Field(default=300, ge=1)
    channel_lifetime: int = Field(default=600, ge=1)
    nonce_lifetime: int = Field(default=600, ge=1)
    max_allocations_per_user: int = Field(default=10, ge=0)
    max_allocations: int = Field(default=0, ge=0)
    bandwidth: int = Field(default=0, ge=0, description="bytes/s per allocation, 0 = no cap")
    software: str | None = "callgate"
    # Kernel fast path for channel data (docs/relay-fast-path.md).
    fast_path: Literal["auto", "off", "required"] = Field(
        default="auto", description="eBPF forwarding of channel data: auto, off or required"
    )
    # Relay processes of `callgate turn` (runtime/relay_workers.py): one per core to use them all.
    workers: int = Field(
        default=1, ge=1, le=64, description="relay processes of `callgate turn` (SO_REUSEPORT)"
    )
    # Permissions only toward the other party of a live call. None: on with `serve` (which has
    # the call engine), off with `callgate turn` (which has none and refuses `true`).
    call_bound: bool | None = Field(
        default=None,
        description="permissions only toward the other party of a live call (default: on with "
        "serve; `callgate turn` cannot)",
    )

    @field_validator("relay_ip")
    @classmethod
    def _relay_ip(cls, value: str | None) -> str | None:
        if value is None:
            return None
        ip = ipaddress.ip_address(parse_ip(value))
        if ip.version != 4:
            raise ValueError("relay_ip must be IPv4 (use relay_ip6 for IPv6)")
        return str(ip)

    @field_validator("relay_ip6")
    @classmethod
    def _relay_ip6(cls, value: str | None) -> str | None:
        if value is None:
            return None
        ip = ipaddress.ip_address(parse_ip(value))
        if ip.version != 6:
            raise ValueError("relay_ip6 must be an IPv6 address")
        return str(ip)

    @field_validator("software")
    @classmethod
    def _software(cls, value: str | None) -> str | None:
        return value or None  # "" = omit the SOFTWARE attribute

    @field_validator("listen")
    @classmethod
    def _some_listener(cls, value: list[Address]) -> list[Address]:
        if not value:
            raise ValueError("at least one listener is needed")
        return value

    @model_validator(mode="after")
    def _coherent(self) -> TurnSettings:
        if (self.cert is None) != (self.key is None):
            raise ValueError("--cert and --key go together")
        if self.default_lifetime > self.max_lifetime:
            raise ValueError("default_lifetime is larger than max_lifetime")
        return self


# The TOML document being loaded, handed to the settings source below.
_toml_data: ContextVar[dict[str, Any] | None] = ContextVar("callgate_toml_data", default=None)


class _EnvSource(EnvSettingsSource):
    """Environment values: JSON when they parse as JSON, else the raw text for our validators
    (so `CALLGATE_TURN__ALLOW_PEERS=10.0.0.0/8,::1` and `CALLGATE_HTTP=[::1]:8080` work)."""

    def decode_complex_value(self, field_name: str, field: FieldInfo, value: Any) -> Any:
        try:
            return json.loads(value)
        except (TypeError, ValueError):
            return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    data_dir: Path = Path("data")
    http: HostPort = ("127.0.0.1", 8080)
    # The app and API over TLS (serve only), with turn.cert/turn.key or a --self-signed local CA;
    # then `http` only redirects to it. Default with --self-signed: the http host, port 8443.
    https: OptAddress = None
    self_signed: bool = False
    metrics: OptAddress = None
    log_level: str = "INFO"
    database_url: str | None = None
    # Several signaling nodes (docs/scaling.md): this node's name, and the Redis server the
    # nodes exchange call signaling through. Without redis_url: one node, as before.
    node_id: str | None = None
    redis_url: SecretStr | None = None
    # With redis_url, on a node: the node key (a file of at least 32 random characters, mode
    # 0600, the same on every node; or CALLGATE_CLUSTER_KEY) that signs what nodes write to Redis
    # and derives each relay's key (runtime/cluster_keys.py).
    cluster_key_file: Path | None = None
    cluster_key: SecretStr | None = None
    # While the node key changes: the other node key, accepted but never used to sign
    # (docs/scaling.md, "Changing the node key").
    cluster_key_accepted_file: Path | None = None
    cluster_key_accepted: SecretStr | None = None
    # With redis_url, on a registered relay: its own relay key (a file, mode 0600, written by
    # `callgate turn --node-id ID --issue-relay-key PATH` on a node; or CALLGATE_RELAY_KEY).
    relay_key_file: Path | None = None
    relay_key: SecretStr | None = None
    # Seconds a silent node keeps its calls before another node may take them over (and, after
    # twice as long, finalize them `node-lost`): signaling/handover.py.
    node_lease: float = Field(default=10.0, ge=4.0, le=3600)
    # Separate relays (docs/scaling.md): a `callgate turn`'s region, or the region of a node's
    # clients (they are handed the relays of this region first).
    region: str = "default"
    turn: TurnSettings = Field(default_factory=TurnSettings)
    calls: CallSettings = Field(default_factory=CallSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    identity: IdentitySettings = Field(default_factory=IdentitySettings)
    recording: RecordingSettingsModel = Field(default_factory=RecordingSettingsModel)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    monitor: MonitorSettings = Field(default_factory=MonitorSettings)
    sip: SipSettings = Field(default_factory=SipSettings)

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in LOG_LEVELS:
            raise ValueError(f"expected one of {', '.join(LOG_LEVELS)}, got {value!r}")
        return level

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None  # unset (an empty CALLGATE_DATABASE_URL too): SQLite in data_dir
        check_url(value.strip())
        return value.strip()

    @field_validator("node_id")
    @classmethod
    def _node_id(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        if not NODE_ID.fullmatch(value):
            raise ValueError("1 to 64 letters, digits, '.', '_' or '-'")
        return value

    @field_validator("region")
    @classmethod
    def _region(cls, value: str) -> str:
        value = value.strip()
        if not NODE_ID.fullmatch(value):
            raise ValueError("1 to 64 letters, digits, '.', '_' or '-'")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        scheme = value.get_secret_value().strip().partition("://")[0]
        if scheme not in ("redis", "rediss", "unix"):
            raise ValueError("expected redis://HOST:PORT/DB, rediss://… or unix://PATH")
        return SecretStr(value.get_secret_value().strip())

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_source = InitSettingsSource(settings_cls, init_kwargs=_toml_data.get() or {})
        return (init_settings, _EnvSource(settings_cls), toml_source)

    @model_validator(mode="after")
    def _https(self) -> Settings:
        if self.self_signed and self.turn.cert is not None:
            raise ValueError("--self-signed makes its own certificate: not with --cert/--key")
        if self.https is not None and self.turn.cert is None and not self.self_signed:
            raise ValueError("--https needs --cert and --key, or --self-signed")
        if self.turn.tls_listen and self.turn.cert is None and not self.self_signed:
            raise ValueError("--tls-listen needs --cert and --key (or --self-signed with serve)")
        return self

    def https_address(self) -> Address | None:
        """Where the HTTPS app listens: `https`, else with --self-signed the http host on 8443."""
        if self.https is not None:
            return self.https
        return (self.http[0], 8443) if self.self_signed else None

    def sip_realm(self) -> str:
        return self.sip.realm or self.turn.realm

    def database(self) -> str:
        """The database URL: as configured, or a SQLite file in data_dir."""
        return self.database_url or sqlite_url(self.data_dir)


def option_name(loc: tuple[int | str, ...]) -> str:
    path = tuple(str(part) for part in loc if isinstance(part, str))
    dotted = ".".join(path) or "settings"
    env = ENV_PREFIX + "__".join(path).upper()
    flag = CLI_FLAGS.get(path)
    return f"{dotted} ({flag}, {env})" if flag else f"{dotted} ({env})"


def _config_error(exc: ValidationError) -> ConfigError:
    lines = []
    for err in exc.errors(include_input=False, include_url=False):
        message = str(err["msg"]).removeprefix("Value error, ")
        lines.append(f"invalid {option_name(tuple(err['loc']))}: {message}")
    return ConfigError("; ".join(lines))


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"--config: file not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"--config: cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--config: {path} is not valid TOML: {exc}") from None


def load_settings(
    config_file: Path | None = None, overrides: Mapping[str, Any] | None = None
) -> Settings:
    """Build Settings from the config file (or CALLGATE_CONFIG), the environment and `overrides`.

    `overrides` are command-line values (None and empty lists mean "not given" and are dropped).
    """
    if config_file is None and os.environ.get(CONFIG_ENV):
        config_file = Path(os.environ[CONFIG_ENV])
    data = read_config_file(config_file) if config_file is not None else {}
    token = _toml_data.set(data)
    try:
        return Settings(**_given(overrides or {}))
    except ValidationError as exc:
        raise _config_error(exc) from None
    except SettingsError as exc:
        raise ConfigError(f"invalid environment value: {exc}") from None
    finally:
        _toml_data.reset(token)


def _given(values: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            nested = _given(value)
            if nested:
                out[key] = nested
        elif value is not None and value != [] and value != ():
            out[key] = value
    return out


def turn_config(settings: Settings) -> TurnConfig:
    """The frozen TurnConfig the server runs with."""
    turn = settings.turn
    return TurnConfig(
        listen=tuple(turn.listen),
        tls_listen=tuple(turn.tls_listen),
        tls_name=turn.tls_name,
        cert_file=str(turn.cert) if turn.cert else None,
        key_file=str(turn.key) if turn.key else None,
        relay_ip=turn.relay_ip,
        relay_ip6=turn.relay_ip6,
        relay_port_min=turn.relay_ports[0],
        relay_port_max=turn.relay_ports[1],
        realm=turn.realm,
        users={name: pw.get_secret_value() for name, pw in turn.users.items()},
        auth_secret=turn.auth_secret.get_secret_value() if turn.auth_secret else None,
        allow_peers=tuple(turn.allow_peers),
        deny_peers=tuple(turn.deny_peers),
        default_lifetime=turn.default_lifetime,
        max_lifetime=turn.max_lifetime,
        permission_lifetime=turn.permission_lifetime,
        channel_lifetime=turn.channel_lifetime,
        nonce_lifetime=turn.nonce_lifetime,
        max_allocations_per_user=turn.max_allocations_per_user,
        max_allocations_total=turn.max_allocations,
        max_bandwidth_per_allocation=turn.bandwidth,
        software=turn.software,
        call_bound=bool(turn.call_bound),
        fast_path=turn.fast_path,
    )
