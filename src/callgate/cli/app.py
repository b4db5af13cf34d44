"""The `callgate` command: `serve` and `turn` here, and every command group registered below,
explicitly and in the order `--help` lists them: `user` (users.py), `group` (groups.py), `policy`
(policy.py), `cdr` and `audit` (cdr.py, audit.py, with `export` from export.py), `retention`
(retention.py), `detect` and `monitor` (detect.py), and the client's `login`/`call`/`answer`… (client.py).

Options override the environment (CALLGATE_*), which overrides the config file (--config); see
README.md "Configuration". Errors in options exit with code 2 and a message naming the option.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from callgate import __version__
from callgate.cli.audit import audit_app
from callgate.cli.cdr import cdr_app
from callgate.cli.client import register as register_client
from callgate.cli.common import ConfigOpt, err, fail, settings_from
from callgate.cli.detect import detect_command, monitor_command
from callgate.cli.export import audit_export, cdr_export
from callgate.cli.groups import group_app
from callgate.cli.policy import policy_app
from callgate.cli.recording import recording_app
from callgate.cli.recording_keep import register as register_recording_keep
from callgate.cli.retention import retention_app
from callgate.cli.sip import sip_app
from callgate.cli.users import user_app
from callgate.errors import ConfigError, StorageError

if TYPE_CHECKING:
    from callgate.config import Settings

__all__ = ["app", "err", "fail", "main", "settings_from"]

app = typer.Typer(
    name="callgate",
    help="Enterprise voice calling with its own STUN/TURN relay.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
cdr_app.command("export")(cdr_export)  # after `cdr list`/`show`: --help lists them in this order
audit_app.command("export")(audit_export)
app.add_typer(user_app, name="user")
app.add_typer(group_app, name="group")
app.add_typer(policy_app, name="policy")
app.add_typer(cdr_app, name="cdr")
app.add_typer(audit_app, name="audit")
app.add_typer(retention_app, name="retention")
register_recording_keep(recording_app)
app.add_typer(recording_app, name="recording")
app.add_typer(sip_app, name="sip")
app.command("detect")(detect_command)
app.command("monitor")(monitor_command)

# ---- options shared by `turn` and `serve` ----
ListenOpt = Annotated[
    list[str] | None,
    typer.Option("--listen", metavar="HOST:PORT", help="STUN/TURN listener, UDP and TCP; repeat."),
]
SipListenOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--sip-listen", metavar="HOST:PORT", help="SIP edge listener, UDP and TCP; repeat."
    ),
]
SipTlsListenOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--sip-tls-listen",
        metavar="HOST:PORT",
        help="SIP over TLS listener (--cert/--key); repeat.",
    ),
]
TlsListenOpt = Annotated[
    list[str] | None,
    typer.Option("--tls-listen", metavar="HOST:PORT", help="TURN over TLS listener; repeat."),
]
CertOpt = Annotated[
    Path | None,
    typer.Option("--cert", help="TLS certificate chain (PEM) of --https and --tls-listen."),
]
KeyOpt = Annotated[Path | None, typer.Option("--key", help="TLS private key (PEM).")]
RelayIpOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--relay-ip",
        metavar="IP",
        help="Address of relay sockets; repeat with an IPv6 address for IPv6 allocations (RFC 6156).",
    ),
]
RelayPortsOpt = Annotated[
    str | None,
    typer.Option(
        "--relay-ports", metavar="MIN-MAX", help="Relay port range (default 49152-65535)."
    ),
]
RealmOpt = Annotated[str | None, typer.Option("--realm", help="Auth realm (default callgate).")]
UserOpt = Annotated[
    list[str] | None,
    typer.Option("--user", metavar="NAME:PASSWORD", help="Static long-term user; repeat."),
]
SecretOpt = Annotated[
    str | None,
    typer.Option(
        "--auth-secret",
        metavar="SECRET",
        help="TURN REST shared secret (coturn use-auth-secret). Prefer the env/config file.",
    ),
]
AllowPeerOpt = Annotated[
    list[str] | None,
    typer.Option("--allow-peer", metavar="CIDR", help="Open the peer filter for CIDR; repeat."),
]
MetricsOpt = Annotated[
    str | None,
    typer.Option("--metrics", metavar="HOST:PORT", help="Serve Prometheus /metrics here."),
]
PerUserOpt = Annotated[
    int | None,
    typer.Option(
        "--max-allocations-per-user", help="Allocations per user, 0 = no limit (default 10)."
    ),
]
MaxAllocOpt = Annotated[
    int | None,
    typer.Option("--max-allocations", help="Allocations in total, 0 = no limit (default 0)."),
]
BandwidthOpt = Annotated[
    int | None,
    typer.Option(
        "--bandwidth", metavar="BYTES/S", help="Cap per allocation, 0 = none (default 0)."
    ),
]
WorkersOpt = Annotated[
    int | None,
    typer.Option(
        "--workers",
        min=1,
        max=64,
        help="Relay processes sharing the listeners (SO_REUSEPORT), e.g. one per core (default 1).",
    ),
]
FastPathOpt = Annotated[
    str | None,
    typer.Option(
        "--fast-path",
        metavar="auto|off|required",
        help="Kernel (eBPF) forwarding of channel data (default auto: on when clang, libbpf and "
        "root allow it; the start-up log says which and why).",
    ),
]
LogLevelOpt = Annotated[
    str | None, typer.Option("--log-level", help="DEBUG, INFO, WARNING, ERROR (default INFO).")
]
DataDirOpt = Annotated[
    Path | None,
    typer.Option("--data-dir", metavar="DIR", help="SQLite store and keys (default ./data)."),
]
HttpOpt = Annotated[
    str | None,
    typer.Option("--http", metavar="HOST:PORT", help="HTTP app (default 127.0.0.1:8080)."),
]
HttpsOpt = Annotated[
    str | None,
    typer.Option(
        "--https",
        metavar="HOST:PORT",
        help="HTTPS app and API with --cert/--key (or --self-signed); --http then redirects to it.",
    ),
]
SelfSignedOpt = Annotated[
    bool | None,
    typer.Option(
        "--self-signed",
        help="HTTPS (and TURN over TLS) with a local CA made in DATA_DIR/tls; prints how to trust "
        "it. For trials: production uses --cert/--key.",
        show_default=False,
    ),
]
DatabaseUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        metavar="URL",
        help="Store URL, e.g. postgresql+psycopg://USER:PASSWORD@HOST/DB (default: SQLite in "
        "--data-dir). Prefer CALLGATE_DATABASE_URL or the config file for the password.",
        show_default=False,
    ),
]


MonitorOpt = Annotated[
    str | None,
    typer.Option(
        "--monitor",
        metavar="IFACE",
        help="Watch this interface for unmanaged calling (needs root); findings on the console "
        "(Unmanaged calling), in /api/findings and the database. More in the [monitor] table.",
        show_default=False,
    ),
]
NodeIdOpt = Annotated[
    str | None,
    typer.Option(
        "--node-id",
        metavar="ID",
        help="This node's name in a cluster (docs/scaling.md); its open call records are its own.",
        show_default=False,
    ),
]
RedisUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--redis-url",
        metavar="URL",
        help="redis://HOST:PORT/DB the signaling nodes exchange calls through (needs --node-id; "
        "default: one node alone). Prefer CALLGATE_REDIS_URL for a password.",
        show_default=False,
    ),
]
RegionOpt = Annotated[
    str | None,
    typer.Option(
        "--region",
        metavar="NAME",
        help="Region of this relay (turn) or of this node's clients (serve): clients are handed "
        "the registered relays of their region first (docs/scaling.md; default 'default').",
        show_default=False,
    ),
]
TurnNodeIdOpt = Annotated[
    str | None,
    typer.Option(
        "--node-id",
        metavar="ID",
        help="This relay's id among the registered relays (with --redis-url; docs/scaling.md).",
        show_default=False,
    ),
]
TurnRedisOpt = Annotated[
    str | None,
    typer.Option(
        "--redis-url",
        metavar="URL",
        help="Register this relay with the signaling nodes through this Redis (needs --node-id, "
        "--database-url and the nodes' turn.auth_secret). Prefer CALLGATE_REDIS_URL.",
        show_default=False,
    ),
]
DrainOpt = Annotated[
    bool,
    typer.Option(
        "--drain",
        help="Drain the running registered relay --node-id: it refuses new allocations, lets its "
        "calls finish, then exits; this command waits until it has.",
    ),
]
IssueKeyOpt = Annotated[
    Path | None,
    typer.Option(
        "--issue-relay-key",
        metavar="PATH",
        help="On a node (cluster_key_file set): write relay --node-id's own key to PATH (a new "
        "file, mode 0600), for its relay_key_file; then exit.",
    ),
]


def relay_overrides(**options: Any) -> dict[str, Any]:
    """CLI values in the shape of Settings (None = not given)."""
    top_keys = (
        "metrics",
        "log_level",
        "data_dir",
        "http",
        "https",
        "self_signed",
        "database_url",
        "node_id",
        "redis_url",
        "region",
    )
    top = {key: options.pop(key, None) for key in top_keys}
    sip = {
        "listen": options.pop("sip_listen", None),
        "tls_listen": options.pop("sip_tls_listen", None),
    }
    turn = {
        "listen": options["listen"],
        "tls_listen": options["tls_listen"],
        "cert": options["cert"],
        "key": options["key"],
        **_relay_ips(options["relay_ip"]),
        "relay_ports": options["relay_ports"],
        "realm": options["realm"],
        "users": options["user"],
        "auth_secret": options["auth_secret"],
        "allow_peers": options["allow_peer"],
        "max_allocations_per_user": options["max_allocations_per_user"],
        "max_allocations": options["max_allocations"],
        "bandwidth": options["bandwidth"],
        "workers": options.pop("workers", None),
        "fast_path": options["fast_path"],
    }
    return {**top, "turn": turn, "sip": sip}


def _relay_ips(values: list[str] | None) -> dict[str, str | None]:
    """Sort repeated --relay-ip values into the IPv4 and IPv6 relay addresses."""
    v4 = [v for v in values or [] if ":" not in v]
    v6 = [v for v in values or [] if ":" in v]
    if len(v4) > 1 or len(v6) > 1:
        raise fail("--relay-ip: give at most one IPv4 and one IPv6 address")
    return {"relay_ip": v4[0] if v4 else None, "relay_ip6": v6[0] if v6 else None}


def version_callback(value: bool) -> None:
    if value:
        typer.echo(f"callgate {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=version_callback, is_eager=True, help="Show version."),
    ] = False,
) -> None:
    """callgate: calling that IT can run, control and audit."""


def _run_foreground(settings: Settings, command: str) -> None:
    from callgate import runtime  # imported late: `user` and --help stay fast

    runtime.setup_logging(settings.log_level)
    main = runtime.run_turn if command == "turn" else runtime.run_serve
    try:
        runtime.run(lambda: main(settings))
    except (OSError, StorageError, ConfigError) as exc:
        raise fail(f"callgate {command}: {exc}", code=1) from None


@app.command()
def turn(
    listen: ListenOpt = None,
    relay_ip: RelayIpOpt = None,
    relay_ports: RelayPortsOpt = None,
    realm: RealmOpt = None,
    user: UserOpt = None,
    auth_secret: SecretOpt = None,
    allow_peer: AllowPeerOpt = None,
    metrics: MetricsOpt = None,
    config: ConfigOpt = None,
    tls_listen: TlsListenOpt = None,
    cert: CertOpt = None,
    key: KeyOpt = None,
    max_allocations_per_user: PerUserOpt = None,
    max_allocations: MaxAllocOpt = None,
    bandwidth: BandwidthOpt = None,
    workers: WorkersOpt = None,
    fast_path: FastPathOpt = None,
    log_level: LogLevelOpt = None,
    node_id: TurnNodeIdOpt = None,
    redis_url: TurnRedisOpt = None,
    region: RegionOpt = None,
    database_url: DatabaseUrlOpt = None,
    drain: DrainOpt = False,
    issue_relay_key: IssueKeyOpt = None,
) -> None:
    """Run the STUN/TURN relay alone, in the foreground (SIGTERM/SIGINT stop it); registered
    with the signaling nodes when given --node-id and --redis-url (docs/scaling.md)."""
    options = dict(locals())
    options.pop("config")
    options.pop("drain")
    options.pop("issue_relay_key")
    settings = settings_from(config, relay_overrides(**options, data_dir=None, http=None))
    if issue_relay_key is not None:
        _issue_relay_key(settings, issue_relay_key)
        return
    if drain:
        _drain(settings)
        return
    _run_foreground(settings, "turn")


def _drain(settings: Settings) -> None:
    from callgate import runtime
    from callgate.runtime.relay_cluster import drain as drain_relay

    def say(line: str) -> None:
        typer.echo(line)

    try:
        runtime.run(lambda: _drained(drain_relay(settings, None, say)))
    except ConfigError as exc:
        raise fail(f"callgate turn --drain: {exc}", code=1) from None
    except OSError as exc:
        raise fail(f"callgate turn --drain: Redis: {exc}", code=1) from None


def _issue_relay_key(settings: Settings, path: Path) -> None:
    from callgate.runtime.cluster_seal import issue_relay_key

    if settings.node_id is None:
        raise fail("callgate turn --issue-relay-key: needs --node-id (the relay's id)", code=1)
    try:
        issue_relay_key(settings, settings.node_id, path)
    except ConfigError as exc:
        raise fail(f"callgate turn --issue-relay-key: {exc}", code=1) from None
    typer.echo(
        f"wrote relay {settings.node_id}'s key to {path} (mode 0600): copy it to that relay's "
        "machine as its relay_key_file (CALLGATE_RELAY_KEY_FILE)"
    )


async def _drained(waiting: Any) -> None:
    await waiting


@app.command()
def serve(
    data_dir: DataDirOpt = None,
    http: HttpOpt = None,
    https: HttpsOpt = None,
    self_signed: SelfSignedOpt = None,
    database_url: DatabaseUrlOpt = None,
    node_id: NodeIdOpt = None,
    redis_url: RedisUrlOpt = None,
    listen: ListenOpt = None,
    relay_ip: RelayIpOpt = None,
    relay_ports: RelayPortsOpt = None,
    realm: RealmOpt = None,
    user: UserOpt = None,
    auth_secret: SecretOpt = None,
    allow_peer: AllowPeerOpt = None,
    metrics: MetricsOpt = None,
    config: ConfigOpt = None,
    tls_listen: TlsListenOpt = None,
    cert: CertOpt = None,
    key: KeyOpt = None,
    max_allocations_per_user: PerUserOpt = None,
    max_allocations: MaxAllocOpt = None,
    bandwidth: BandwidthOpt = None,
    fast_path: FastPathOpt = None,
    log_level: LogLevelOpt = None,
    monitor: MonitorOpt = None,
    sip_listen: SipListenOpt = None,
    sip_tls_listen: SipTlsListenOpt = None,
    region: RegionOpt = None,
) -> None:
    """Run everything on one box: SQLite store, TURN relay, calling (/ws), REST API, metrics."""
    options = dict(locals())
    options.pop("config")
    options.pop("monitor")
    overrides = relay_overrides(**options)
    overrides["monitor"] = {"interface": monitor}
    settings = settings_from(config, overrides)
    if settings.redis_url is not None and settings.node_id is None:
        # a bad setting (exit 2), checked here: other commands may share CALLGATE_REDIS_URL
        raise fail("invalid redis_url (--redis-url): needs --node-id, each node has its own")
    _run_foreground(settings, "serve")


def main() -> None:
    app()


register_client(app)
