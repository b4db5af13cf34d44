"""One relay worker of `callgate turn --workers N` (started by runtime/relay_workers.py, never by
hand). Here in the relay's own layer, so a worker imports the relay and nothing above it (the
HTTP app, the store) and starts in a fraction of a second.

Reads its WorkerSpec from stdin (one line), serves the listening sockets it inherited with a
TurnServer whose quotas go through the shared ledger, writes "ready" on stdout, and runs until
SIGTERM or the end of stdin (the parent is gone, even if killed). SIGINT is ignored: Ctrl-C reaches
the whole process group, and the parent stops its workers in order itself.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from callgate.turn.config import TurnConfig
from callgate.turn.ledger import SharedLedger
from callgate.turn.server import Prebound, TurnServer

log = logging.getLogger(__name__)

READY = b"ready\n"


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker is told on its stdin, as one line of JSON (secrets never go on a command
    line)."""

    index: int
    config: TurnConfig
    ledger: str
    nonce_key: bytes
    log_level: str
    udp: tuple[int, ...]
    tcp: tuple[int, ...]
    tls: tuple[int, ...]

    def encode(self) -> bytes:
        body = dataclasses.asdict(self)
        body["nonce_key"] = self.nonce_key.hex()
        return json.dumps(body).encode()

    @classmethod
    def decode(cls, data: bytes) -> WorkerSpec:
        body = json.loads(data)
        config = body["config"]
        for name in ("listen", "tls_listen"):
            config[name] = tuple((host, int(port)) for host, port in config[name])
        for name in ("allow_peers", "deny_peers"):
            config[name] = tuple(config[name])
        return cls(
            index=int(body["index"]),
            config=TurnConfig(**config),
            ledger=str(body["ledger"]),
            nonce_key=bytes.fromhex(body["nonce_key"]),
            log_level=str(body["log_level"]),
            udp=tuple(body["udp"]),
            tcp=tuple(body["tcp"]),
            tls=tuple(body["tls"]),
        )


async def serve(spec: WorkerSpec) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)

    def parent_gone() -> None:
        if not os.read(0, 4096):
            log.warning("relay worker %d: parent process gone, stopping", spec.index)
            loop.remove_reader(0)
            stop.set()

    loop.add_reader(0, parent_gone)
    prebound = Prebound(
        udp=[socket.socket(fileno=fd) for fd in spec.udp],
        tcp=[socket.socket(fileno=fd) for fd in spec.tcp],
        tls=[socket.socket(fileno=fd) for fd in spec.tls],
    )
    shared = SharedLedger(Path(spec.ledger), spec.index)
    try:
        server = TurnServer(spec.config, shared=shared, nonce_key=spec.nonce_key, prebound=prebound)
        async with server:
            log.info(
                "relay worker %d: relay ports %d-%d",
                spec.index,
                spec.config.relay_port_min,
                spec.config.relay_port_max,
            )
            sys.stdout.buffer.write(READY)
            sys.stdout.buffer.flush()
            await stop.wait()
    finally:
        shared.close()


def _line() -> bytes:
    """The spec line, read byte by byte from fd 0 so nothing after it sits in a buffer."""
    line = bytearray()
    while (byte := os.read(0, 1)) and byte != b"\n":
        line += byte
    return bytes(line)


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        spec = WorkerSpec.decode(_line())
    except (ValueError, KeyError, TypeError) as exc:
        sys.exit(
            f"relay worker: no worker spec on stdin ({exc}); `callgate turn --workers` starts it"
        )
    logging.basicConfig(
        stream=sys.stderr,
        level=spec.log_level,
        format=f"%(asctime)s %(levelname)-7s %(name)s[worker {spec.index}]: %(message)s",
    )
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        runner.run(serve(spec))


if __name__ == "__main__":
    main()
