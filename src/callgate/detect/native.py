"""Whether the batch path uses the compiled record walk, header decode and grouping
(`hotloops`, built from hotloops.c when callgate is installed with a C compiler at hand) or its
numpy equivalents. Both give the same report (tests/unit/detect/test_detect_native.py).

CALLGATE_DETECT_COMPILED=0 in the environment forces the numpy path (to compare the two, or to
rule the compiled one out); it is read on every batch, so it also applies inside a running
process."""

from __future__ import annotations

import os

ENV = "CALLGATE_DETECT_COMPILED"
try:
    from callgate.detect import hotloops  # noqa: F401
except ImportError:  # installed without a C compiler (or it failed to build): numpy only
    _BUILT = False
else:
    _BUILT = True


def built() -> bool:
    """Whether the compiled module is installed."""
    return _BUILT


def enabled() -> bool:
    """Whether to use it: installed, and not switched off with CALLGATE_DETECT_COMPILED=0."""
    return _BUILT and os.environ.get(ENV, "1").strip().lower() not in ("0", "no", "false", "off")
