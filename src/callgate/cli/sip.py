"""`callgate sip …`: SIP device credentials, in the store of `--data-dir` (docs/sip.md).

`sip add HANDLE DEVICE` prints the device's SIP username and a generated password once; only the
digest hashes are stored. Credentials are bound to the SIP realm (`sip.realm`, default the TURN
realm): changing it means issuing them again.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from callgate.cli.common import (
    ConfigOpt,
    JsonOpt,
    StoreDirOpt,
    fail,
    handle_arg,
    open_settings_store,
    store_settings,
    table_console,
)

if TYPE_CHECKING:
    from callgate.sip.credentials import CredentialStore

sip_app = typer.Typer(help="SIP desk phones: device credentials for the SIP edge (docs/sip.md).")

HandleArg = Annotated[str, typer.Argument(help="The callgate user.", callback=handle_arg)]


def _credentials(command: str, data_dir: StoreDirOpt, config: ConfigOpt) -> CredentialStore:
    from callgate.sip.credentials import CredentialStore  # imported late: SQLAlchemy

    settings = store_settings(command, config, {"data_dir": data_dir})
    return CredentialStore(open_settings_store(settings), settings.sip_realm())


@sip_app.command("add")
def sip_add(
    handle: HandleArg,
    device: Annotated[str, typer.Argument(help="Device name: 1-64 of a-z 0-9 . _ -")],
    srtp: Annotated[
        bool,
        typer.Option(
            "--srtp", help="Call this device with SRTP only (SDES keys, RFC 4568), never plain RTP."
        ),
    ] = False,
    data_dir: StoreDirOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A SIP credential for one of HANDLE's devices; its password is shown only now."""
    store = _credentials("sip add", data_dir, config)
    from callgate.accounts.audit import cli_actor
    from callgate.sip.credentials import CredentialError

    try:
        credential, password = store.add(handle, device, cli_actor(), srtp=srtp)
    except CredentialError as exc:
        raise fail(str(exc), code=1) from None
    out = {"username": credential.username, "password": password, "realm": credential.realm}
    if as_json:
        typer.echo(json.dumps(out))
        return
    typer.echo(
        f"SIP username {out['username']}  password {password}  realm {out['realm']}\n"
        "(the password is shown only now; the phone registers as "
        f"sip:{credential.handle}@<this server>)"
    )


@sip_app.command("list")
def sip_list(
    handle: Annotated[str | None, typer.Argument(help="Only this user's devices.")] = None,
    data_dir: StoreDirOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """SIP device credentials (never their passwords: none are kept)."""
    store = _credentials("sip list", data_dir, config)
    rows = store.list(handle_arg(handle) if handle else None)
    if as_json:
        for c in rows:
            typer.echo(
                json.dumps(
                    {
                        "username": c.username,
                        "user": c.handle,
                        "device": c.device,
                        "realm": c.realm,
                        "srtp": c.srtp,
                    }
                )
            )
        return
    table = Table("username", "user", "device", "realm", "srtp")
    for c in rows:
        table.add_row(c.username, c.handle, c.device, c.realm, "required" if c.srtp else "")
    table_console().print(table)


@sip_app.command("remove")
def sip_remove(
    username: Annotated[str, typer.Argument(help="The device's SIP username (HANDLE.DEVICE).")],
    data_dir: StoreDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Remove a device credential; the phone's next REGISTER is refused."""
    store = _credentials("sip remove", data_dir, config)
    from callgate.accounts.audit import cli_actor
    from callgate.sip.credentials import CredentialError

    try:
        store.remove(username, cli_actor())
    except CredentialError as exc:
        raise fail(str(exc), code=1) from None
    typer.echo(f"removed SIP credential {username}")
