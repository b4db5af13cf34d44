"""Python client: signaling over WebSocket and calls over aiortc. The CLI softphone built on it
(`callgate login`, `call`, `answer`) is callgate/cli/client.py.

    from callgate.client import SignalingClient, CallSession, place_call, answer_calls

Names are imported on first use, so `callgate --help` does not load aiortc.
"""

from __future__ import annotations

import importlib
from typing import Any

from callgate.client.errors import ClientError, LoginError, SignalingError
from callgate.client.session import Session

_LAZY = {
    "SignalingClient": "callgate.client.signaling",
    "SignalingChannel": "callgate.client.signaling",
    "CallSession": "callgate.client.call",
    "rtc_configuration": "callgate.client.ice",
    "MediaOptions": "callgate.client.softphone",
    "CallResult": "callgate.client.softphone",
    "place_call": "callgate.client.softphone",
    "answer_calls": "callgate.client.softphone",
    "ToneTrack": "callgate.client.audio",
    "write_tone_wav": "callgate.client.audio",
    "dominant_frequency": "callgate.client.audio",
}

__all__ = ["ClientError", "LoginError", "Session", "SignalingError", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
