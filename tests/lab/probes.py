"""What a lab host's NAT does to its packets, as our STUN server sees them.

The probes run inside the host's namespace, with the project's own STUN codec and client.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from tests.cli_process import clean_env
from tests.lab.netns import LabError
from tests.lab.topology import Lab

STUN_PROBE = """
import json, socket, sys
from callgate.stun.attributes import unpack_xor_address
from callgate.stun.constants import Attr, MessageClass, Method
from callgate.stun.message import build, decode, encode, new_transaction_id

sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("0.0.0.0", 0))
sock.settimeout(1.0)
out = {"local_port": sock.getsockname()[1], "mapped": []}
for target in sys.argv[1:]:
    host, port = target.rsplit(":", 1)
    tid = new_transaction_id()
    mapped = None
    for _ in range(2):
        sock.sendto(encode(build(Method.BINDING, MessageClass.REQUEST, tid)), (host, int(port)))
        try:
            reply = decode(sock.recv(2048))
        except TimeoutError:
            continue
        if reply.transaction_id == tid and reply.cls == MessageClass.SUCCESS:
            mapped = unpack_xor_address(reply.get(Attr.XOR_MAPPED_ADDRESS), tid)
            break
    out["mapped"].append(mapped)
print(json.dumps(out))
"""


def stun_mappings(lab: Lab, handle: str, *targets: str) -> dict[str, Any]:
    """From one UDP socket on `handle`'s host, a STUN Binding to each `HOST:PORT` target:
    {"local_port": int, "mapped": [[ip, port] or None per target]}."""
    argv = lab.net.exec_argv(lab.host_ns(handle), sys.executable, "-c", STUN_PROBE, *targets)
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=clean_env())
    if result.returncode != 0:
        raise LabError(f"STUN probe on {handle}: {result.stderr}")
    decoded: dict[str, Any] = json.loads(result.stdout)
    return decoded


STREAM_PROBE = """
import asyncio, json, sys
from callgate.client.reach import binding, parse_url

print(json.dumps(asyncio.run(binding(parse_url(sys.argv[1]), 3.0))))
"""


def stream_mapped(
    lab: Lab, handle: str, url: str, env: dict[str, str] | None = None
) -> tuple[str, int] | None:
    """The address our STUN server sees for `handle` over a TCP/TLS URL (None: unreachable);
    `env` adds to the probe's environment (SSL_CERT_FILE for a turns: URL)."""
    argv = lab.net.exec_argv(lab.host_ns(handle), sys.executable, "-c", STREAM_PROBE, url)
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=30, env=clean_env(**(env or {}))
    )
    if result.returncode != 0:
        return None
    host, port = json.loads(result.stdout)
    return str(host), int(port)
