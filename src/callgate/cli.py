"""The `callgate` command line: `serve`, `turn`, `user add|list|remove`.

Options override the environment (CALLGATE_*), which overrides the config file (--config); see
README.md "Configuration". Errors in options exit with code 2 and a message naming the option.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from callgate import __version__
from callgate.config import Settings, load_settings
from callgate.errors import ConfigError, StorageError

if TYPE_CHECKING:
    from callgate.storage.repositories import TurnUserRepository

app = typer.Typer(
    name="callgate",
    help="Enterprise voice calling with its own STUN/TURN relay.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
user_app = typer.Typer(help="Static TURN users (long-term credentials) stored in the database.")
app.add_typer(user_app, name="user")
err = Console(stderr=True)

# ---- options shared by `turn` and `serve` ----
ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", help="TOML config file (env CALLGATE_CONFIG).", show_default=False),
]
ListenOpt = Annotated[
    list[str] | None,
    typer.Option("--listen", metavar="HOST:PORT", help="STUN/TURN listener, UDP and TCP; repeat."),
]
TlsListenOpt = Annotated[
    list[str] | None,
    typer.Option("--tls-listen", metavar="HOST:PORT", help="TURN over TLS listener; repeat."),
]
CertOpt = Annotated[Path | None, typer.Option("--cert", help="TLS certificate chain (PEM).")]
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


def fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def settings_from(config: Path | None, overrides: dict[str, Any]) -> Settings:
    try:
        return load_settings(config, overrides)
    except ConfigError as exc:
        raise fail(str(exc)) from None


def relay_overrides(**options: Any) -> dict[str, Any]:
    """CLI values in the shape of Settings (None = not given)."""
    top = {key: options.pop(key) for key in ("metrics", "log_level", "data_dir", "http")}
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
    }
    return {**top, "turn": turn}


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
    except (OSError, StorageError) as exc:
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
    log_level: LogLevelOpt = None,
) -> None:
    """Run the STUN/TURN relay alone, in the foreground (SIGTERM/SIGINT stop it)."""
    options = dict(locals())
    options.pop("config")
    settings = settings_from(config, relay_overrides(**options, data_dir=None, http=None))
    _run_foreground(settings, "turn")


@app.command()
def serve(
    data_dir: DataDirOpt = None,
    http: HttpOpt = None,
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
    log_level: LogLevelOpt = None,
) -> None:
    """Run everything on one box: SQLite store, TURN relay, HTTP (/healthz, /metrics)."""
    options = dict(locals())
    options.pop("config")
    settings = settings_from(config, relay_overrides(**options))
    _run_foreground(settings, "serve")


# ---- static TURN users ----


def _users(
    config: Path | None, data_dir: Path | None, realm: str | None
) -> tuple[TurnUserRepository, str]:
    from callgate.storage.db import open_store
    from callgate.storage.repositories import TurnUserRepository

    settings = settings_from(config, {"data_dir": data_dir, "turn": {"realm": realm}})
    try:
        store = open_store(settings.database())
    except StorageError as exc:
        raise fail(str(exc), code=1) from None
    return TurnUserRepository(store.sessions), settings.turn.realm


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif os.environ.get("CALLGATE_PASSWORD"):
        password = os.environ["CALLGATE_PASSWORD"]
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    if not password:
        raise fail("the password is empty")
    return password


UserDataDir = Annotated[
    Path | None, typer.Option("--data-dir", metavar="DIR", help="Data directory (default ./data).")
]
UserRealm = Annotated[
    str | None, typer.Option("--realm", help="Realm (default from config: callgate).")
]


@user_app.command("add")
def user_add(
    name: Annotated[str, typer.Argument(help="User name (no ':').")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from stdin's first line.")
    ] = False,
    replace: Annotated[bool, typer.Option("--replace", help="Overwrite an existing user.")] = False,
    realm: UserRealm = None,
    data_dir: UserDataDir = None,
    config: ConfigOpt = None,
) -> None:
    """Add a static TURN user. Password: --password-stdin, env CALLGATE_PASSWORD, or a prompt.

    Only MD5(name:realm:password) is stored (RFC 8489 §9.2.2), never the password.
    """
    from callgate.storage.repositories import UserExistsError
    from callgate.turn.auth import long_term_key

    if not name or ":" in name or len(name.encode()) > 255:
        raise fail("user name must be 1-255 bytes without ':'")
    users, realm_used = _users(config, data_dir, realm)
    password = _read_password(password_stdin)
    try:
        users.add(name, realm_used, long_term_key(name, realm_used, password), replace=replace)
    except UserExistsError:
        raise fail(f"user {name!r} exists in realm {realm_used!r} (use --replace)", 1) from None
    typer.echo(f"added user {name} (realm {realm_used})")


@user_app.command("list")
def user_list(
    realm: UserRealm = None, data_dir: UserDataDir = None, config: ConfigOpt = None
) -> None:
    """List static TURN users (of every realm unless --realm is given)."""
    users, _ = _users(config, data_dir, realm)
    records = users.list_users(realm)
    table = Table("name", "realm", "created (UTC)", box=None)
    for record in records:
        table.add_row(record.name, record.realm, record.created_at.strftime("%Y-%m-%d %H:%M:%S"))
    if not records:
        typer.echo("no users")
        return
    Console(soft_wrap=True).print(table)


@user_app.command("remove")
def user_remove(
    name: str, realm: UserRealm = None, data_dir: UserDataDir = None, config: ConfigOpt = None
) -> None:
    """Remove a static TURN user from the configured realm."""
    users, realm_used = _users(config, data_dir, realm)
    if users.remove(name, realm_used) == 0:
        raise fail(f"no user {name!r} in realm {realm_used!r}", code=1)
    typer.echo(f"removed user {name} (realm {realm_used})")


def main() -> None:
    app()
