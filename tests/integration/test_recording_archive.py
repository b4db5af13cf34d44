"""The WORM archive against a real S3 API server on loopback (moto's, Object Lock enforced):
`callgate recording archive` copies closed recordings in compliance mode until their retention
ends and audits it; a bucket without Object Lock and a file that differs from its audited digest
are refused; the server itself refuses to delete an archived version before its date, so the
purge keeps the recording; after the date the purge deletes the copy, then the recording.
`callgate serve` with an archive configured archives on its own."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from callgate.accounts.service import AccountService
from callgate.recording import keys
from callgate.recording.archive import ArchiveTarget, RecordingArchive
from callgate.recording.recorder import RecorderLimits
from callgate.recording.retention import RecordingRetention, RetentionPolicy
from callgate.recording.service import RecordingService, RecordingSettings
from callgate.recording.store import RecordingRepository, RecordingRow
from callgate.records.audit import AuditLog
from callgate.records.retention import Retention
from callgate.storage.db import Store, open_store, sqlite_url
from callgate.storage.models import Recording
from tests.cli_process import clean_env
from tests.cli_process import run_in_process as callgate
from tests.integration.serve_fixture import serve
from tests.integration.test_cli import free_port
from tests.integration.test_recording_retention import actions, record

pytestmark = pytest.mark.timeout(180)
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "archive-test", "AWS_SECRET_ACCESS_KEY": "archive-secret"}


@pytest.fixture(scope="module")
def s3_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3 server on 127.0.0.1 until the module's tests are done."""
    port = free_port()
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log, stderr=log, env=clean_env(**CREDENTIALS),
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/moto-api/", timeout=30):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto's S3 server did not start") from None
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def s3(url: str) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"])  # fmt: skip


def set_retention(store: Store, recording_id: str, until: datetime) -> None:
    with store.engine.begin() as conn:
        conn.execute(
            update(Recording)
            .where(Recording.recording_id == recording_id)
            .values(retain_until=until)
        )


def row_of(store: Store, recording_id: str) -> RecordingRow:
    row = RecordingRepository(store).get(recording_id)
    assert row is not None
    return row


def test_archived_recordings_are_locked_until_their_retention_ends(
    s3_url: str, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    settings = RecordingSettings(
        directory=data / "recordings", key_file=keys.master_key_path(data), min_free_bytes=0,
        limits=RecorderLimits(0.05, 30.0), retention=RetentionPolicy(days=30),
    )  # fmt: skip
    store = open_store(sqlite_url(data))
    service = RecordingService(RecordingRepository(store), settings, {})
    ids = {n: asyncio.run(record(service, store, "alice", None)) for n in ("a", "b", "c", "bad")}
    bad_file = settings.directory / f"{ids['bad']}.cgrec"
    tampered = bytearray(bad_file.read_bytes())
    tampered[-5] ^= 0x01
    bad_file.write_bytes(bytes(tampered))

    client = s3(s3_url)
    client.create_bucket(Bucket="plain")
    client.create_bucket(Bucket="worm", ObjectLockEnabledForBucket=True)
    env = {**CREDENTIALS, "CALLGATE_RECORDING__ARCHIVE__ENDPOINT_URL": s3_url,
           "CALLGATE_RECORDING__ARCHIVE__PREFIX": "desk/"}  # fmt: skip

    def cli(*args: str, bucket: str = "worm") -> subprocess.CompletedProcess[str]:
        return callgate(*args, "--data-dir", str(data), cwd=tmp_path,
                        CALLGATE_RECORDING__ARCHIVE__BUCKET=bucket, **env)  # fmt: skip

    # a bucket without Object Lock is refused before anything is written
    refused = cli("recording", "archive", bucket="plain")
    assert refused.returncode == 1 and "Object Lock" in refused.stderr, refused.stderr
    assert client.list_objects_v2(Bucket="plain").get("KeyCount") == 0
    assert row_of(store, ids["a"]).archive is None

    # c's retention ends during the test (30 s: time enough for a few CLI runs on a busy machine)
    soon = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=30)
    set_retention(store, ids["c"], soon)
    held = cli("recording", "hold", ids["c"], "--reason", "Case 7")  # held before its copy
    assert held.returncode == 0, held.stderr
    archived = cli("recording", "archive", "--json")
    assert archived.returncode == 1, archived.stderr  # one recording could not be archived
    run = json.loads(archived.stdout)
    assert sorted(a["recording_id"] for a in run["archived"]) == sorted(
        ids[n] for n in ("a", "b", "c")
    )
    assert list(run["failed"]) == [ids["bad"]] and "audited SHA-256" in run["failed"][ids["bad"]]
    assert run["holds"] == {}  # c was uploaded with its legal hold: nothing left to mirror
    assert row_of(store, ids["bad"]).archive is None

    for name in ("a", "c"):
        row = row_of(store, ids[name])
        assert row.archive is not None and row.archive["bucket"] == "worm"
        assert row.archive["key"] == f"desk/{row.recording_id}/"
        stored = client.get_object(Bucket="worm", Key=f"desk/{row.recording_id}/recording.cgrec",
                                   VersionId=row.archive["versions"]["recording.cgrec"])  # fmt: skip
        assert stored["Body"].read() == (settings.directory / row.file_name).read_bytes()
        assert stored["ObjectLockMode"] == "COMPLIANCE"
        assert row.retain_until is not None
        assert stored["ObjectLockRetainUntilDate"] == row.retain_until.replace(microsecond=0)
        meta = client.get_object(Bucket="worm", Key=f"desk/{row.recording_id}/metadata.json")
        described = json.loads(meta["Body"].read())
        assert described["sha256"] == row.sha256 and described["wrapped_key"] == row.wrapped_key
        entry = next(e for e in AuditLog(store).recent(100) if e.object == f"recording:{row.recording_id}")  # fmt: skip
        assert entry.action == "recording.archived"
        assert json.loads(entry.details)["versions"] == row.archive["versions"]
        # c was on legal hold when archived: so is its copy, on the S3 server
        assert stored.get("ObjectLockLegalHoldStatus", "OFF") == ("ON" if name == "c" else "OFF")
        assert row.archive["legal_hold"] is (name == "c")

    again = cli("recording", "archive", "--json")
    assert json.loads(again.stdout)["archived"] == []  # each recording is archived once

    # before its date the S3 server refuses to delete the archived version, whoever asks ...
    a = row_of(store, ids["a"])
    assert a.archive is not None
    version = a.archive["versions"]["recording.cgrec"]
    with pytest.raises(Exception, match="AccessDenied"):
        client.delete_object(
            Bucket="worm", Key=f"desk/{ids['a']}/recording.cgrec", VersionId=version
        )
    # ... so a purge told (wrongly) that a's retention is over keeps it, and says why
    set_retention(store, ids["a"], datetime(2020, 1, 1, tzinfo=UTC))
    kept = cli("recording", "purge", "--json")
    assert kept.returncode == 0, kept.stderr
    outcome = json.loads(kept.stdout)
    assert outcome["deleted"] == [] and "AccessDenied" in outcome["refused"][ids["a"]]
    assert row_of(store, ids["a"]).archive is not None
    assert (settings.directory / a.file_name).exists()

    # after c's date: the purge deletes its archived versions, then the recording
    while datetime.now(UTC) <= soon + timedelta(seconds=1):
        time.sleep(0.2)
    # past its date, c is kept by its hold here and by its S3 legal hold on the server
    kept = json.loads(cli("recording", "purge", "--json").stdout)
    assert kept["deleted"] == [] and kept["held_kept"] == 1
    c = row_of(store, ids["c"])
    assert c.archive is not None
    c_file = {"Bucket": "worm", "Key": f"desk/{ids['c']}/recording.cgrec",
              "VersionId": c.archive["versions"]["recording.cgrec"]}  # fmt: skip
    with pytest.raises(Exception, match="AccessDenied"):
        client.delete_object(**c_file)
    # the hold lifted (no archive run since): the purge lifts the S3 legal hold, then deletes
    released = cli("recording", "hold", ids["c"], "--release", "--reason", "case closed")
    assert released.returncode == 0, released.stderr
    assert client.get_object_legal_hold(**c_file)["LegalHold"]["Status"] == "ON"
    purged = cli("recording", "purge", "--json")
    outcome = json.loads(purged.stdout)
    assert outcome["deleted"] == [ids["c"]] and list(outcome["refused"]) == [ids["a"]]
    left = client.list_object_versions(Bucket="worm", Prefix=f"desk/{ids['c']}/")
    assert left.get("Versions", []) == []
    assert RecordingRepository(store).get(ids["c"]) is None
    entry = next(e for e in AuditLog(store).recent(100) if e.object == f"recording:{ids['c']}")
    assert (
        entry.action == "recording.purged"
        and json.loads(entry.details)["archive"]["bucket"] == "worm"
    )
    store.close()


def metric(url: str, name: str) -> float | None:
    with urllib.request.urlopen(url, timeout=30) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return None


def wait_until(check: Any, what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        time.sleep(0.2)


def test_serve_archives_closed_recordings_on_its_own(s3_url: str, tmp_path: Path) -> None:
    """serve's archive run fails visibly (/healthz degraded with the reason, metrics, log) while
    the bucket has no Object Lock; a legal hold put through the API wakes the run, which
    archives the recording with an S3 legal hold, and lifting the hold lifts that too; holds put
    and lifted with the CLI on the store (the recording's, a party's) reach S3 within seconds."""
    client = s3(s3_url)
    client.create_bucket(Bucket="served")
    made: list[str] = []

    def prepare(data: Path) -> None:
        settings = RecordingSettings(
            directory=data / "recordings", key_file=keys.master_key_path(data), min_free_bytes=0,
            limits=RecorderLimits(0.05, 30.0), retention=RetentionPolicy(days=30),
        )  # fmt: skip
        store = open_store(sqlite_url(data))
        try:
            service = RecordingService(RecordingRepository(store), settings, {})
            made.append(asyncio.run(record(service, store, "alice", None)))
        finally:
            store.close()
        added = callgate("user", "add", "cora", "--role", "compliance", "--data-dir", str(data),
                         "--password-stdin", cwd=tmp_path, stdin="legal-matters-9\n")  # fmt: skip
        assert added.returncode == 0, added.stderr

    # one run at start, then only when woken (a legal hold changed) within the test's time
    env = {**CREDENTIALS, "CALLGATE_RECORDING__ARCHIVE__BUCKET": "served",
           "CALLGATE_RECORDING__ARCHIVE__ENDPOINT_URL": s3_url,
           "CALLGATE_RECORDING__ARCHIVE__INTERVAL_S": "3600",
           "CALLGATE_RECORDING__ARCHIVE__MAX_LAG_S": "1"}  # fmt: skip
    metrics_port = free_port()
    metrics = f"http://127.0.0.1:{metrics_port}/metrics"
    for web in serve(tmp_path, "--metrics", f"127.0.0.1:{metrics_port}", prepare=prepare, **env):
        wait_until(
            lambda log=web.log: "'served': no Object Lock" in log(),
            "the refusal logged",
        )
        assert metric(metrics, "callgate_recording_archive_ok") == 0
        assert metric(metrics, "callgate_recordings_archived_total") == 0
        assert (metric(metrics, "callgate_recording_archive_lag_seconds") or 0) > 0
        with web.client() as http:
            health = http.get("/healthz")
        assert health.status_code == 200  # calls go on: the node stays in rotation
        body = health.json()
        assert body["status"] == "degraded" and body["recording_archive"]["ok"] is False
        reason = body["recording_archive"]["error"]
        assert "last run failed (the server log says why)" in reason, reason
        assert "served" not in reason, reason  # no bucket name for anyone who asks /healthz
        assert "a closed recording has waited" in reason, reason

        client.put_bucket_versioning(Bucket="served", VersioningConfiguration={"Status": "Enabled"})
        client.put_object_lock_configuration(
            Bucket="served", ObjectLockConfiguration={"ObjectLockEnabled": "Enabled"}
        )
        with web.client() as http:
            login = {"handle": "cora", "password": "legal-matters-9"}
            auth = {
                "Authorization": f"Bearer {http.post('/api/login', json=login).json()['token']}"
            }
            hold = {"hold": True, "reason": "Case 9"}
            put = http.put(f"/api/recordings/{made[0]}/legal-hold", json=hold, headers=auth)
            assert put.status_code == 200, put.text
            wait_until(
                lambda: metric(metrics, "callgate_recordings_archived_total") == 1, "archived"
            )
            assert metric(metrics, "callgate_recording_archive_ok") == 1
            wait_until(
                lambda: metric(metrics, "callgate_recording_archive_lag_seconds") == 0, "no lag"
            )
            wait_until(lambda: http.get("/healthz").json()["status"] == "ok", "healthy again")
            shown = http.get(f"/api/recordings/{made[0]}", headers=auth).json()
            archived = shown["archive"]
            assert archived["legal_hold"] is True and shown["held_by"] == ["recording"]
            key = {"Bucket": "served", "Key": archived["key"] + "recording.cgrec",
                   "VersionId": archived["versions"]["recording.cgrec"]}  # fmt: skip
            assert client.head_object(**key)["ObjectLockLegalHoldStatus"] == "ON"

            release = {"hold": False, "reason": "Case 9 closed"}
            put = http.put(f"/api/recordings/{made[0]}/legal-hold", json=release, headers=auth)
            assert put.status_code == 200, put.text
            wait_until(
                lambda key=key: client.get_object_legal_hold(**key)["LegalHold"]["Status"] == "OFF",
                "the S3 legal hold lifted",
            )

        # holds set on the store itself (the CLI, no API): serve notices them within seconds
        # (its run is an hour away) — on the recording, then on a party of its call
        def on_store(*args: str) -> None:
            done = callgate(*args, "--data-dir", str(tmp_path / "data"), cwd=tmp_path)
            assert done.returncode == 0, done.stderr

        def s3_hold(key: dict[str, str] = key) -> str:
            return str(client.get_object_legal_hold(**key)["LegalHold"]["Status"])

        on_store("recording", "hold", made[0], "--reason", "Case 10")
        wait_until(lambda: s3_hold() == "ON", "the CLI's hold on S3", seconds=30)
        on_store("retention", "hold", "--user", "alice")
        on_store("recording", "hold", made[0], "--release", "--reason", "Case 10 closed")
        on_store("retention", "hold", "--user", "alice", "--release")
        wait_until(lambda: s3_hold() == "OFF", "the party's hold lifted on S3", seconds=30)
        store = open_store(sqlite_url(tmp_path / "data"))
        try:
            wait_until(
                lambda s=store: actions(s, made[0])[-1] == "recording.archive_hold", "audited"
            )
            assert actions(store, made[0]).count("recording.archived") == 1
        finally:
            store.close()
    head = client.head_object(Bucket="served", Key=archived["key"] + "recording.cgrec")
    assert head["ObjectLockMode"] == "COMPLIANCE"


async def test_the_archive_on_each_store_backend(s3_url: str, store: Store, tmp_path: Path) -> None:
    """The same rules with the store on SQLite and on PostgreSQL, without the CLI."""
    settings = RecordingSettings(
        directory=tmp_path / "rec", key_file=tmp_path / "master.key", min_free_bytes=0,
        limits=RecorderLimits(0.05, 30.0), retention=RetentionPolicy(days=30),
    )  # fmt: skip
    repository = RecordingRepository(store)
    recording_id = await record(RecordingService(repository, settings, {}), store, "alice", None)
    bucket = f"backend-{tmp_path.name[-20:].lower().replace('_', '-')}"
    client = s3(s3_url)
    client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    archive = RecordingArchive(ArchiveTarget(bucket, "b/"), repository, settings.directory, client)

    run = archive.archive("compliance1")
    assert [a["recording_id"] for a in run.archived] == [recording_id] and run.failed == {}
    row = row_of(store, recording_id)
    assert row.archive is not None and row.archive["at"] is not None
    assert archive.pending() == []
    # retention over here, not on the S3 server: kept, and why
    set_retention(store, recording_id, datetime(2020, 1, 1, tzinfo=UTC))
    purge = RecordingRetention(repository, settings.directory).purge("system", None, archive.delete)
    assert purge.deleted == [] and "AccessDenied" in purge.refused[recording_id]
    assert row_of(store, recording_id).archive == row.archive

    # a hold on its call keeps the recording: mirrored as an S3 legal hold by the next run,
    # on every archived version, and lifted with the hold; each change audited
    retention = RecordingRetention(repository, settings.directory)
    assert retention.held_by([row]) == {recording_id: []}
    records = Retention(store.engine)
    assert records.hold_call(row.call_id, True, "compliance1")
    assert retention.held_by([row]) == {recording_id: ["call"]}
    assert archive.archive("system").holds == {recording_id: True}
    for name, version in row.archive["versions"].items():
        where = {"Bucket": bucket, "Key": f"b/{recording_id}/{name}", "VersionId": version}
        assert client.get_object_legal_hold(**where)["LegalHold"]["Status"] == "ON"
    assert archive.archive("system").holds == {}  # mirrored once
    held_row = row_of(store, recording_id)
    assert held_row.archive is not None and held_row.archive["legal_hold"] is True
    assert records.hold_call(row.call_id, False, "compliance1")
    assert archive.archive("system").holds == {recording_id: False}
    where = {"Bucket": bucket, "Key": f"b/{recording_id}/recording.cgrec",
             "VersionId": row.archive["versions"]["recording.cgrec"]}  # fmt: skip
    assert client.get_object_legal_hold(**where)["LegalHold"]["Status"] == "OFF"
    assert actions(store, recording_id)[-2:] == ["recording.archive_hold"] * 2
    # a hold on a party keeps it as well, and is mirrored the same way
    AccountService(store, "callgate").create_user("bob")
    assert records.hold_user("bob", True, "compliance1")
    assert retention.held_by([row]) == {recording_id: ["user:bob"]}
    assert archive.archive("system").holds == {recording_id: True}
