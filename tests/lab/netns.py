"""Network namespaces as lab machines: create, wire, run commands in, and tear down.

Every namespace is named `<prefix>-<name>` with a prefix unique to this process (`cg<pid>`), so
several labs (other test runs on the same machine) never collide. Links are created directly
inside their namespaces (`ip link add … netns A type veth peer … netns B`): nothing is ever
added to, or changed in, the host's own namespace, and no namespace is linked to it, so nothing
inside the lab can reach an outside address. `Netns.close()` deletes every namespace it made —
which removes their links, routes, rules and conntrack state with them — and kills the processes
still running in them; it is idempotent and also registered with `atexit`. A lab whose process
was killed outright (SIGKILL: no atexit) is removed by the next lab built (`remove_stale_labs`).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterable
from pathlib import Path

IP = shutil.which("ip") or "/usr/sbin/ip"


class LabError(RuntimeError):
    """A lab command failed: the message holds the command and its stderr."""


def run(*argv: str, check: bool = True, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise LabError(f"{' '.join(argv)}: exit {result.returncode}: {result.stderr.strip()}")
    return result


def missing_capability() -> str | None:
    """Why a lab cannot be built here (None: it can): root, `ip netns`, iptables NAT."""
    if os.geteuid() != 0:
        return "the NAT lab needs root (network namespaces, iptables)"
    if shutil.which("ip") is None:
        return "`ip` (iproute2) is not installed"
    if shutil.which("iptables") is None:
        return "`iptables` is not installed (apt-get install iptables)"
    probe = Netns(f"cgp{os.getpid()}")
    try:
        ns = probe.add("probe")
        probe.sh(ns, "iptables -t nat -A POSTROUTING -o lo -j MASQUERADE --random-fully")
    except (LabError, OSError, subprocess.TimeoutExpired) as exc:
        return f"network namespaces with iptables NAT are not available: {exc}"
    finally:
        probe.close()
    return None


_LAB_NAME = re.compile(r"^cgp?(\d+)-\S+")


def remove_stale_labs() -> list[str]:
    """Delete the namespaces of labs whose process is gone (killed before it could clean up):
    names `cg<pid>-…` / `cgp<pid>-…` whose pid no longer exists. Returns what was deleted."""
    removed = []
    for line in run(IP, "netns", "list", check=False).stdout.splitlines():
        match = _LAB_NAME.match(line)
        if match is None or Path(f"/proc/{match.group(1)}").exists():
            continue
        name = line.split()[0]
        run(IP, "netns", "del", name, check=False)
        removed.append(name)
    return removed


class Netns:
    """The namespaces of one lab."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.names: list[str] = []
        self.processes: list[subprocess.Popen[bytes]] = []
        atexit.register(self.close)

    def full(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    def add(self, name: str, *, forward: bool = False) -> str:
        """A new namespace with `lo` up; `forward` makes it an IPv4 router."""
        ns = self.full(name)
        run(IP, "netns", "add", ns)
        self.names.append(ns)
        run(IP, "-n", ns, "link", "set", "lo", "up")
        if forward:
            self.sh(ns, "sysctl -qw net.ipv4.ip_forward=1")
        return ns

    def veth(self, ns_a: str, if_a: str, ns_b: str, if_b: str) -> None:
        """A veth pair between two namespaces, both ends up (never in the host namespace)."""
        run(IP, "link", "add", if_a, "netns", ns_a, "type", "veth", "peer", if_b, "netns", ns_b)
        run(IP, "-n", ns_a, "link", "set", if_a, "up")
        run(IP, "-n", ns_b, "link", "set", if_b, "up")

    def bridge(self, ns: str, name: str, ports: Iterable[str] = ()) -> None:
        run(IP, "-n", ns, "link", "add", name, "type", "bridge")
        run(IP, "-n", ns, "link", "set", name, "up")
        for port in ports:
            run(IP, "-n", ns, "link", "set", port, "master", name)

    def ip(self, ns: str, *args: str) -> None:
        run(IP, "-n", ns, *args)

    def sh(self, ns: str, command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """A shell command inside `ns` (lab-internal strings only, never user input)."""
        return run(IP, "netns", "exec", ns, "sh", "-c", command, check=check)

    def exec_argv(self, ns: str, *argv: str) -> list[str]:
        """The argv that runs `argv` inside `ns`."""
        return [IP, "netns", "exec", ns, *argv]

    def close(self) -> None:
        """Kill what runs in the lab and delete every namespace; safe to call twice."""
        for proc in self.processes:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        self.processes.clear()
        for ns in reversed(self.names):
            pids = run(IP, "netns", "pids", ns, check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            run(IP, "netns", "del", ns, check=False)
        self.names.clear()
