"""The console's "Unmanaged calling" page: a security officer sees the findings stored by the
monitor inside `serve`, new ones appear without reloading, and the nftables ruleset downloaded
from the page blocks the unsanctioned peer only; compliance officers are refused.
The findings are written into the server's database the way the monitor writes them
(records/findings.py); tests/integration/test_detect_serve.py proves the monitor → database part
on a real interface."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from callgate.detect.live.monitor import Change
from callgate.detect.report import Session
from callgate.records.findings import FindingRepository
from callgate.storage.db import open_store
from tests.browser.helpers import screenshot, sign_in
from tests.e2e.helpers import Serve, http_json, password_of


def change(host: str, app: str, peer: str, sanctioned: bool, packets: int) -> Change:
    now = time.time()
    session = Session(host, app, peer, sanctioned, now - 30, now, packets, packets,
                      packets * 200, packets * 200, confidence=0.9, paths=["p2p"],
                      protocols=["RTP"], evidence=["RTP both ways"])  # fmt: skip
    return Change(session, packets, packets, packets * 200, packets * 200, ("udp/*",))


@pytest.fixture
def findings(serve: Serve) -> Iterator[FindingRepository]:
    store = open_store(serve.database)
    try:
        yield FindingRepository(store)
    finally:
        store.close()


def add_security_officer(serve: Serve) -> None:
    status, body = http_json(
        f"{serve.url}/api/login", body={"handle": "root", "password": password_of("root")}
    )
    assert status == 200, body
    account = {"handle": "sam", "display_name": "Sam Security", "role": "security",
               "password": password_of("sam")}  # fmt: skip
    status, body = http_json(f"{serve.url}/api/users", body=account, token=body["token"])
    assert status == 201, body


def test_security_officer_sees_findings_live_and_compliance_is_refused(
    serve: Serve, new_page: Any, findings: FindingRepository
) -> None:
    errors: list[str] = []
    add_security_officer(serve)
    findings.record("eth0", [change("10.0.0.5", "Skype (classic peer-to-peer)", "104.46.40.49",
                                    False, 40)])  # fmt: skip
    page = new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    sign_in(page, serve.url, "sam", "/console/unmanaged")
    row = page.locator("#findings-table tr[data-sanctioned='false']", has_text="10.0.0.5")
    row.wait_for()
    text = row.inner_text()
    assert "Skype (classic peer-to-peer)" in text and "104.46.40.49" in text
    assert "Unsanctioned" in text and "40 / 40" in text
    assert "Monitoring is off" in page.locator("#monitor-status").inner_text()
    # a finding stored while the page is open shows up without a reload
    findings.record("eth0", [change("10.0.0.6", "allow-listed relay", "192.0.2.10", True, 9)])
    fresh = page.locator("#findings-table tr[data-sanctioned='true']", has_text="10.0.0.6")
    fresh.wait_for(timeout=30_000)
    assert "Sanctioned" in fresh.inner_text()
    page.get_by_label("Unsanctioned only").check()
    fresh.wait_for(state="detached", timeout=30_000)
    assert row.count() == 1
    screenshot(page, "console-unmanaged")
    with page.expect_download() as download_info:
        page.get_by_role("button", name="Download nftables ruleset").click()
    download = download_info.value
    assert download.suggested_filename == "callgate-block.nft"
    ruleset = open(download.path(), encoding="utf-8").read()  # noqa: SIM115
    assert "104.46.40.49 . udp" in ruleset and "192.0.2.10" not in ruleset  # sanctioned: spared
    page.get_by_text("Ruleset downloaded").wait_for()
    # the softphone sends a security officer's "Console" link to this page
    page.goto(serve.url + "/")
    page.locator("#console-link").wait_for()
    assert page.locator("#console-link").get_attribute("href") == "/console/unmanaged"
    # compliance officers read records and audit, not this page
    cora = new_page()
    cora.on("pageerror", lambda exc: errors.append(str(exc)))
    sign_in(cora, serve.url, "cora", "/console/unmanaged")
    cora.get_by_role("heading", name="Access denied").wait_for()
    assert cora.locator("#findings-table").count() == 0
    assert errors == []
