"""callgate's one C extension module: the detector's record walk, header decode and grouping
(src/callgate/detect/hotloops.c). Optional: without a C compiler or Python's headers the install
goes on without it and `callgate detect` uses its numpy path (docs/detection.md, "Speed").
Everything else about the package is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "callgate.detect.hotloops",
            sources=["src/callgate/detect/hotloops.c"],
            depends=["src/callgate/detect/hotloops_frames.h"],  # included by hotloops.c
            # -ffp-contract=off: timestamps computed exactly as numpy does (no fused multiply-add)
            extra_compile_args=["-O2", "-ffp-contract=off"],
            optional=True,
        )
    ]
)
