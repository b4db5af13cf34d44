"""A transcoded call's recording changes its codec once the callee answered (store.py): the
change is in the audit log beside `recording.started`, in the same transaction, and a recording
that is not open (closed, or never made) is refused, its row and the log unchanged."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from callgate.recording.store import RecordingRepository
from callgate.recording.writer import RecordingFailure
from callgate.records.audit import AuditLog
from callgate.storage.db import open_store, sqlite_url

RID = "0123456789abcdef0123456789abcdef"
AT = datetime(2026, 12, 7, 23, 0, tzinfo=UTC)


def test_a_codec_change_is_audited_and_needs_an_open_recording(tmp_path: Path) -> None:
    store = open_store(sqlite_url(tmp_path))
    repository, audit = RecordingRepository(store), AuditLog(store)
    row = {
        "recording_id": RID, "call_id": "c" * 32, "file_name": f"{RID}.cgrec",
        "key_id": "k" * 16, "wrapped_key": "w" * 64, "codec": "opus/48000/2",
        "policy_rule": None, "metadata_json": "{}",
    }  # fmt: skip
    repository.create(row, AT)
    repository.set_codec(RID, "opus/48000/2+pcmu/8000/1", AT)
    started, changed = reversed(audit.recent(2))
    assert (started.action, changed.action) == ("recording.started", "recording.codec")
    assert changed.object == f"recording:{RID}"
    assert json.loads(changed.details) == {
        "call_id": "c" * 32, "codec": "opus/48000/2+pcmu/8000/1", "previous": "opus/48000/2",
    }  # fmt: skip
    found = repository.get(RID)
    assert found is not None and found.codec == "opus/48000/2+pcmu/8000/1"
    repository.finish(RID, "closed", AT, chunks=1, size=1, file_sha256="0" * 64, metadata={})
    for rid in (RID, "f" * 32):  # closed; unknown
        with pytest.raises(RecordingFailure):
            repository.set_codec(rid, "pcmu/8000/1", AT)
    assert audit.recent(1)[0].action == "recording.closed"
    found = repository.get(RID)
    assert found is not None and found.codec == "opus/48000/2+pcmu/8000/1"


def test_a_ring_group_member_who_answered_is_named_in_the_open_recordings_metadata(
    tmp_path: Path,
) -> None:
    """The callee of a ring group's recording becomes the member who answered, in the row's
    metadata (what recovery after a crash keeps) and the audit log; not once it is closed."""
    store = open_store(sqlite_url(tmp_path))
    repository, audit = RecordingRepository(store), AuditLog(store)
    before = [{"id": "caller", "handle": "+442071234567"}, {"id": "callee", "handle": "group:desk"}]
    row = {
        "recording_id": RID, "call_id": "c" * 32, "file_name": f"{RID}.cgrec",
        "key_id": "k" * 16, "wrapped_key": "w" * 64, "codec": "pcmu/8000/1",
        "policy_rule": "record-desk", "metadata_json": json.dumps({"participants": before}),
    }  # fmt: skip
    repository.create(row, AT)
    after = [before[0], {"id": "callee", "handle": "bob", "device": "d2", "ring_group": "desk"}]
    repository.set_participants(RID, after, "callee", AT)
    found = repository.get(RID)
    assert found is not None and found.metadata["participants"] == after
    named = audit.recent(1)[0]
    assert (named.action, json.loads(named.details)) == (
        "recording.participant", {"call_id": "c" * 32, "role": "callee", "handle": "bob"}
    )  # fmt: skip
    repository.finish(RID, "closed", AT, chunks=1, size=1, file_sha256="0" * 64, metadata={})
    with pytest.raises(RecordingFailure):
        repository.set_participants(RID, before, "callee", AT)
    assert audit.recent(1)[0].action == "recording.closed"
