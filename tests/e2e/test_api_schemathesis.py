"""schemathesis against a running `callgate serve` with seeded data: every operation of its
OpenAPI document, as an administrator, must never answer 5xx and must answer what it documents.

Seeded before the server starts: one account per role, calls (answered, poor, denied), quality
rows and audit entries. Left out: POST /api/logout (it would revoke the token the run uses) and
POST /api/login (public, argon2 by design slow; fuzzed in tests/integration/test_fuzz_server.py).
The run is bounded by `--max-examples`: one pass of each phase. Not by `--max-time`: with it,
schemathesis repeats fuzzing and stateful testing until the time is spent, so every run took the
whole budget however fast the machine (the subprocess timeout still bounds a run that hangs).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from callgate.accounts import AccountService
from callgate.records.cdr import CdrRepository
from callgate.storage.db import open_store, sqlite_url
from tests.cli_process import clean_env
from tests.e2e.helpers import Serve, free_port, http_json, private_relay_range
from tests.unit.api.admin_api.seed import PASSWORDS, seed_accounts, seed_records

MAX_EXAMPLES = 10
RUN_TIMEOUT = 180  # s: ~40 s on a busy 2-core machine
CHECKS = "not_a_server_error,response_schema_conformance,content_type_conformance"


@pytest.fixture
def seeded_serve(tmp_path: Path) -> Iterator[Serve]:
    data_dir = tmp_path / "data"
    store = open_store(sqlite_url(data_dir))
    try:
        seed_accounts(AccountService(store, "callgate"))
        seed_records(store, CdrRepository(store), calls=20)
    finally:
        store.close()
    server = Serve(
        data_dir=data_dir,
        http_port=free_port(),
        turn_port=free_port(),
        relay_ports=private_relay_range(),
        log_path=tmp_path / "serve.log",
    )
    server.start()
    try:
        yield server
    finally:
        code = server.stop()
    assert code == 0, server.log()
    assert "Traceback" not in server.log(), server.log()


@pytest.mark.timeout(RUN_TIMEOUT + 60)  # the server's start and stop around the run
def test_openapi_operations_never_fail_with_5xx(seeded_serve: Serve) -> None:
    status, body = http_json(
        f"{seeded_serve.url}/api/login", body={"handle": "root", "password": PASSWORDS["root"]}
    )
    assert status == 200, body
    schemathesis = Path(sys.executable).with_name("st")
    command = [
        str(schemathesis), "run", f"{seeded_serve.url}/openapi.json",
        "--header", f"Authorization: Bearer {body['token']}",
        "--checks", CHECKS,
        "--max-examples", str(MAX_EXAMPLES),
        "--exclude-path", "/api/logout",
        "--exclude-path", "/api/login",
        "--workers", "1",
        "--seed", "20261127",
        "--no-color",
    ]  # fmt: skip
    run = subprocess.run(
        command, capture_output=True, text=True, timeout=RUN_TIMEOUT, env=clean_env()
    )
    report = run.stdout[-6000:] + run.stderr[-2000:]
    assert run.returncode == 0, report
    assert "Tested:" in run.stdout, report
