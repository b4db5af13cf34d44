"""A small file system of the test's own (a tmpfs it mounts) and a filler that fills it."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def mounted_tmpfs(mount_point: Path, *, size: str, mode: str) -> Iterator[Path]:
    """A tmpfs of `size` with root directory `mode` at `mount_point` (root only; skipped
    elsewhere), unmounted after."""
    mount_point.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode={mode}", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(path: Path) -> None:
    """Write `path` until the file system refuses more (ENOSPC)."""
    chunk = b"\xff" * (1 << 20)
    with path.open("wb", buffering=0) as filler:
        try:
            while True:
                filler.write(chunk)
        except OSError:
            pass
        for size in (1 << 16, 4096, 512):  # the last few pages too
            with contextlib.suppress(OSError):
                while True:
                    filler.write(chunk[:size])
