"""`callgate turn --workers N`: the relay in N processes, one per core, as one server.

The parent binds every listener N times into one SO_REUSEPORT group (UDP and TCP, same port) and
keeps those sockets open for its whole life, then starts N workers (`python -m
callgate.turn.worker`), each serving its own socket of each group with a full TurnServer.

- A client's 5-tuple always reaches the same worker: the kernel picks a group member by a hash
  of the 4-tuple, and the group never changes while the relay runs (the parent holds every
  member, a worker only serves its own). A TCP or TLS connection is accepted by one worker and
  stays there. So an allocation, its permissions and channels live in one process, as in coturn's
  relay threads.
- Relayed transport addresses: worker i binds relay sockets only in the i-th slice of the relay
  port range, so peers' packets for a relayed address reach the worker that owns it and two
  workers never race for a port.
- Quotas (per user and in all), "another allocation's relayed address on this server", and the
  counters `/metrics` shows are kept across workers in a SharedLedger (turn/ledger.py), a SQLite
  file in a private directory made here and removed at exit.
- The nonce key is shared, so a client that reconnects over TCP to another worker keeps its nonce.

A worker that dies takes the relay down (exit status 1, naming it): its allocations are gone and a
supervisor (systemd) restarting the whole relay is clearer than half a relay.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from callgate.errors import ConfigError
from callgate.turn.config import TurnConfig
from callgate.turn.counters import TurnCounters
from callgate.turn.ledger import SharedLedger, summed_counters
from callgate.turn.worker import READY, WorkerSpec
from callgate.types import Address, Transport

log = logging.getLogger(__name__)

MAX_WORKERS = 64
# A worker imports the package and binds nothing: it is ready in well under this.
_READY_TIMEOUT_S = 60.0
_STOP_TIMEOUT_S = 10.0
_BIND_ATTEMPTS = 20
_BUFFER_BYTES = 4 << 20


@dataclass
class Group:
    """One listener's sockets, one per worker."""

    kind: Transport
    address: Address
    socks: list[socket.socket] = field(default_factory=list)


def port_slices(low: int, high: int, workers: int) -> list[tuple[int, int]]:
    """The relay port range cut into one contiguous slice per worker (at least 2 ports each,
    for an EVEN-PORT pair)."""
    size = (high - low + 1) // workers
    if size < 2:
        raise ConfigError(
            f"turn.relay_ports {low}-{high} is too small for {workers} workers "
            "(each needs at least 2 ports)"
        )
    slices = [(low + i * size, low + (i + 1) * size - 1) for i in range(workers)]
    slices[-1] = (slices[-1][0], high)
    return slices


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _member(host: str, port: int, kind: socket.SocketKind) -> socket.socket:
    sock = socket.socket(_family(host), kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if kind == socket.SOCK_DGRAM:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _BUFFER_BYTES)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _BUFFER_BYTES)
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        if kind == socket.SOCK_STREAM:
            sock.listen(128)
    except BaseException:
        sock.close()
        raise
    return sock


def _bind_listener(host: str, port: int, workers: int) -> list[Group]:
    """UDP and TCP groups on one port (with port 0, one the kernel picks for UDP; tried again
    when TCP cannot have it)."""
    for attempt in range(1, (_BIND_ATTEMPTS if port == 0 else 1) + 1):
        udp = Group(Transport.UDP, (host, port))
        tcp = Group(Transport.TCP, (host, port))
        try:
            udp.socks.append(_member(host, port, socket.SOCK_DGRAM))
            chosen = udp.socks[0].getsockname()[1]
            udp.socks += [_member(host, chosen, socket.SOCK_DGRAM) for _ in range(workers - 1)]
            tcp.socks += [_member(host, chosen, socket.SOCK_STREAM) for _ in range(workers)]
        except OSError as exc:
            _close([udp, tcp])
            if exc.errno == errno.EADDRINUSE and attempt < _BIND_ATTEMPTS and port == 0:
                continue
            raise
        udp.address = tcp.address = (host, chosen)
        return [udp, tcp]
    raise AssertionError("unreachable")


def bind_groups(config: TurnConfig, workers: int) -> list[Group]:
    groups: list[Group] = []
    try:
        for host, port in config.listen:
            groups += _bind_listener(host, port, workers)
        for host, port in config.tls_listen:
            tls = Group(Transport.TLS, (host, port))
            groups.append(tls)
            tls.socks.append(_member(host, port, socket.SOCK_STREAM))
            chosen = tls.socks[0].getsockname()[1]
            tls.socks += [_member(host, chosen, socket.SOCK_STREAM) for _ in range(workers - 1)]
            tls.address = (host, chosen)
    except BaseException:
        _close(groups)
        raise
    return groups


def _close(groups: list[Group]) -> None:
    for group in groups:
        for sock in group.socks:
            sock.close()


def worker_specs(
    config: TurnConfig, groups: list[Group], ledger: Path, log_level: str, workers: int
) -> list[WorkerSpec]:
    slices = port_slices(config.relay_port_min, config.relay_port_max, workers)
    nonce_key = os.urandom(32)

    def fds(kind: Transport, i: int) -> tuple[int, ...]:
        return tuple(g.socks[i].fileno() for g in groups if g.kind is kind)

    return [
        WorkerSpec(
            index=i,
            config=dataclasses.replace(config, relay_port_min=low, relay_port_max=high),
            ledger=str(ledger),
            nonce_key=nonce_key,
            log_level=log_level,
            udp=fds(Transport.UDP, i),
            tcp=fds(Transport.TCP, i),
            tls=fds(Transport.TLS, i),
        )
        for i, (low, high) in enumerate(slices)
    ]


@contextlib.contextmanager
def ledger_file() -> Iterator[Path]:
    """A fresh ledger in a directory only this user can enter, removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="callgate-relay-"))  # mode 0700
    try:
        path = folder / "ledger.sqlite"
        SharedLedger.create(path)
        yield path
    finally:
        shutil.rmtree(folder, ignore_errors=True)


async def _start(spec: WorkerSpec) -> asyncio.subprocess.Process:
    fds = spec.udp + spec.tcp + spec.tls
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "callgate.turn.worker",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        pass_fds=fds,
    )
    assert proc.stdin is not None and proc.stdout is not None
    # One line; the pipe then stays open: a worker stops at its end of file, so workers never
    # outlive a parent that was killed.
    proc.stdin.write(spec.encode() + b"\n")
    await proc.stdin.drain()
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), _READY_TIMEOUT_S)
    except TimeoutError:
        line = b""
    if line != READY:
        await _stop([proc])
        raise OSError(f"relay worker {spec.index} did not start (exit status {proc.returncode})")
    return proc


async def _stop(procs: list[asyncio.subprocess.Process]) -> None:
    for proc in procs:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            await asyncio.wait_for(proc.wait(), _STOP_TIMEOUT_S)
        except TimeoutError:
            log.error("relay worker %d did not stop in %.0f s: killed", proc.pid, _STOP_TIMEOUT_S)
            proc.kill()
            await proc.wait()


class WorkerPool:
    """The running workers; `counters` adds up what they last published (for /metrics)."""

    def __init__(self, groups: list[Group], ledger: Path) -> None:
        self.groups = groups
        self.ledger = ledger
        self.procs: list[asyncio.subprocess.Process] = []

    @property
    def bound(self) -> list[tuple[Transport, Address]]:
        return [(g.kind, g.address) for g in self.groups]

    def counters(self) -> TurnCounters:
        return summed_counters(self.ledger)

    async def start(self, specs: list[WorkerSpec]) -> None:
        """Start every worker at once; if one fails, stop those that started and raise."""
        results = await asyncio.gather(*(_start(spec) for spec in specs), return_exceptions=True)
        self.procs = [r for r in results if isinstance(r, asyncio.subprocess.Process)]
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            await self.stop()
            raise failed[0]

    async def wait(self, stop: asyncio.Event) -> None:
        """Until `stop` is set; raises OSError if a worker ends first."""
        stopping = asyncio.create_task(stop.wait())
        exits = {asyncio.create_task(p.wait()): i for i, p in enumerate(self.procs)}
        done, _ = await asyncio.wait([stopping, *exits], return_when=asyncio.FIRST_COMPLETED)
        for task in [stopping, *exits]:
            task.cancel()
        if stopping not in done:
            ended = next(t for t in done if t in exits)
            raise OSError(
                f"relay worker {exits[ended]} exited (status {self.procs[exits[ended]].returncode})"
                "; stopping the relay"
            )

    async def stop(self) -> None:
        await _stop(self.procs)


async def run_pool(
    config: TurnConfig,
    workers: int,
    log_level: str,
    stop: asyncio.Event,
    started: Callable[[WorkerPool], contextlib.AbstractContextManager[None]],
) -> None:
    """Bind, start the workers, run `started(pool)` around the wait for `stop`, then stop them."""
    if not 2 <= workers <= MAX_WORKERS:
        raise ConfigError(f"turn.workers must be 1-{MAX_WORKERS}")
    groups = bind_groups(config, workers)
    try:
        with ledger_file() as ledger:
            pool = WorkerPool(groups, ledger)
            try:
                await pool.start(worker_specs(config, groups, ledger, log_level, workers))
                with started(pool):
                    await pool.wait(stop)
            finally:
                await pool.stop()
    finally:
        _close(groups)
