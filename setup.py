"""The one compiled part of callgate: the detector's record walk and header decode
(src/callgate/detect/_native.c). Optional: without a C compiler or Python's headers the install
goes on without it and `callgate detect` uses its numpy path (docs/detection.md, "Speed").
Everything else about the package is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "callgate.detect._native",
            sources=["src/callgate/detect/_native.c"],
            # -ffp-contract=off: timestamps computed exactly as numpy does (no fused multiply-add)
            extra_compile_args=["-O2", "-ffp-contract=off"],
            optional=True,
        )
    ]
)
