"""A recorded call from the browser softphone: carol's browser calls bob (`callgate answer`, 440 Hz)
under a recording-required rule. carol is told the call is recorded, the call connects through
the server's anchor, a compliance officer plays it from the call's page in the console, and the
exported recording has carol's fake microphone (660 Hz) on the left and bob's tone on the
right. On the console's Recordings page cora sees its retention date, hold and archive state
and the recorder's health, and puts it on legal hold with a reason, then lifts it (audited)."""

from __future__ import annotations

import json
import tarfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.browser.helpers import (
    FAKE_MIC_HZ,
    colleague,
    sign_in,
    wait_for_audio,
    wait_online,
    wait_status,
)
from tests.browser.test_browser_to_python import answering_machine
from tests.e2e.helpers import Serve, http_json, password_of
from tests.e2e.test_recording_e2e import channel_peak, read_stereo


def _root_token(serve: Serve) -> str:
    status, body = http_json(
        f"{serve.url}/api/login", body={"handle": "root", "password": password_of("root")}
    )
    assert status == 200, body
    return str(body["token"])


# a safety net sized for a busy machine: a call, its playback and the recordings page
@pytest.mark.timeout(240)
def test_a_recorded_browser_call_says_so_and_is_recorded(
    serve: Serve, new_page: Any, tmp_path: Path
) -> None:
    token = _root_token(serve)
    rule = {"name": "record-carol", "action": "allow", "caller": {"user": "carol"},
            "callee": {"user": "bob"}, "recording_required": True}  # fmt: skip
    status, created = http_json(f"{serve.url}/api/policy/rules", body=rule, token=token)
    assert status == 201, created
    bob = answering_machine(serve, tmp_path, tmp_path / "bob.wav")
    try:
        assert bob.stdout is not None
        assert json.loads(bob.stdout.readline())["event"] == "ready"
        carol = new_page()
        sign_in(carol, serve.url, "carol")
        wait_online(carol, "bob")
        colleague(carol, "bob").get_by_role("button", name="Call").click()
        carol.locator("#notice", has_text="This call is recorded.").wait_for(timeout=20_000)
        wait_status(carol, "Connected with Bob Baker", timeout=30_000)
        # three seconds of bob's audio through the anchor decoded by the browser (an outcome,
        # not a fixed sleep): the recording then holds more than two seconds
        wait_for_audio(carol, samples=3 * 48_000, packets=150, fresh=False)
        carol.get_by_role("button", name="Hang up").click()
        wait_status(carol, "You hung up")
        out, errors = bob.communicate(timeout=60)  # its exit, slow on a loaded machine
    finally:
        if bob.poll() is None:
            bob.kill()
            bob.communicate()
        request = urllib.request.Request(
            f"{serve.url}/api/policy/rules/{created['id']}",
            method="DELETE",
            headers={"Authorization": f"Bearer {token}"},
        )
        urllib.request.urlopen(request, timeout=30).close()
    events = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert "recording" in [e["event"] for e in events], (events, errors)
    call_id = next(e["call_id"] for e in events if e["event"] == "incoming")

    deadline = time.monotonic() + 60  # the recording closes just after the call (generous)
    while json.loads(serve.cli("recording", "show", call_id, "--json").stdout)["state"] == "open":
        assert time.monotonic() < deadline, "the recording did not close"
        time.sleep(0.2)
    # cora (compliance) sees the recording beside the call's record and plays it
    cora = new_page()
    sign_in(cora, serve.url, "cora", f"/console/records/{call_id}")
    cora.get_by_text("Media anchored").wait_for()
    cora.get_by_role("button", name="Play recording").click()
    player = cora.locator("audio")
    player.wait_for(timeout=20_000)
    duration = cora.wait_for_function(
        "() => { const a = document.querySelector('audio'); "
        "return a && a.readyState >= 1 && a.duration > 2 ? a.duration : null; }",
        timeout=20_000,
    ).json_value()
    assert duration > 2, duration
    # it streams from a short-lived playback URL (no bearer token in it) and seeks (Range)
    src = player.get_attribute("src") or ""
    secrets_kept = cora.evaluate("() => Object.values(sessionStorage)")
    assert "/stream?ticket=" in src and not any(v and v in src for v in secrets_kept), src
    seeked_to = cora.evaluate(
        "() => new Promise((resolve) => { const a = document.querySelector('audio'); "
        "a.addEventListener('seeked', () => resolve(a.currentTime), { once: true }); "
        "a.currentTime = a.duration - 0.5; })"
    )
    assert seeked_to > 1.5, seeked_to

    # the console's recordings page: retention date, hold and archive state; cora holds it
    status, listed = http_json(f"{serve.url}/api/recordings?call_id={call_id}", token=token)
    assert status == 200, listed
    newest = listed["items"][0]
    recording_id, year = newest["recording_id"], newest["retain_until"][:4]
    cora.goto(f"{serve.url}/console/recordings")
    row = cora.locator(f"tr[data-recording-id='{recording_id}']")
    row.wait_for(timeout=20_000)
    assert year in row.locator("td.retain").inner_text()
    # searched by party: nobody's finds nothing, carol's finds it
    party = cora.get_by_label("Party (user or number)")
    party.fill("nobody-at-all")
    cora.get_by_role("button", name="Search").click()
    cora.get_by_text("No recordings match these filters.").wait_for()
    party.fill("carol")
    cora.get_by_role("button", name="Search").click()
    row.wait_for()
    assert "carol" in row.locator("td.parties").inner_text()
    assert row.locator("td.hold").inner_text() == "No"
    assert row.locator("td.archive").inner_text() == "Not yet"  # no archive on this server
    with cora.expect_download(timeout=60_000) as download_info:
        row.get_by_role("button", name="Export bundle").click()
    bundle_tar = tmp_path / "from-console.tar"
    download_info.value.save_as(bundle_tar)
    assert download_info.value.suggested_filename == f"recording-{recording_id}.tar"
    with tarfile.open(bundle_tar) as tar:
        assert {"recording.cgrec", "metadata.json", "audio.wav"} <= set(tar.getnames())
    recorder = cora.locator("#recorder-health").inner_text()
    assert recorder.startswith("Recorder: ready · 0 calls being recorded"), recorder
    row.get_by_role("button", name="Put on hold").click()
    row.get_by_role("alert").filter(has_text="needs a reason").wait_for()  # the server's 422
    row.get_by_label(f"Reason to hold {recording_id}").fill("Matter 2026-17 (FCA inquiry)")
    row.get_by_role("button", name="Put on hold").click()
    held = cora.locator(f"tr[data-recording-id='{recording_id}'] td.hold")
    held.filter(has_text="Matter 2026-17 (FCA inquiry)").wait_for()
    assert held.inner_text().startswith("Held by this recording")
    _, shown = http_json(f"{serve.url}/api/recordings/{recording_id}", token=token)
    assert shown["legal_hold"] and shown["hold_reason"] == "Matter 2026-17 (FCA inquiry)"
    row = cora.locator(f"tr[data-recording-id='{recording_id}']")
    row.get_by_label(f"Reason to lift the hold on {recording_id}").fill("matter closed")
    row.get_by_role("button", name="Lift hold").click()
    cora.locator(f"tr[data-recording-id='{recording_id}'] td.hold", has_text="No").wait_for()
    _, shown = http_json(f"{serve.url}/api/recordings/{recording_id}", token=token)
    assert not shown["legal_hold"] and shown["held_by"] == []
    query = f"action=legal_hold.set&object=recording:{recording_id}"
    _, audit = http_json(f"{serve.url}/api/audit/entries?{query}", token=token)
    details = [(e["actor"], e["details"]) for e in audit["items"]]
    changes = sorted(
        (actor, d["hold"], d.get("reason"))
        for actor, d in ((a, json.loads(d) if isinstance(d, str) else d) for a, d in details)
    )
    query = f"action=recording.exported&object=recording:{recording_id}"
    _, exported = http_json(f"{serve.url}/api/audit/entries?{query}", token=token)
    assert [e["actor"] for e in exported["items"]] == ["cora"]  # the CLI export below is later
    assert changes == [
        ("cora", False, "matter closed"),
        ("cora", True, "Matter 2026-17 (FCA inquiry)"),
    ]

    bundle = tmp_path / "bundle"
    export = serve.cli("recording", "export", call_id, "--out", str(bundle))
    assert export.returncode == 0, export.stderr
    samples, rate = read_stereo(bundle / "audio.wav")
    talk = samples[rate : -rate // 2]
    assert abs(channel_peak(talk[:, 0], rate) - FAKE_MIC_HZ) < 10.0
    assert abs(channel_peak(talk[:, 1], rate) - 440.0) < 5.0
