"""Peak memory of exporting and of decoding for playback one long recorded call: this tree's
streamed decode beside the reference, the code of an earlier revision (`--before`, by default
the last one that decoded the whole call in memory), in the same run, on the same stored file.

The call is synthetic but stored as a real one: `--minutes` of both legs' Opus packets (real
libopus frames of two tones, 50 per leg sent over and over, ~80 bytes each; `--codec pcmu`:
G.711 µ-law, 160 bytes, as a SIP phone sends), written by
`RecordingService` into an encrypted recording with its row and audit entries in SQLite. Each
path then runs in a child process of its own:
  export    `export_bundle(..., "wav")` (as `callgate recording export`)
  playback  the API's decode of a recording to its WAV file (`routes.recordings._decode`)
and reports its peak RSS (and what the interpreter with its imports held before), wall and CPU
seconds, the WAV's size and its SHA-256: the same bytes before and after.

    .venv/bin/python bench/export_memory.py --minutes 30
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import shutil
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BEFORE = "a410e60"  # main before exports streamed
RATE, FRAME = 48000, 960


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def tone(hz: float, frames: int, codec_name: str) -> list[bytes]:
    """`frames` 20 ms frames of a tone: libopus at 48 kHz, or G.711 µ-law at 8 kHz."""
    import av
    import numpy as np

    rate, size = (RATE, FRAME) if codec_name == "opus" else (8000, 160)
    codec = av.CodecContext.create("libopus" if codec_name == "opus" else "pcm_mulaw", "w")
    codec.sample_rate, codec.layout, codec.format = rate, "mono", "s16"
    if codec_name == "opus":
        codec.bit_rate = 32000
    payloads: list[bytes] = []
    for i in range(frames + 2):
        t = (np.arange(size) + i * size) / rate
        samples = (np.sin(2 * np.pi * hz * t) * 8000).astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate, frame.pts = rate, i * size
        payloads += [bytes(p) for p in codec.encode(frame)]
    return payloads[:frames]


async def record(work: Path, minutes: float, codec: str) -> str:
    """The stored call; its recording id."""
    from callgate.media.packets import MediaPacket
    from callgate.recording.chunks import encode_packets
    from callgate.recording.recorder import RecorderLimits
    from callgate.recording.service import RecordingService, RecordingSettings
    from callgate.recording.store import RecordingRepository
    from callgate.storage.db import open_store

    store = open_store(f"sqlite:///{work / 'db.sqlite'}")
    settings = RecordingSettings(work / "rec", work / "master.key", min_free_bytes=0,
                                 limits=RecorderLimits(3600, 3600))  # fmt: skip
    service = RecordingService(RecordingRepository(store), settings, {})
    parties = {"caller": {"handle": "alice"}, "callee": {"handle": "bob"}}
    recorder = await service.start("c" * 32, parties, "1:record", lambda reason: None, codec)
    payloads = {"caller": tone(440, 50, codec), "callee": tone(880, 50, codec)}
    step = FRAME if codec == "opus" else 160
    frames, batch, start = int(minutes * 60 * 50), [], time.time()
    for n in range(frames):
        for leg, offset in (("caller", 0.0), ("callee", 0.001)):
            batch.append(MediaPacket(leg, payloads[leg][n % 50], n * step, n % 65536, 1, 111,
                                     start + n * 0.02 + offset))  # fmt: skip
        if len(batch) >= 1000 or n == frames - 1:  # ~10 s of the call a chunk
            recorder.writer.append(encode_packets(batch))
            batch = []
    await service.finish(recorder.recording_id)
    store.close()
    return recorder.recording_id


def child(mode: str, work: Path, recording_id: str) -> dict[str, Any]:
    import hashlib

    from callgate.api.routes.recordings import _decode
    from callgate.recording.bundle import export_bundle
    from callgate.recording.keys import load_master_key
    from callgate.recording.service import RecordingService, RecordingSettings
    from callgate.recording.store import RecordingRepository
    from callgate.records.audit import AuditLog, load_or_create_signing_key
    from callgate.storage.db import open_store

    store = open_store(f"sqlite:///{work / 'db.sqlite'}")
    settings = RecordingSettings(work / "rec", work / "master.key")
    row = RecordingRepository(store).get(recording_id)
    assert row is not None
    out = Path(tempfile.mkdtemp(dir=work))
    held = rss_mib()
    wall, cpu = time.monotonic(), time.process_time()
    if mode == "export":
        master = load_master_key(settings.key_file, create=False)
        key = load_or_create_signing_key(work / "audit.key")
        export_bundle(row, settings.directory, master, AuditLog(store), key, out / "b", "bench")
        wav = out / "b" / "audio.wav"
    else:
        service = RecordingService(RecordingRepository(store), settings, {})
        wav = out / "a.wav"
        _decode(service, row, wav)
    wall, cpu = time.monotonic() - wall, time.process_time() - cpu
    digest = hashlib.sha256()
    with wav.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    store.close()
    return {
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_before_mib": round(held, 1),
        "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
        "wav_mib": round(wav.stat().st_size / 2**20, 1), "wav_sha256": digest.hexdigest()[:16],
    }  # fmt: skip


def extract(revision: str, into: Path) -> Path:
    """`src/` of `revision`, from git, into `into`."""
    into.mkdir()
    archive = into / "src.tar"
    with archive.open("wb") as handle:
        subprocess.run(["git", "-C", str(ROOT), "archive", revision, "src"], stdout=handle,
                       check=True)  # fmt: skip
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def older_work(work: Path, src: Path) -> Path:
    """The stored call as an older tree (`src`) can open it: the same recordings and key, and a
    copy of the database stamped back to that tree's schema head (its `open_store` refuses a
    revision it does not know). Sound while the newer migrations leave what an export reads
    (recordings, audit log) as it was: after 24cb7ad's 0028, 0030 adds a SIP credential
    column only."""
    head = re.search(r'HEAD_REVISION = "(\w+)"', (src / "callgate/storage/db.py").read_text())
    older = work / "older"
    older.mkdir()
    for name in ("rec", "master.key"):
        (older / name).symlink_to(work / name)
    shutil.copyfile(work / "db.sqlite", older / "db.sqlite")
    if head is not None:
        with contextlib.closing(sqlite3.connect(older / "db.sqlite")) as db, db:
            db.execute("UPDATE alembic_version SET version_num = ?", (head[1],))
    return older


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--before", default=BEFORE, help="the reference revision")
    parser.add_argument("--codec", choices=("opus", "pcmu"), default="opus")
    parser.add_argument("--child", nargs=3, metavar=("MODE", "WORK", "ID"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, work, recording_id = args.child
        print(json.dumps(child(mode, Path(work), recording_id)))
        return
    with tempfile.TemporaryDirectory(prefix="export-memory-") as tmp:
        work = Path(tmp)
        made = time.monotonic()
        recording_id = asyncio.run(record(work, args.minutes, args.codec))
        size = (work / "rec" / f"{recording_id}.cgrec").stat().st_size
        print(f"a {args.minutes:g}-minute recorded {args.codec} call: {size / 2**20:.1f} MiB stored "
              f"(made in {time.monotonic() - made:.1f} s)")  # fmt: skip
        before = extract(args.before, work / "before")
        trees = {f"before ({args.before})": (before, older_work(work, before)),
                 "after (this tree)": (ROOT / "src", work)}  # fmt: skip
        for mode in ("export", "playback"):
            for name, (src, where) in trees.items():
                env = {**os.environ, "PYTHONPATH": str(src)}
                out = subprocess.run(
                    [sys.executable, __file__, "--child", mode, str(where), recording_id],
                    capture_output=True, text=True, env=env, check=True,
                )  # fmt: skip
                print(f"{mode:8} {name:22} {out.stdout.strip()}")


if __name__ == "__main__":
    main()
