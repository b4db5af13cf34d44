"""How soon a call on the wire is on the console of `callgate serve --monitor` (root).

Builds two network namespaces joined by a veth, starts `callgate serve --monitor va` in one, and
replays a real capture (nDPI's Skype conference call, 200 Ethernet frames over 1.5 s) onto the
other end with Debian's `tcpreplay`, at the capture's own pace, --rounds times. Each round the
capture's internal host is rewritten to a new address (`tcprewrite --pnat`), so each round is a
new finding. For each round it prints, from the finding's first packet (its `first_seen`: the
kernel's receive time on the veth, the moment tcpreplay sent it):

- stored: the finding (under its application's name) is in the database;
- console: the console's data source returns it — `GET /api/findings` requested the way the
  "Unmanaged calling" page requests it: this tree's page long-polls (`after=VERSION&wait=25`,
  answered when the monitor stores something); main's page (f65e9d2) polled every second, which
  is emulated for `--before` with a random phase, as a page opened at any moment.

`--before` runs the same rounds against the code of main before this change (f65e9d2, exported
with `git archive` and put first on PYTHONPATH: pure Python, the C loops fall back) and prints both
columns side by side. Also printed: the server's CPU time for the rounds.

    sudo .venv/bin/python bench/detect_live_latency.py [--rounds 5] [--interval 1.0] [--before]

Needs the shared captures ($CALLGATE_PCAPS or ../shared/pcaps) and tcpreplay (scripts/test
installs it).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.lab.netns import Netns  # noqa: E402

from callgate.storage.db import DB_FILENAME  # noqa: E402
from serve_process import CLK_TCK, READY  # noqa: E402

CAPTURE = "ndpi/skype-conference-call.pcap"
CAPTURE_HOST, APP = "192.168.2.20", "Microsoft Teams/Skype"


BEFORE = "f65e9d2"  # main before new findings were written at once and pushed to the page
SECURITY = ("sam", "Tr0ub4dor-staple-horse")
CLONE_NEWNET = 0x40000000
PORT = 18080


def captures() -> Path:
    for candidate in (os.environ.get("CALLGATE_PCAPS"), ROOT.parent / "shared" / "pcaps",
                      "/work/shared/pcaps"):  # fmt: skip
        if candidate and (Path(candidate) / CAPTURE).is_file():
            return Path(candidate)
    sys.exit(f"{CAPTURE} not found under $CALLGATE_PCAPS, ../shared/pcaps or /work/shared/pcaps")


def rewritten(source: Path, host: str, work: Path) -> Path:
    out = work / f"{host}.pcap"
    subprocess.run(["tcprewrite", f"--pnat={CAPTURE_HOST}/32:{host}/32", "--fixcsum",
                    f"--infile={source}", f"--outfile={out}"], check=True)  # fmt: skip
    return out


def stored_at(database: Path, host: str) -> float | None:
    """When the host's named finding first is in the database (now), else None."""
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5) as db:
            query = "SELECT 1 FROM detect_findings WHERE host = ? AND app = ?"
            found = db.execute(query, (host, APP)).fetchone()
    except sqlite3.OperationalError:  # not created yet, or locked for a moment
        return None
    return time.time() if found else None


def seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def server_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def inside(ns: str) -> ThreadPoolExecutor:
    """A worker thread in network namespace `ns` (setns(2) moves only the calling thread)."""

    def enter() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns")
        finally:
            os.close(fd)

    return ThreadPoolExecutor(1, initializer=enter)


class Console:
    """GET /api/findings as the console's page requests it (`push`: long polls; else every 1 s)."""

    def __init__(self, token: str, push: bool) -> None:
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{PORT}", timeout=60,
                                   headers={"Authorization": f"Bearer {token}"})  # fmt: skip
        self.push = push
        self.version: str | None = self.client.get("/api/findings").json().get("version")

    def watch(self, host: str, started: threading.Event) -> tuple[float, float]:
        """(when the page shows the host's named finding, its first_seen)."""
        started.set()  # the replay starts now
        if not self.push:
            time.sleep(random.uniform(0, 1))  # the page polls at any phase of its second
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            asked = time.monotonic()
            query = f"?after={self.version}&wait=25" if self.push else ""
            body = self.client.get(f"/api/findings{query}").json()
            self.version = body.get("version")
            for f in body["findings"]:
                if f["host"] == host and f["app"] == APP:
                    return time.time(), seconds(f["first_seen"])
            if not self.push:
                time.sleep(max(0.0, 1.0 - (time.monotonic() - asked)))
        raise SystemExit(f"no {APP} finding for {host} on the console within 60 s")


def one_round(lab: Netns, ns: str, capture: Path, database: Path, host: str,
              console: Console, pool: ThreadPoolExecutor) -> tuple[float, float]:  # fmt: skip
    """(first packet → stored, first packet → on the console), seconds."""
    polling = threading.Event()
    shown = pool.submit(console.watch, host, polling)
    polling.wait(10)
    replay = subprocess.Popen(lab.exec_argv(ns, "tcpreplay", "-q", "--intf1=vb", str(capture)),
                              stdout=subprocess.DEVNULL)  # fmt: skip
    stored, deadline = None, time.monotonic() + 60
    try:
        while stored is None and time.monotonic() < deadline:
            stored = stored_at(database, host)
            time.sleep(0.01)
        visible, first = shown.result(60)
    finally:
        replay.wait(60)
    if stored is None:
        raise SystemExit(f"no {APP} finding for {host} in the database within 60 s")
    return stored - first, visible - first


def old_code(work: Path) -> dict[str, str]:
    """The environment that runs main's code before this change (`git archive BEFORE src`)."""
    tree = work / "before"
    tree.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", BEFORE, "src"],
                             check=True, capture_output=True).stdout  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return {**os.environ, "PYTHONPATH": str(tree / "src")}


def run(lab: Netns, work: Path, source: Path, rounds: int, interval: float,
        before: bool) -> tuple[list[tuple[float, float]], float]:  # fmt: skip
    """The rounds against one server (main's code when `before`); (rows, serve's CPU)."""
    label = "before" if before else "after"
    data = work / f"data-{label}"
    env = old_code(work) if before else dict(os.environ)
    binary = [sys.executable, "-c", "from callgate.entry import main; main()"]
    handle, password = SECURITY
    subprocess.run([*binary, "user", "add", handle, "--role", "security", "--data-dir", str(data),
                    "--password-stdin"], input=password + "\n", text=True, env=env, check=True,
                   capture_output=True)  # fmt: skip
    config = work / "callgate.toml"
    config.write_text(f'[monitor]\ninternal = ["10.77.0.0/16"]\ninterval_s = {interval}\n')
    log_path = work / f"serve-{label}.log"
    log = log_path.open("w+")
    argv = lab.exec_argv(lab.full("a"), *binary, "serve", "--config", str(config),
                         "--data-dir", str(data), "--http", f"127.0.0.1:{PORT}",
                         "--listen", "127.0.0.1:3478", "--monitor", "va")  # fmt: skip
    server = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
    pool = inside(lab.full("a"))
    try:
        deadline = time.monotonic() + 60
        while READY not in log_path.read_text():
            if server.poll() is not None or time.monotonic() > deadline:
                sys.exit("serve did not start:\n" + log_path.read_text())
            time.sleep(0.1)
        login = pool.submit(httpx.post, f"http://127.0.0.1:{PORT}/api/login",
                            json={"handle": handle, "password": password}).result()  # fmt: skip
        console = pool.submit(Console, login.json()["token"], not before).result()
        database = data / DB_FILENAME
        cpu_before = server_cpu(server.pid)
        rows = []
        for k in range(1, rounds + 1):
            host = f"10.77.{1 if before else 2}.{k}"
            capture = rewritten(source, host, work)
            rows.append(one_round(lab, lab.full("b"), capture, database, host, console, pool))
        return rows, server_cpu(server.pid) - cpu_before
    finally:
        server.terminate()
        server.wait(30)
        pool.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--interval", type=float, default=1.0, help="monitor.interval_s")
    parser.add_argument("--before", action="store_true", help=f"also main's code ({BEFORE})")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root: network namespaces and AF_PACKET")
    for tool in ("tcpreplay", "tcprewrite"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} missing: apt-get install tcpreplay")
    source = captures() / CAPTURE
    lab = Netns(f"cgl{os.getpid()}")
    results: dict[str, tuple[list[tuple[float, float]], float]] = {}
    with tempfile.TemporaryDirectory(prefix="cg-live-") as tmp:
        try:
            a, b = lab.add("a"), lab.add("b")
            lab.veth(a, "va", b, "vb")
            for before in [True, False] if args.before else [False]:
                label = f"before ({BEFORE})" if before else "after"
                results[label] = run(lab, Path(tmp), source, args.rounds, args.interval, before)
        finally:
            lab.close()
    load = os.getloadavg()[0]
    print(f"capture: {CAPTURE} (200 frames, 1.5 s) replayed {args.rounds}x with tcpreplay; "
          f"monitor.interval_s = {args.interval}; load average {load:.1f}")  # fmt: skip
    print("seconds from the finding's first packet to: stored (named " + APP + "), and shown "
          "by the console's data source as its page asks it")  # fmt: skip
    labels = list(results)
    print(f"{'round':>5}" + "".join(f"  {lbl + ' stored':>24}  {lbl + ' console':>25}"
                                    for lbl in labels))  # fmt: skip
    for k in range(args.rounds):
        print(f"{k + 1:>5}" + "".join(f"  {results[lbl][0][k][0]:>24.2f}  "
                                      f"{results[lbl][0][k][1]:>25.2f}" for lbl in labels))  # fmt: skip
    for name, column in (("median", statistics.median), ("max", max)):
        print(f"{name:>5}" + "".join(f"  {column(r[0] for r in results[lbl][0]):>24.2f}  "
                                     f"{column(r[1] for r in results[lbl][0]):>25.2f}"
                                     for lbl in labels))  # fmt: skip
    for lbl in labels:
        print(f"serve CPU during the rounds, {lbl}: {results[lbl][1]:.2f} s")


if __name__ == "__main__":
    main()
