"""`callgate serve` and `callgate call` / `callgate answer` inside the lab's namespaces.

Two servers run in the server namespace: one with `calls.ice_policy = "all"` (direct paths
allowed; the matrix), one relay-only (the default policy). Each has its HTTP/WebSocket on port 443
of one address and its STUN/TURN on UDP+TCP 3478 and 443 of another, so a client behind the
corporate firewall (TCP 443 only) can sign in and reach TURN over TCP. Every lab host has an
account named like its namespace (`eim-a`, `lan-1`, …) on both servers. On the relay-only server
a policy rule says calls from `RECORDED[0]` to `RECORDED[1]` must be recorded (docs/recording.md),
and on the matrix server the tests add such a rule for each matrix cell ICE could only relay
(`start_servers(anchored=…)`, matrix.ANCHORED): those calls go through the server's media anchor. The relay-only server also runs the SIP edge on
UDP/TCP 5060 of its HTTP address, where the `phone` host's SIP phone (baresip) registers with a
device credential of user `phone` (`LabServer.sip_device`); phones must keep their NAT mapping
open every `SIP_FLOW_TIMER` s (RFC 5626 Flow-Timer), well under the phone site's UDP timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from callgate.accounts.audit import cli_actor
from callgate.client.audio import dominant_frequency
from callgate.policy.specs import RuleSpec
from callgate.policy.store import PolicyStore
from callgate.storage.db import open_store, sqlite_url
from callgate.storage.permissions import private_data_dir
from tests.cheap_passwords import template_accounts
from tests.cli_process import COMMAND, clean_env, run_in_process
from tests.lab.netns import LabError
from tests.lab.topology import (
    RELAY_ONLY_HTTP,
    RELAY_ONLY_RELAY,
    SERVER_HTTP,
    SERVER_RELAY,
    SIP_PORT,
    TLS_HTTP,
    TLS_RELAY,
    Lab,
)

SETUP_TIMEOUT = 8.0  # the servers' calls.setup_timeout in the lab (s)
RELAY_PORTS = "49152-50151"
CALLER_TONE = 440.0
CALLEE_TONE = 880.0
RECORDED = ("sym-a", "prc-b")  # on the relay-only server: a recording-required rule
SIP_FLOW_TIMER = 2  # s between the phone's keep-alives (PHONE_NAT_UDP_TIMEOUT is 4 s)


def password_of(handle: str) -> str:
    """A password that passes the policy (8+ characters, not containing the handle)."""
    return "lab-" + hashlib.sha256(handle.encode()).hexdigest()[:12]


@dataclass
class LabServer:
    name: str
    http_ip: str
    relay_ip: str
    policy: str
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    tls: bool = False  # HTTPS and TURN over TLS only on :443, with a --self-signed local CA
    sip_device: dict[str, str] = field(default_factory=dict)  # `callgate sip add phone desk`

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.http_ip}:443"

    def client_env(self) -> dict[str, str]:
        """What a client process needs to trust this server (its local CA)."""
        return {"SSL_CERT_FILE": str(self.data_dir / "tls" / "ca.pem")} if self.tls else {}

    @property
    def db(self) -> Path:
        return self.data_dir / "callgate.sqlite3"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def add_users(data_dir: Path, handles: Iterable[str]) -> None:
    """An account for each handle, before the servers start, as `callgate user add` makes them
    but with cheap password hashes (tests/cheap_passwords.py): every softphone signs in."""
    private_data_dir(data_dir)
    store = open_store(sqlite_url(data_dir))
    try:
        accounts = template_accounts(store)
        for handle in handles:
            accounts.create_user(handle, password=password_of(handle), actor=cli_actor())
    finally:
        store.close()


def start_servers(
    lab: Lab, root: Path, anchored: Iterable[tuple[str, str]] = ()
) -> dict[str, LabServer]:
    """The servers, started and answering /healthz inside the lab. `anchored`: (caller,
    callee) pairs a recording-required rule covers on the matrix server ("all")."""
    template = root / "users"
    add_users(template, lab.hosts)
    servers = {
        "all": LabServer("all", SERVER_HTTP, SERVER_RELAY, "all", root / "all", root / "all.log"),
        "relay": LabServer(
            "relay", RELAY_ONLY_HTTP, RELAY_ONLY_RELAY, "relay", root / "relay", root / "relay.log"
        ),
        "tls": LabServer(
            "tls", TLS_HTTP, TLS_RELAY, "relay", root / "tls", root / "tls.log", tls=True
        ),
    }
    for server in servers.values():
        shutil.copytree(template, server.data_dir)
        if server.name == "all":
            _require_recording(server, *anchored)
        if server.name == "relay":
            _require_recording(server, RECORDED)
            server.sip_device = _sip_device(server, "phone")
        _start(lab, server)
    for server in servers.values():
        _wait_healthy(lab, server)
    return servers


def _require_recording(server: LabServer, *pairs: tuple[str, str]) -> None:
    """A rule per (caller, callee): their calls must be recorded, as `callgate policy add NAME
    allow --from-user CALLER --to-user CALLEE --recording-required` adds it (docs/recording.md),
    all in one store session (a CLI run per rule cost ~0.3 s each)."""
    store = open_store(sqlite_url(server.data_dir))
    try:
        policy = PolicyStore(store)
        for caller, callee in pairs:
            spec = RuleSpec.parse({
                "name": f"record-{caller}-{callee}", "action": "allow",
                "caller": {"user": caller}, "callee": {"user": callee},
                "recording_required": True,
            })  # fmt: skip
            policy.create_rule(cli_actor(), spec, None)
    finally:
        store.close()


def _sip_device(server: LabServer, handle: str) -> dict[str, str]:
    added = run_in_process(
        "sip", "add", handle, "desk", "--json", "--data-dir", str(server.data_dir),
        cwd=server.data_dir,
    )  # fmt: skip
    if added.returncode != 0:
        raise LabError(f"adding the phone's SIP credential: {added.stdout} {added.stderr}")
    device: dict[str, str] = json.loads(added.stdout)
    return device


def _start(lab: Lab, server: LabServer) -> None:
    args = [
        "serve", "--data-dir", str(server.data_dir),
        "--listen", f"{server.relay_ip}:3478",
        "--relay-ip", server.relay_ip, "--relay-ports", RELAY_PORTS,
    ]  # fmt: skip
    if server.tls:  # only TLS on :443: HTTPS (HTTP on :80 redirects) and TURN over TLS
        args += ["--self-signed", "--https", f"{server.http_ip}:443"]
        args += ["--http", f"{server.http_ip}:80", "--tls-listen", f"{server.relay_ip}:443"]
    else:
        args += ["--http", f"{server.http_ip}:443", "--listen", f"{server.relay_ip}:443"]
    sip: dict[str, str] = {}
    if server.sip_device:
        args += ["--sip-listen", f"{server.http_ip}:{SIP_PORT}"]
        sip = {
            # baresip's libre answers MD5 challenges only (tests/interop/test_baresip.py)
            "CALLGATE_SIP__ALGORITHMS": '["MD5"]',
            "CALLGATE_SIP__FLOW_TIMER": str(SIP_FLOW_TIMER),
        }
    env = clean_env(
        **sip,
        CALLGATE_CALLS__ICE_POLICY=server.policy,
        # The matrix server lets relays reach the other party's direct candidates too.
        CALLGATE_TURN__CALL_BOUND="false" if server.policy == "all" else "true",
        CALLGATE_CALLS__SETUP_TIMEOUT=str(SETUP_TIMEOUT),
        CALLGATE_CALLS__RING_TIMEOUT="20",
        # The matrix places many calls per account: the per-account attempt limit is not tested here.
        CALLGATE_CALLS__CALL_ATTEMPTS_PER_MINUTE="1000",
        # CALLGATE_TEST_FAST_PATH=required: the relays forward channel data in the kernel
        CALLGATE_TURN__FAST_PATH=os.environ.get("CALLGATE_TEST_FAST_PATH", "auto"),
    )
    with server.log_path.open("ab") as log:
        server.proc = subprocess.Popen(
            lab.net.exec_argv(lab.server_ns, *COMMAND, *args), env=env, stdout=log, stderr=log
        )
    lab.net.processes.append(server.proc)


HEALTH_PROBE = """
import sys, time, urllib.request
deadline = time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline:
    try:
        with urllib.request.urlopen(sys.argv[1], timeout=1) as r:
            if r.status == 200:
                sys.exit(0)
    except OSError:
        time.sleep(0.1)
sys.exit(1)
"""


def _wait_healthy(lab: Lab, server: LabServer, timeout: float = 90.0) -> None:
    argv = lab.net.exec_argv(
        lab.server_ns, "python3", "-c", HEALTH_PROBE, f"{server.url}/healthz", str(timeout)
    )
    env = clean_env(**server.client_env())
    result = subprocess.run(argv, capture_output=True, timeout=timeout + 10, env=env)
    if result.returncode != 0 or (server.proc is not None and server.proc.poll() is not None):
        raise LabError(f"callgate serve ({server.name}) did not come up:\n{server.log()}")


def stop_servers(servers: dict[str, LabServer]) -> dict[str, int]:
    """SIGTERM every server at once (each closes its records: they stop side by side, not one
    after the other); their exit statuses."""
    codes = {}
    for server in servers.values():
        if server.proc is not None and server.proc.poll() is None:
            server.proc.send_signal(signal.SIGTERM)
    for server in servers.values():
        if server.proc is None:
            continue
        try:
            codes[server.name] = server.proc.wait(15)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            codes[server.name] = server.proc.wait(10)
    return codes


# ---- calls ----


@dataclass
class CallOutcome:
    """One call between two lab hosts, as both softphones and a stopwatch saw it."""

    caller: str
    callee: str
    server: str = ""  # the LabServer's name
    retried: str | None = None  # why the first attempt was retried (see matrix.RETRY_REASONS)
    caller_code: int = -1
    callee_code: int = -1  # the answerer's exit status (it answers several calls)
    call_id: str | None = None
    reason: str | None = None  # as the caller saw the end
    callee_reason: str | None = None
    caller_types: tuple[str, str] | None = None  # (local, remote) at the caller
    callee_types: tuple[str, str] | None = None
    setup_s: float | None = None  # caller: invite sent ("calling") → media connected
    answered_to_end_s: float | None = None
    heard_by_callee: float | None = None  # dominant frequency of the callee's recording
    heard_by_caller: float | None = None
    events: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    stderr: dict[str, str] = field(default_factory=dict)

    @property
    def path(self) -> str:
        """`relay` when either side's nominated local candidate is relayed, else `direct`."""
        if self.caller_types is None or self.callee_types is None:
            return "none"
        return "relay" if "relay" in (self.caller_types[0], self.callee_types[0]) else "direct"

    @property
    def types(self) -> str:
        """Candidate types as the CDR's media_path writes them: caller's local/callee's local."""
        local = [t[0] if t else "unknown" for t in (self.caller_types, self.callee_types)]
        return "/".join(local)

    def describe(self) -> str:
        return (
            f"{self.caller}→{self.callee}: exit {self.caller_code}, "
            f"reasons {self.reason}/{self.callee_reason}, types {self.caller_types}/{self.callee_types}, "
            f"events {self.events}, stderr {self.stderr}"
        )


class Softphone:
    """A running `callgate call` or `callgate answer` process and its JSON events, timestamped."""

    def __init__(self, proc: Any, handle: str) -> None:
        self.proc = proc
        self.handle = handle
        self.events: list[dict[str, Any]] = []
        self.stamps: list[float] = []
        self.changed = asyncio.Event()
        self.reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, lab: Lab, server: LabServer, handle: str, *args: str) -> Softphone:
        env = clean_env(
            CALLGATE_SERVER=server.url,
            CALLGATE_USER=handle,
            CALLGATE_PASSWORD=password_of(handle),
            CALLGATE_CONFIG_DIR=str(server.data_dir.parent / "cfg" / handle),
            **server.client_env(),
        )
        argv = lab.net.exec_argv(lab.host_ns(handle), *COMMAND, *args, "--json")
        proc = await asyncio.create_subprocess_exec(
            *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        return cls(proc, handle)

    async def _read(self) -> None:
        while line := await self.proc.stdout.readline():
            self.events.append(json.loads(line))
            self.stamps.append(time.monotonic())
            self.changed.set()
        self.changed.set()

    async def wait_for(self, predicate: Any, within: float) -> dict[str, Any] | None:
        """The first event matching `predicate`, waiting up to `within` s (None: not seen)."""
        deadline = time.monotonic() + within
        while True:
            found = next((e for e in self.events if predicate(e)), None)
            if found is not None or self.reader.done() or time.monotonic() > deadline:
                return found
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), max(0.01, deadline - time.monotonic()))

    def time_of(self, name: str, call_id: str | None) -> float | None:
        for event, stamp in zip(self.events, self.stamps, strict=True):
            if event.get("event") == name and event.get("call_id") == call_id:
                return stamp
        return None

    def of_call(self, call_id: str | None) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("call_id") == call_id]

    async def finish(self, within: float = 60.0) -> tuple[int, str]:
        """Exit status (killed after `within` s) and the end of stderr."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.reader), within)
        if self.proc.returncode is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), 30)
        if self.proc.returncode is None:
            self.proc.kill()
        code = await self.proc.wait()
        await self.reader
        errors = (await self.proc.stderr.read()).decode(errors="replace")
        return code, errors[-2000:]


async def start_answerer(
    lab: Lab, server: LabServer, handle: str, calls: int, workdir: Path, within: float = 60
) -> Softphone:
    """`callgate answer --count calls` on `handle`'s host, sending the callee tone and recording
    to `workdir/<handle>-heard.wav` (then -2.wav, -3.wav …); returns once it is ready."""
    workdir.mkdir(parents=True, exist_ok=True)
    phone_args = (
        "answer", "--count", str(calls), "--tone", str(CALLEE_TONE),
        "--record", str(workdir / f"{handle}-heard.wav"), "--device", "lab",
    )  # fmt: skip
    phone = await Softphone.start(lab, server, handle, *phone_args)
    for attempt in range(2):
        if attempt:  # sign-in refused by the known server fault (matrix.SERVER_FAULTS): again
            phone = await Softphone.start(lab, server, handle, *phone_args)
        if await phone.wait_for(lambda e: e.get("event") == "ready", within) is not None:
            return phone
        code, errors = await phone.finish(1)
        if "HTTP 500" not in errors:
            break
    raise LabError(f"{handle}: `callgate answer` not ready (exit {code}): {errors}")


def unexpected_errors(log: str) -> list[str]:
    """The server log's ERROR records, except the known audit-seq collision (SERVER_FAULTS)."""
    records = re.split(r"\n(?=\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)", log)
    bad = [r for r in records if " ERROR " in r.split("\n", 1)[0] or "Traceback" in r]
    return [r for r in bad if "UNIQUE constraint failed: audit_entries.seq" not in r]


def _types(events: list[dict[str, Any]]) -> tuple[str, str] | None:
    for event in events:
        if event.get("event") == "connected":
            return (str(event["local_candidate_type"]), str(event["remote_candidate_type"]))
    return None


def _heard(path: Path) -> float | None:
    try:
        return dominant_frequency(path) if path.exists() else None
    except ValueError:
        return None


def _recording(answerer: Softphone, call_id: str | None, workdir: Path) -> Path:
    """The answerer's recording of this call: the n-th answered call's FILE-n.wav."""
    answered = [e.get("call_id") for e in answerer.events if e.get("event") == "answered"]
    n = answered.index(call_id) + 1 if call_id in answered else 0
    suffix = "" if n == 1 else f"-{n}"
    return workdir / f"{answerer.handle}-heard{suffix}.wav"


async def place_call(
    lab: Lab,
    server: LabServer,
    caller: str,
    answerer: Softphone,
    workdir: Path,
    *,
    duration: float = 2.0,
    within: float = 60.0,
) -> CallOutcome:
    """`caller` runs `callgate call` to the answerer's account, sending the caller tone and
    recording; the outcome as both softphones saw it."""
    callee = answerer.handle
    out = CallOutcome(caller, callee, server.name)
    workdir.mkdir(parents=True, exist_ok=True)
    heard = workdir / f"{caller}--{callee}-caller-heard.wav"
    phone = await Softphone.start(
        lab, server, caller, "call", callee, "--tone", str(CALLER_TONE),
        "--record", str(heard), "--duration", str(duration), "--device", "lab",
    )  # fmt: skip
    await phone.wait_for(lambda e: e.get("event") == "ended", within)
    out.caller_code, caller_errors = await phone.finish()
    out.call_id = next((e.get("call_id") for e in phone.events if e.get("call_id")), None)
    await answerer.wait_for(
        lambda e: e.get("event") == "ended" and e.get("call_id") == out.call_id, 10
    )
    callee_events = answerer.of_call(out.call_id)
    ended = [e for e in phone.events if e.get("event") == "ended"]
    out.reason = ended[-1].get("reason") if ended else None
    callee_ended = [e for e in callee_events if e.get("event") == "ended"]
    out.callee_reason = callee_ended[-1].get("reason") if callee_ended else None
    out.caller_types, out.callee_types = _types(phone.events), _types(callee_events)
    calling, connected = (
        phone.time_of("calling", out.call_id),
        phone.time_of("connected", out.call_id),
    )
    if calling is not None and connected is not None:
        out.setup_s = connected - calling
    answered, end = phone.time_of("answered", out.call_id), phone.time_of("ended", out.call_id)
    if answered is not None and end is not None:
        out.answered_to_end_s = end - answered
    out.heard_by_callee = _heard(_recording(answerer, out.call_id, workdir))
    out.heard_by_caller = _heard(heard)
    out.events = {caller: phone.events, callee: callee_events}
    out.stderr = {caller: caller_errors}
    return out
