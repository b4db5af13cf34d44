"""The NAT lab fixture: one lab (namespaces, NAT routers, two `callgate serve`) per test module.

Skipped with the reason when the machine cannot build it (not root, no `ip netns`, no iptables
NAT); but in CI (`CI=true`) running as root, a missing capability fails instead: CI must never
silently stop proving that calls cross NATs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.lab.matrix import ANCHORED
from tests.lab.netns import missing_capability
from tests.lab.service import LabServer, start_servers, stop_servers, unexpected_errors
from tests.lab.topology import Lab, build


@dataclass
class RunningLab:
    lab: Lab
    servers: dict[str, LabServer]
    root: Path


def require_lab() -> None:
    reason = missing_capability()
    if reason is None:
        return
    if os.environ.get("CI", "").lower() == "true" and os.geteuid() == 0:
        pytest.fail(f"CI runs as root, so the NAT lab must run: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def running_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLab]:
    require_lab()
    root = tmp_path_factory.mktemp("lab")
    lab = build()
    servers: dict[str, LabServer] = {}
    try:
        anchored = [(f"{caller}-a", f"{callee}-b") for caller, callee in ANCHORED]
        servers = start_servers(lab, root, anchored)
        yield RunningLab(lab, servers, root)
        codes = stop_servers(servers)
        for server in servers.values():
            assert codes[server.name] == 0, f"serve {server.name} exited {codes}:\n{server.log()}"
            assert not unexpected_errors(server.log()), server.log()
    finally:
        stop_servers(servers)
        lab.close()
