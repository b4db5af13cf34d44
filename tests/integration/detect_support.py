"""Where the shared test captures live: $CALLGATE_PCAPS, else ../shared/pcaps next to the
repository, else /work/shared/pcaps; tests skip (saying so) only when none exists."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def pcaps_dir() -> Path:
    candidates = []
    if os.environ.get("CALLGATE_PCAPS"):
        candidates.append(Path(os.environ["CALLGATE_PCAPS"]))
    candidates += [REPO.parent / "shared" / "pcaps", Path("/work/shared/pcaps")]
    for candidate in candidates:
        if (candidate / "ndpi").is_dir():
            return candidate
    pytest.skip(f"no test captures: none of {', '.join(map(str, candidates))} has ndpi/")
