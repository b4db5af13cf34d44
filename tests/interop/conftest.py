"""Interop fixtures: coturn's binaries, a coturn reference server, and the relay under test.

The relay under test is callgate's TurnServer. Setting CALLGATE_INTEROP_TARGET=coturn runs the same
tests against Debian's coturn `turnserver` instead: when a test fails against callgate and passes
against coturn, the harness is right and the server is wrong.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from callgate.types import Address, Transport
from tests.conftest import (
    AUTH_SECRET,
    LOOPBACK,
    PASSWORD,
    REALM,
    USER,
    free_port,
    relay_port_range,
    run_turn_server,
    server_address,
)

COTURN_BINARIES = ("turnserver", "turnutils_uclient", "turnutils_peer", "turnutils_stunclient")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def coturn_binary(name: str) -> str:
    """Path of one of coturn's binaries; skip when missing, except in CI where missing is a failure."""
    path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if path is None:
        message = f"{name} not found: install Debian's coturn package (apt-get install coturn)"
        if in_ci():
            pytest.fail(message + " -- CI must not skip interop tests")
        pytest.skip(message)
    return path


def interop_target() -> str:
    target = os.environ.get("CALLGATE_INTEROP_TARGET", "callgate")
    if target not in ("callgate", "coturn"):
        raise pytest.UsageError(f"CALLGATE_INTEROP_TARGET must be callgate or coturn, not {target}")
    return target


def stun_binding_ok(address: Address, transport: Transport, timeout: float = 0.2) -> bool:
    """True when a STUN Binding request to `address` gets a Binding success response."""
    tid = os.urandom(12)
    request = struct.pack("!HHI12s", 0x0001, 0, 0x2112A442, tid)
    kind = socket.SOCK_DGRAM if transport == Transport.UDP else socket.SOCK_STREAM
    try:
        with socket.socket(socket.AF_INET, kind) as sock:
            sock.settimeout(timeout)
            sock.connect(address)
            sock.sendall(request)
            answer = sock.recv(2048)
    except OSError:
        return False
    return len(answer) >= 20 and answer[:2] == b"\x01\x01" and answer[8:20] == tid


@dataclass
class CoturnProcess:
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def address(self) -> Address:
        return (LOOPBACK, self.port)


def coturn_command(
    port: int,
    relay_min: int,
    relay_max: int,
    *,
    users: dict[str, str] | None = None,
    auth_secret: str | None = None,
    realm: str = REALM,
    log: Path | None = None,
) -> list[str]:
    """`turnserver` with settings equivalent to the test server: loopback only, no TLS/DTLS/CLI.

    coturn ignores static users once `--use-auth-secret` is on, so a server has one or the other.
    """
    command = [
        coturn_binary("turnserver"),
        "-n",
        "--listening-ip",
        LOOPBACK,
        "--listening-port",
        str(port),
        "--relay-ip",
        LOOPBACK,
        "--min-port",
        str(relay_min),
        "--max-port",
        str(relay_max),
        "--realm",
        realm,
        "--allow-loopback-peers",
        "--no-cli",
        "--no-tls",
        "--no-dtls",
        "--no-stun-backward-compatibility",
        "--log-file",
        str(log) if log else "stdout",
        "--simple-log",
    ]
    if auth_secret is not None:
        command += ["--use-auth-secret", "--static-auth-secret", auth_secret]
    else:
        command.append("--lt-cred-mech")
        for name, password in (users or {USER: PASSWORD}).items():
            command += ["--user", f"{name}:{password}"]
    return command


@contextmanager
def run_coturn(tmp_path: Path, *, auth_secret: str | None = None) -> Iterator[CoturnProcess]:
    """Start coturn's turnserver on a free loopback port; wait until it answers STUN over UDP and TCP."""
    port = free_port()
    low, high = relay_port_range()
    log = tmp_path / f"turnserver-{port}.log"
    command = coturn_command(port, low, high, auth_secret=auth_secret, log=log)
    with open(tmp_path / f"turnserver-{port}.out", "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        address = (LOOPBACK, port)
        while not (
            stun_binding_ok(address, Transport.UDP) and stun_binding_ok(address, Transport.TCP)
        ):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"turnserver did not start: {' '.join(command)}")
            time.sleep(0.05)
        yield CoturnProcess(port, process, log)
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Relay:
    """The relay under test, as the tests see it."""

    target: str
    udp: Address
    tcp: Address
    # Where TURN REST credentials are accepted (coturn needs a second process for them).
    rest_udp: Address
    rest_tcp: Address
    server: Any = None  # callgate's TurnServer; None for coturn
    events: Any = None  # the ListSink the server emits to; None for coturn
    processes: list[CoturnProcess] = field(default_factory=list)

    @property
    def is_callgate(self) -> bool:
        return self.server is not None


@asynccontextmanager
async def run_relay(tmp_path: Path, **overrides: Any) -> AsyncIterator[Relay]:
    if interop_target() == "coturn":
        with (
            run_coturn(tmp_path) as static,
            run_coturn(tmp_path, auth_secret=AUTH_SECRET) as rest,
        ):
            yield Relay(
                "coturn",
                static.address,
                static.address,
                rest.address,
                rest.address,
                processes=[static, rest],
            )
        return
    async with run_turn_server(**overrides) as server:
        udp = server_address(server, Transport.UDP)
        tcp = server_address(server, Transport.TCP)
        yield Relay("callgate", udp, tcp, udp, tcp, server=server, events=server.test_events)


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[Relay]:
    async with run_relay(tmp_path) as r:
        yield r


async def run_process(
    *args: str, timeout: float, env: dict[str, str] | None = None
) -> tuple[int, str]:
    """Run a command without blocking the event loop (the relay under test may share it)."""
    process = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        output, _ = await process.communicate()
        text = output.decode(errors="replace")
        raise AssertionError(
            f"{args[0]} timed out after {timeout} s; last output:\n{text[-3000:]}"
        ) from None
    assert process.returncode is not None
    return process.returncode, output.decode(errors="replace")
