"""A real SIP desk phone: Debian's baresip registers with `callgate serve --sip-listen` (digest
MD5: baresip's libre answers no other algorithm, and gives up when any challenge names one, so
this server offers MD5 alone), is called by bob's CLI softphone and auto-answers, then calls bob
itself and hangs up with a BYE the edge challenges. Each side hears the other's tone (baresip: a 440 Hz sine; bob: 880 Hz), all on loopback.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from callgate.client.audio import dominant_frequency
from tests.cli_process import COMMAND, clean_env
from tests.cli_process import run_in_process as callgate
from tests.integration.serve_fixture import PASSWORDS, WebServer, serve
from tests.integration.test_cli import free_port

pytestmark = pytest.mark.interop

MODULES = ("g711.so", "ausine.so", "aubridge.so", "sndfile.so", "menu.so", "ctrl_tcp.so")


def baresip_binary() -> str:
    path = shutil.which("baresip")
    if path is None:
        message = "baresip not found: install Debian's baresip-core (scripts/test does)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[WebServer, int, dict[str, str]]]:
    device: dict[str, str] = {}

    def prepare(data: Path) -> None:
        added = callgate("sip", "add", "alice", "desk", "--data-dir", str(data), "--json",
                         cwd=tmp_path)  # fmt: skip
        assert added.returncode == 0, added.stderr
        device.update(json.loads(added.stdout))

    port = free_port()
    listen = ("--sip-listen", f"127.0.0.1:{port}")
    # baresip's media is on loopback, which media may reach only when opened (docs/sip.md)
    allow = {"CALLGATE_SIP__ALLOW_MEDIA": "127.0.0.1/32"}
    for web in serve(tmp_path, *listen, prepare=prepare, CALLGATE_SIP__ALGORITHMS='["MD5"]',
                     **allow):  # fmt: skip
        yield web, port, device


def baresip_config(root: Path, port: int, device: dict[str, str], control: int) -> Path:
    config = root / "baresip"
    (root / "snd").mkdir()
    config.mkdir()
    lines = [
        f"sip_listen 127.0.0.1:{free_port()}",
        "audio_player aubridge,speaker",  # a player that plays nowhere; sndfile keeps what came
        "audio_source ausine,440",
        "ausrc_srate 48000",
        "ausrc_channels 2",
        "audio_alert aubridge,speaker",
        "module_path /usr/lib/baresip/modules",
        *(f"module {name}" for name in MODULES),
        "module_app account.so",
        f"snd_path {root / 'snd'}",
        f"ctrl_tcp_listen 127.0.0.1:{control}",
    ]
    (config / "config").write_text("\n".join(lines) + "\n")
    account = (
        f"<sip:alice@127.0.0.1:{port};transport=udp>;auth_user={device['username']};"
        f"auth_pass={device['password']};answermode=auto;audio_codecs=PCMU;regint=600"
    )
    (config / "accounts").write_text(account + "\n")
    return config


def command(port: int, name: str, params: str) -> None:
    """A command to baresip's ctrl_tcp module (a JSON netstring)."""
    body = json.dumps({"command": name, "params": params, "token": "t"}).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(str(len(body)).encode() + b":" + body + b",")
        assert sock.recv(4096)  # its answer or the call's first event: the command was taken


def bob(server: WebServer, tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    env = clean_env(
        CALLGATE_SERVER=server.url, CALLGATE_USER="bob", CALLGATE_PASSWORD=PASSWORDS["bob"],
        CALLGATE_CONFIG_DIR=str(tmp_path / "cfg-bob"),
    )  # fmt: skip
    return subprocess.Popen(
        [*COMMAND, *args, "--json"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def finished(process: subprocess.Popen[str]) -> list[dict[str, object]]:
    out, errors = process.communicate(timeout=60)
    assert process.returncode == 0, errors
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_baresip_registers_is_called_and_calls(
    server: tuple[WebServer, int, dict[str, str]], tmp_path: Path
) -> None:
    binary = baresip_binary()
    web, port, device = server
    control = free_port()
    config = baresip_config(tmp_path, port, device, control)
    log = (tmp_path / "baresip.log").open("w")
    phone = subprocess.Popen(
        [binary, "-f", str(config), "-4", "-n", "127.0.0.1", "-t", "120"],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        # registered: alice is online for bob (the directory counts her phone)
        with web.client() as client:
            headers = {"Authorization": f"Bearer {web.token('bob')}"}
            for _ in range(100):
                users = client.get("/api/directory", headers=headers).json()["users"]
                if {u["handle"]: u["presence"] for u in users}.get("alice") == "online":
                    break
                assert phone.poll() is None, (tmp_path / "baresip.log").read_text()
                time.sleep(0.2)
            else:
                raise AssertionError((tmp_path / "baresip.log").read_text())

        # bob calls alice; her phone rings and answers by itself
        recording = tmp_path / "bob-hears-baresip.wav"
        events = finished(bob(web, tmp_path, "call", "alice", "--tone", "880", "--duration", "3",
                              "--record", str(recording)))  # fmt: skip
        assert events[-1]["reason"] == "hangup", events
        assert next(e for e in events if e["event"] == "connected")["codec"] == "pcmu"
        assert abs(dominant_frequency(recording) - 440.0) < 5.0
        (heard,) = (tmp_path / "snd").glob("*-dec.wav")  # what baresip decoded
        assert abs(dominant_frequency(heard) - 880.0) < 5.0

        # alice's phone calls bob (its INVITE is challenged and answered with MD5 digest); bob
        # answers with the CLI; after 3 s of media alice hangs up: her BYE must be signed with
        # her digest credential too (RFC 3261 §22), and baresip signs it, so the call ends as
        # hers, not at bob's 60 s
        answering = bob(web, tmp_path, "answer", "--tone", "880", "--duration", "60", "--record",
                        str(tmp_path / "bob-answers.wav"))  # fmt: skip
        assert answering.stdout is not None
        assert json.loads(answering.stdout.readline())["event"] == "ready"
        command(control, "dial", f"sip:bob@127.0.0.1:{port}")
        while json.loads(answering.stdout.readline() or '{"event": "eof"}')["event"] not in (
            "connected",
            "eof",
        ):
            pass
        time.sleep(3)  # media for bob's recording
        command(control, "hangup", "")
        events = finished(answering)
        assert events[-1]["reason"] == "hangup" and events[-1]["ended_by"] == "caller", events
        assert abs(dominant_frequency(tmp_path / "bob-answers.wav") - 440.0) < 5.0
        assert "terminated" in (tmp_path / "baresip.log").read_text()
    finally:
        phone.terminate()
        try:
            phone.wait(10)
        except subprocess.TimeoutExpired:
            phone.kill()
        log.close()
