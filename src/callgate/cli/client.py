"""CLI softphone: `callgate login`, `callgate call HANDLE`, `callgate answer`.

Scriptable: server from --server / CALLGATE_SERVER (several, comma-separated: the first is used, and
a call whose node dies is re-attached through the same URL or the next ones, docs/scaling.md),
account from --user / CALLGATE_USER, password
from --password-stdin / CALLGATE_PASSWORD (never only a prompt). `call` and `answer` sign in
themselves when they have a user and a password, else use the session `login` saved. Progress goes
to stderr; --json prints one JSON object per event on stdout. Exit status: 0 when every call reached
media and ended by a hangup, 1 when a call failed (or sign-in/connect did), 2 for bad options,
130 when interrupted before the calls were done.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from callgate.client.errors import ClientError
from callgate.client.session import Session, load_session, save_session

DEFAULT_SERVER = "http://127.0.0.1:8080"
err = Console(stderr=True, highlight=False, soft_wrap=True)

ServerOpt = Annotated[
    str | None,
    typer.Option(
        "--server",
        metavar="URL[,URL…]",
        help=f"Server (env CALLGATE_SERVER; {DEFAULT_SERVER}); several nodes comma-separated: a "
        "call whose node dies is re-attached through them.",
    ),
]
UserOpt = Annotated[
    str | None, typer.Option("--user", metavar="HANDLE", help="Account (env CALLGATE_USER).")
]
PasswordStdinOpt = Annotated[
    bool,
    typer.Option("--password-stdin", help="Read the password from stdin (else CALLGATE_PASSWORD)."),
]
PlayOpt = Annotated[
    Path | None, typer.Option("--play", metavar="FILE.wav", help="Send this audio.")
]
ToneOpt = Annotated[
    float | None, typer.Option("--tone", metavar="HZ", help="Send a sine tone (default: silence).")
]
RecordOpt = Annotated[
    Path | None, typer.Option("--record", metavar="FILE.wav", help="Record what the far end sends.")
]
CodecOpt = Annotated[
    str | None,
    typer.Option(
        "--codec",
        metavar="opus|pcmu|pcma",
        help="Offer and accept only this audio codec (default: all three).",
    ),
]
DurationOpt = Annotated[
    float | None,
    typer.Option("--duration", metavar="S", help="Hang up S seconds after media is up."),
]
DeviceOpt = Annotated[str, typer.Option("--device", help="Device label shown to the server.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON event per line on stdout.")]


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[bold red]error:[/] {escape(message)}")
    return typer.Exit(code)


def _password(from_stdin: bool) -> str | None:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n") or None
    return os.environ.get("CALLGATE_PASSWORD") or None


def _servers(server: str | None, saved: Session | None = None) -> list[str]:
    """The configured server URLs, in order (--server, CALLGATE_SERVER, the saved session's)."""
    value = (
        server
        or os.environ.get("CALLGATE_SERVER")
        or (saved and saved.server_url)
        or DEFAULT_SERVER
    )
    urls = [url.strip() for url in value.split(",") if url.strip()]
    if not urls:
        raise ClientError("--server: no URL given")
    return urls


def _server(server: str | None, saved: Session | None = None) -> str:
    return _servers(server, saved)[0]


async def _session(server: str | None, user: str | None, password_stdin: bool) -> Session:
    """Sign in when a user and a password are at hand, else the saved session."""
    from callgate.client.signaling import SignalingClient

    handle = user or os.environ.get("CALLGATE_USER")
    password = _password(password_stdin)
    if handle and password:
        return await SignalingClient.login(_server(server), handle, password)
    if password_stdin:
        raise ClientError("--password-stdin needs --user (or CALLGATE_USER)")
    saved = load_session()
    if saved is None:
        raise ClientError("not signed in: run `callgate login`, or give --user and a password")
    if handle and handle != saved.handle:
        raise ClientError(f"the saved session is {saved.handle!r}'s; give {handle!r}'s password")
    return Session(_server(server, saved), saved.handle, saved.token, saved.expires_at, saved.user)


class Reporter:
    """Renders call events: rich lines on stderr, or JSON lines on stdout."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def __call__(self, name: str, fields: dict[str, Any]) -> None:
        if self.as_json:
            print(json.dumps({"event": name, **fields}), flush=True)
            return
        call = fields.get("call_id") or "-"
        if name == "calling":
            text = f"calling {fields.get('to')} (call {call})"
        elif name == "ringing":
            text = f"ringing on {fields.get('devices')} device(s)"
        elif name == "incoming":
            caller = fields.get("from") or {}
            text = f"incoming call from {caller.get('handle', '?')}"
        elif name == "answered":
            text = "answered"
        elif name == "recording":
            text = f"[yellow]this call is recorded[/] (recording {fields.get('recording_id')})"
        elif name == "connected":
            local, remote = fields.get("local_candidate_type"), fields.get("remote_candidate_type")
            text = f"[green]connected[/] via {local}/{remote} ({fields.get('codec') or '?'})"
        elif name == "media-failed":
            text = "[red]media failed[/] (ICE/DTLS)"
        elif name == "ended" and fields.get("call_id") is None:
            text = f"[red]call failed:[/] {fields.get('reason')} ({fields.get('message', '')})"
        elif name == "ended":
            by = f" by {fields['ended_by']}" if fields.get("ended_by") else ""
            text = f"ended: {fields.get('reason')}{by}"
        elif name == "reconnected":
            text = f"[yellow]signaling lost; reconnected[/] to {fields.get('server')}"
        elif name == "reattached":
            text = f"re-attached to the call ({fields.get('state')})"
        elif name == "missed":
            text = f"missed call {call}: {fields.get('reason')}"
        elif name == "ready":
            text = f"waiting for calls to {fields.get('user')} (device {fields.get('device_id')})"
        else:
            text = f"{name} {fields}"
        err.print(text if name in ("calling", "ready") else f"[bold]{escape(call)}[/] {text}")


def _run(main: Any) -> Any:
    """asyncio.run with SIGINT/SIGTERM setting the `stop` event `main(stop)` receives."""

    async def runner() -> Any:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        return await main(stop), stop.is_set()

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(runner())
    except ClientError as exc:
        raise _fail(str(exc)) from None


def register(app: typer.Typer) -> None:
    app.command("login")(login)
    app.command("call")(call)
    app.command("answer")(answer)


SsoOpt = Annotated[
    bool,
    typer.Option(
        "--sso",
        help="Sign in with the company's single sign-on: approve in a browser (RFC 8628).",
    ),
]


def login(
    server: ServerOpt = None,
    user: UserOpt = None,
    password_stdin: PasswordStdinOpt = False,
    sso: SsoOpt = False,
) -> None:
    """Sign in and save the session token (~/.config/callgate/session.json, mode 0600)."""
    if sso:
        if user or password_stdin:
            raise _fail("--sso takes no --user or --password-stdin", code=2)
        session = _sso_session(server)
    else:
        if not (user or os.environ.get("CALLGATE_USER")):
            raise _fail("give --user or CALLGATE_USER (or --sso)", code=2)
        if not password_stdin and not os.environ.get("CALLGATE_PASSWORD"):
            raise _fail("give --password-stdin or CALLGATE_PASSWORD", code=2)

        async def main(stop: asyncio.Event) -> Session:
            return await _session(server, user, password_stdin)

        session, _ = _run(main)
    path = save_session(session)
    expiry = f", expires {session.expires_at}" if session.expires_at else ""
    err.print(f"signed in as {escape(session.handle)} at {escape(session.server_url)}{expiry}")
    err.print(f"session saved to {escape(str(path))}")


def _sso_session(server: str | None) -> Session:
    """The device authorization grant through the server: show the code, wait for approval."""
    from callgate.client.sso import device_sign_in

    server_url = _server(server)

    def show(shown: dict[str, Any]) -> None:
        minutes = max(1, int(shown.get("expires_in", 600)) // 60)
        err.print(
            f"To sign in, open {escape(str(shown['verification_uri']))} in a browser and enter "
            f"the code [bold]{escape(str(shown['user_code']))}[/] (within {minutes} min)."
        )
        if shown.get("verification_uri_complete"):
            err.print(f"Or open {escape(str(shown['verification_uri_complete']))}")
        err.print("Waiting for approval…")

    async def main(stop: asyncio.Event) -> Session:
        waiting = asyncio.ensure_future(device_sign_in(server_url, show))
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({waiting, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not waiting.done():
            waiting.cancel()
            raise _fail("interrupted", code=130)
        stopped.cancel()
        return waiting.result()

    result: Session = _run(main)[0]
    return result


def _media(
    play: Path | None, tone: float | None, record: Path | None, codec: str | None = None
) -> Any:
    from callgate.client.softphone import MediaOptions

    if play is not None and tone is not None:
        raise _fail("give --play or --tone, not both", code=2)
    if play is not None and not play.is_file():
        raise _fail(f"--play: no such file {play}", code=2)
    if tone is not None and not 20 <= tone <= 20000:
        raise _fail("--tone must be between 20 and 20000 Hz", code=2)
    if codec is not None and codec.lower() not in ("opus", "pcmu", "pcma"):
        raise _fail("--codec must be opus, pcmu or pcma", code=2)
    return MediaOptions(play=play, tone=tone, record=record, codec=codec and codec.lower())


async def _connect(session: Session, device: str) -> Any:
    from callgate.client.signaling import SignalingClient

    return await SignalingClient.connect(session.server_url, session.token, device)


class Reconnector:
    """A new signaling connection for a call whose node died: the session's server URL first
    (behind a load balancer it reaches another node), then the other configured ones."""

    def __init__(self, session: Session, device: str, server: str | None, report: Any) -> None:
        urls = _servers(server)
        self.urls = [session.server_url, *(u for u in urls if u != session.server_url)]
        self.session, self.device, self.report = session, device, report
        self.opened: list[Any] = []

    async def __call__(self) -> Any:
        from callgate.client.errors import SignalingError
        from callgate.client.signaling import SignalingClient

        failure: SignalingError | None = None
        for url in self.urls:
            try:
                client = await SignalingClient.connect(url, self.session.token, self.device)
            except SignalingError as exc:
                failure = exc
                continue
            self.opened.append(client)
            self.report("reconnected", {"server": url})
            return client
        assert failure is not None
        raise failure

    async def close(self) -> None:
        for client in self.opened:
            await client.close()


def call(
    handle: Annotated[str, typer.Argument(help="Whom to call.")],
    play: PlayOpt = None,
    tone: ToneOpt = None,
    record: RecordOpt = None,
    duration: DurationOpt = None,
    server: ServerOpt = None,
    user: UserOpt = None,
    password_stdin: PasswordStdinOpt = False,
    device: DeviceOpt = "cli",
    as_json: JsonOpt = False,
    codec: CodecOpt = None,
) -> None:
    """Call HANDLE; talk until --duration is over, the far end hangs up, or Ctrl-C."""
    from callgate.client.softphone import place_call

    media = _media(play, tone, record, codec)
    report = Reporter(as_json)

    async def main(stop: asyncio.Event) -> Any:
        session = await _session(server, user, password_stdin)
        client = await _connect(session, device)
        reconnect = Reconnector(session, device, server, report)
        try:
            return await place_call(
                client,
                client.hello,
                handle,
                media,
                duration=duration,
                stop=stop,
                on_event=report,
                reconnect=reconnect,
            )
        finally:
            await client.close()
            await reconnect.close()

    result, interrupted = _run(main)
    if not result.ok:
        raise typer.Exit(130 if interrupted else 1)


def answer(
    play: PlayOpt = None,
    tone: ToneOpt = None,
    record: RecordOpt = None,
    count: Annotated[
        int, typer.Option("--count", metavar="N", help="Exit after N calls (0: until Ctrl-C).")
    ] = 1,
    duration: DurationOpt = None,
    server: ServerOpt = None,
    user: UserOpt = None,
    password_stdin: PasswordStdinOpt = False,
    device: DeviceOpt = "cli",
    as_json: JsonOpt = False,
    codec: CodecOpt = None,
) -> None:
    """Wait for incoming calls and answer them, one at a time; --record FILE gets FILE-2.wav … too."""
    from callgate.client.softphone import answer_calls

    if count < 0:
        raise _fail("--count must be 0 or more", code=2)
    media = _media(play, tone, record, codec)
    report = Reporter(as_json)

    async def main(stop: asyncio.Event) -> Any:
        session = await _session(server, user, password_stdin)
        client = await _connect(session, device)
        reconnect = Reconnector(session, device, server, report)
        hello = client.hello
        report(
            "ready",
            {"user": (hello.get("user") or {}).get("handle"), "device_id": hello.get("device_id")},
        )
        try:
            return await answer_calls(
                client,
                client.hello,
                media,
                count=count or None,
                duration=duration,
                stop=stop,
                on_event=report,
                reconnect=reconnect,
            )
        finally:
            await client.close()
            await reconnect.close()

    results, interrupted = _run(main)
    if any(not result.ok for result in results):
        raise typer.Exit(1)
    if count and len(results) < count:
        raise typer.Exit(130 if interrupted else 1)
