"""The recordings API of a running `callgate serve` over real HTTP: search and paging with bad
input refused precisely (422), and playback for an <audio> element — a short-lived URL for one
officer and one recording, answering Range requests (206, 416), never needing the bearer token
in a URL, its grant and first use audited, refused once the officer's account is disabled."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from callgate.recording import keys
from callgate.recording.recorder import RecorderLimits
from callgate.recording.service import RecordingService, RecordingSettings
from callgate.recording.store import RecordingRepository
from callgate.records.audit import AuditLog
from callgate.storage.db import DB_FILENAME, open_store, sqlite_url
from tests.cli_process import run_in_process as callgate
from tests.integration.serve_fixture import WebServer, serve
from tests.integration.test_recording_access_cli import record_tones
from tests.integration.test_recording_search import record_call

pytestmark = pytest.mark.timeout(180)
OFFICERS = {"cleo": "inquiry-officer-3", "dora": "inquiry-officer-4"}


def prepare(data: Path, made: dict[str, str]) -> None:
    """Two compliance officers; three recorded calls: alice→bob, carol→a number, and tones."""
    for handle, password in OFFICERS.items():
        added = callgate("user", "add", handle, "--role", "compliance", "--data-dir", str(data),
                         "--password-stdin", cwd=data.parent, stdin=password + "\n")  # fmt: skip
        assert added.returncode == 0, added.stderr
    settings = RecordingSettings(
        directory=data / "recordings", key_file=keys.master_key_path(data), min_free_bytes=0,
        limits=RecorderLimits(0.05, 30.0),
    )  # fmt: skip
    store = open_store(sqlite_url(data))
    try:
        service = RecordingService(RecordingRepository(store), settings, {})
        made["alice"] = asyncio.run(record_call(service, store, "alice", "bob"))
        made["number"] = asyncio.run(record_call(service, store, "carol", "+442071234567"))
        made["tones"] = asyncio.run(record_tones(service))
    finally:
        store.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[WebServer, dict[str, str]]]:
    made: dict[str, str] = {}
    for running in serve(tmp_path_factory.mktemp("play"), prepare=lambda d: prepare(d, made)):
        yield running, made


def bearer(web: WebServer, handle: str) -> dict[str, str]:
    with web.client() as client:
        body = {"handle": handle, "password": OFFICERS[handle]}
        answer = client.post("/api/login", json=body)
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['token']}"}


def audited(web: WebServer, recording_id: str) -> list[tuple[str, str, dict[str, Any]]]:
    store = open_store(sqlite_url(web.root / "data"))
    try:
        entries = AuditLog(store).recent(500)
    finally:
        store.close()
    return [(e.actor, e.action, json.loads(e.details)) for e in reversed(entries)
            if e.object == f"recording:{recording_id}"]  # fmt: skip


def test_search_pages_and_refuses_bad_input_precisely(
    server: tuple[WebServer, dict[str, str]],
) -> None:
    web, made = server
    cleo = bearer(web, "cleo")
    with web.client() as client:
        seen, cursor = [], None
        while True:
            params = {"limit": 1, **({"cursor": cursor} if cursor else {})}
            page = client.get("/api/recordings", params=params, headers=cleo)
            assert page.status_code == 200, page.text
            seen += [r["recording_id"] for r in page.json()["items"]]
            cursor = page.json()["next_cursor"]
            if cursor is None:
                break
        assert seen == [made["tones"], made["number"], made["alice"]]

        def found(**params: str) -> list[str]:
            answer = client.get("/api/recordings", params=params, headers=cleo)
            assert answer.status_code == 200, answer.text
            return [r["recording_id"] for r in answer.json()["items"]]

        assert found(party="Alice") == [made["alice"]]  # handles are matched as the CDR has them
        assert found(party="+442071234567") == [made["number"]]
        assert found(call_id="a" * 32) == [made["tones"]]
        assert found(held="false", archive="pending", state="closed") == seen
        assert found(held="true") == [] and found(archive="archived") == []
        assert found(since="2100-01-01T00:00:00") == []

        def refused(**params: str) -> str:
            answer = client.get("/api/recordings", params=params, headers=cleo)
            assert answer.status_code == 422, answer.text
            return json.dumps(answer.json()["detail"])

        assert "since must be before until" in refused(
            since="2026-02-01T00:00:00Z", until="2026-01-01T00:00:00Z"
        )
        assert "cursor is not valid" in refused(cursor="bm90LWEtY3Vyc29y")
        assert "limit" in refused(limit="0") and "less than or equal to 1000" in refused(
            limit="1001"
        )
        assert "call_id" in refused(call_id="../etc") and "pattern" in refused(call_id="A" * 32)
        assert "'archived', 'pending' or 'hold-pending'" in refused(archive="maybe")
        assert "held" in refused(held="perhaps")
        assert "since" in refused(since="yesterday")
        assert "255 characters" in refused(party="x" * 256)

    # the CLI searches the same way, on the store and through the API
    data = ("--data-dir", str(web.root / "data"))
    local = callgate("recording", "list", "--party", "carol", "--since", "-1d", "--json", *data,
                     cwd=web.root)  # fmt: skip
    assert local.returncode == 0, local.stderr
    assert [r["recording_id"] for r in json.loads(local.stdout)] == [made["number"]]
    cli = {"CALLGATE_ADMIN_PASSWORD": OFFICERS["cleo"], "CALLGATE_CONFIG_DIR": str(web.root / "c")}
    remote = callgate("recording", "list", "--party", "+442071234567", "--not-held", "--json",
                      "--server", web.url, "--user", "cleo", cwd=web.root, **cli)  # fmt: skip
    assert remote.returncode == 0, remote.stderr
    assert [r["recording_id"] for r in json.loads(remote.stdout)] == [made["number"]]
    backwards = callgate("recording", "list", "--since", "2026-02-01", "--until", "-2000d",
                         *data, cwd=web.root)  # fmt: skip
    assert backwards.returncode == 2 and "--since must be before --until" in backwards.stderr
    garbled = callgate("recording", "list", "--since", "last week", *data, cwd=web.root)
    assert garbled.returncode == 2 and "--since: not an ISO 8601 time" in garbled.stderr


def test_playback_streams_with_ranges_and_is_audited(
    server: tuple[WebServer, dict[str, str]],
) -> None:
    web, made = server
    tones, cleo = made["tones"], bearer(web, "cleo")
    with web.client() as client:
        plain = {"Authorization": f"Bearer {web.token('bob')}"}
        denied = client.post(f"/api/recordings/{tones}/playback", headers=plain)
        assert denied.status_code == 403, denied.text
        grant = client.post(f"/api/recordings/{tones}/playback", headers=cleo)
        assert grant.status_code == 200, grant.text
        url = grant.json()["url"]
        assert url.startswith(f"/api/recordings/{tones}/stream?ticket=")
        assert cleo["Authorization"].split()[1] not in url  # the bearer token is not in it

        # no Authorization header from here on: the URL alone opens this recording's audio
        whole = client.get(url)
        assert whole.status_code == 200 and whole.headers["Accept-Ranges"] == "bytes"
        size = len(whole.content)
        assert whole.content[:4] == b"RIFF" and size > 48000 * 4  # 2 s of 16-bit stereo
        head = client.get(url, headers={"Range": "bytes=0-43"})
        assert head.status_code == 206 and head.headers["Content-Range"] == f"bytes 0-43/{size}"
        assert head.content == whole.content[:44]
        seek = client.get(url, headers={"Range": f"bytes={size // 2}-"})
        assert seek.status_code == 206 and seek.content == whole.content[size // 2 :]
        tail = client.get(url, headers={"Range": "bytes=-100"})
        assert tail.status_code == 206 and tail.content == whole.content[-100:]
        beyond = client.get(url, headers={"Range": f"bytes={size}-"})
        assert beyond.status_code == 416 and beyond.headers["Content-Range"] == f"bytes */{size}"
        upper = client.get(url, headers={"Range": "Bytes=0-1"})  # the unit is case-insensitive
        assert upper.status_code == 206 and upper.content == whole.content[:2]
        # RFC 9110 §14.2: invalid, several ranges or over-long: ignored, the whole WAV sent
        for ignored in ("bytes=-", "bytes=5-3", "bytes=0-1,4-5", "bytes=0-" + "9" * 300):
            plain_answer = client.get(url, headers={"Range": ignored})
            assert plain_answer.status_code == 200, (ignored, plain_answer.text)
            assert plain_answer.content == whole.content

        # the ticket opens nothing else, and cannot be altered or guessed
        other = client.get(url.replace(tones, made["alice"]))
        assert other.status_code == 403 and "another recording" in other.json()["detail"]
        body, mac = url.split("ticket=")[1].split(".")
        other_mac = ("B" if mac[0] == "A" else "A") + mac[1:]
        forged = client.get(f"/api/recordings/{tones}/stream?ticket={body}.{other_mac}")
        assert forged.status_code == 403 and "not genuine" in forged.json()["detail"]
        # base64url strictly: the same bytes spelt another way (unused low bits set in the last
        # character, a junk character) are not the ticket that was granted
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        respelt = mac[:-1] + alphabet[alphabet.index(mac[-1]) ^ 1]
        for bad in (f"{body}.{respelt}", f"{body}.{mac[:10]}*{mac[10:]}"):
            refused = client.get(f"/api/recordings/{tones}/stream", params={"ticket": bad})
            assert refused.status_code == 403 and "malformed" in refused.json()["detail"]
        missing = client.get(f"/api/recordings/{tones}/stream")
        assert missing.status_code == 422

        # a disabled officer's URL stops working at once
        dora_url = client.post(f"/api/recordings/{tones}/playback", headers=bearer(web, "dora"))
        assert client.get(dora_url.json()["url"]).status_code == 200
        disabled = callgate("user", "disable", "dora", "--data-dir", str(web.root / "data"),
                            cwd=web.root)  # fmt: skip
        assert disabled.returncode == 0, disabled.stderr
        assert client.get(dora_url.json()["url"]).status_code == 403

    # the same URL fetched from another address (a leaked ticket replayed elsewhere) is audited
    with web.client("127.0.0.2") as elsewhere:
        assert elsewhere.get(url, headers={"Range": "bytes=0-1"}).status_code == 206
        assert elsewhere.get(url, headers={"Range": "bytes=2-3"}).status_code == 206

    # audited: bob's refusal, each grant, the first use of each URL from each address (not
    # every range), and the disabled officer's attempt
    trail = [(actor, action, details.get("via"), details.get("client"),
              details.get("another_address"))
             for actor, action, details in audited(web, tones)
             if action.startswith(("recording.play", "recording.access"))]  # fmt: skip
    assert trail == [
        ("bob", "recording.access_denied", None, None, None),
        ("cleo", "recording.playback_url", None, None, None),
        ("cleo", "recording.played", "playback-url", "127.0.0.1", None),
        ("dora", "recording.playback_url", None, None, None),
        ("dora", "recording.played", "playback-url", "127.0.0.1", None),
        ("dora", "recording.access_denied", "playback-url", None, None),
        ("cleo", "recording.played", "playback-url", "127.0.0.2", True),
    ], trail
    # refused tickets are logged with the reason and the recording, never the ticket itself
    logged = web.log()
    assert f"playback ticket refused for recording {tones}: the playback ticket is not genuine" in (
        logged
    )
    assert body not in logged and mac not in logged


def test_playback_is_audited_before_it_is_served_and_refuses_abuse_plainly(
    server: tuple[WebServer, dict[str, str]],
) -> None:
    web, made = server
    alice, cleo = made["alice"], bearer(web, "cleo")
    with web.client() as client:
        url = client.post(f"/api/recordings/{alice}/playback", headers=cleo).json()["url"]
        # the audit log cannot be written (another writer holds SQLite's lock): no audio
        # without its `recording.played`, and the next try is still a first use, audited
        lock = sqlite3.connect(web.root / "data" / DB_FILENAME, timeout=30)
        lock.execute("BEGIN IMMEDIATE")
        try:
            blocked = client.get(url, timeout=60)
        finally:
            lock.rollback()
            lock.close()
        assert blocked.status_code == 503, blocked.text
        assert not [d for _, action, d in audited(web, alice) if action == "recording.played"]
        again = client.get(url)
        assert again.status_code == 200 and again.content[:4] == b"RIFF"
        played = [d for _, action, d in audited(web, alice) if action == "recording.played"]
        assert [d["via"] for d in played] == ["playback-url"]

        # a ticket makes a player's few requests, not a flood: 429 with Retry-After
        for _ in range(500):
            answer = client.get(url, headers={"Range": "bytes=0-0"})
            if answer.status_code != 206:
                break
        assert answer.status_code == 429 and int(answer.headers["Retry-After"]) >= 1

        # a recording that cannot be read: a plain 500, the reason (paths) in the log only
        number = made["number"]
        store = open_store(sqlite_url(web.root / "data"))
        try:
            row = RecordingRepository(store).get(number)
        finally:
            store.close()
        assert row is not None
        stored = web.root / "data" / "recordings" / row.file_name
        stored.rename(stored.with_suffix(".moved"))
        try:
            broken = client.get(f"/api/recordings/{number}/audio", headers=cleo)
        finally:
            stored.with_suffix(".moved").rename(stored)
        assert broken.status_code == 500, broken.text
        assert broken.json()["detail"] == "recording unreadable (the server log says why)"
        assert row.file_name in web.log()

    # searches are audited with their filters (not the cursor): whom an officer looked up
    searched = [d for actor, action, d in audited_all(web) if action == "recording.searched"]
    assert {"party": "alice"} in searched and {"party": "+442071234567"} in searched
    assert {"held": False, "archive": "pending", "state": "closed"} in searched
    assert all("cursor" not in d for d in searched)


def audited_all(web: WebServer) -> list[tuple[str, str, dict[str, Any]]]:
    store = open_store(sqlite_url(web.root / "data"))
    try:
        entries = AuditLog(store).recent(1000)
    finally:
        store.close()
    return [(e.actor, e.action, json.loads(e.details)) for e in reversed(entries)]
