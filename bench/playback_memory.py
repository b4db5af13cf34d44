"""Memory of serving one byte range of a long recording: the decoded-to-file path of
recording/decoded.py (decode once to a file, read the range from it) beside the reference, the
previous in-memory path (the whole WAV as bytes, then the slice), in the same run.

Each path runs in its own child process on the same synthetic call (Opus silence frames, both
legs, `--minutes` long) and reports its peak RSS, the RSS growth of serving a range once the
audio is decoded, wall and CPU seconds, and what one more range costs a recording the previous
cache did not keep (over 256 MiB of WAV, ~23 minutes): a whole decode then, a read now.

    .venv/bin/python bench/playback_memory.py --minutes 10
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SILENCE = b"\xf8\xff\xfe"  # an Opus 20 ms silence frame (RFC 6716 §3.1, code 0, CELT FB)


def packets(minutes: float) -> list[object]:
    from callgate.recording.chunks import Packet

    frames = int(minutes * 60 * 50)
    return [Packet(leg, seq, seq * 960, seq * 0.02, SILENCE)
            for leg in ("caller", "callee") for seq in range(frames)]  # fmt: skip


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def child(mode: str, minutes: float) -> None:
    from callgate.recording.audio import stereo_wav, stereo_wav_bytes

    calls = packets(minutes)
    start, cpu = time.monotonic(), time.process_time()
    with tempfile.TemporaryDirectory() as work:
        if mode == "file":
            path = Path(work) / "a.wav"
            stereo_wav(calls, path)  # type: ignore[arg-type]
            del calls
            before, ranged = rss_kib(), time.process_time()
            fd = os.open(path, os.O_RDONLY)
            size = os.fstat(fd).st_size
            piece = os.pread(fd, 1 << 20, size // 2)
            os.close(fd)
            per_range = time.process_time() - ranged  # the file is kept: a range is a read
        else:
            data, _ = stereo_wav_bytes(calls)  # type: ignore[arg-type]
            del calls
            before = rss_kib()
            size = len(data)
            piece = data[size // 2 : size // 2 + (1 << 20)]
            per_range = time.process_time() - cpu  # past 256 MiB each range decoded again
        grown = rss_kib() - before
    print(json.dumps({
        "mode": mode, "wav_mib": round(size / 2**20, 1), "range_mib": len(piece) / 2**20,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_held_after_decode_mib": round(before / 1024, 1),
        "range_growth_mib": round(grown / 1024, 1),
        "wall_s": round(time.monotonic() - start, 2),
        "cpu_s": round(time.process_time() - cpu, 2),
        "per_range_cpu_s_when_not_cached": round(per_range, 4),
    }))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--child", choices=("file", "memory"))
    args = parser.parse_args()
    if args.child:
        child(args.child, args.minutes)
        return
    print(f"one 1 MiB range of a {args.minutes:g}-minute stereo 48 kHz recording")
    for mode in ("memory", "file"):
        out = subprocess.run([sys.executable, __file__, "--child", mode, "--minutes",
                              str(args.minutes)], capture_output=True, text=True, check=True)  # fmt: skip
        print(out.stdout.strip())


if __name__ == "__main__":
    main()
