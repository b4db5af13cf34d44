"""The shell steps of a walkthrough in docs/, so a test can run them exactly as a reader would."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def shell_blocks(doc: str, heading: str) -> list[str]:
    """The ```sh blocks under `heading` (a whole "## …" line) up to the next heading of the same
    level or higher, dedented, in order."""
    lines = (REPO / doc).read_text().splitlines()
    level = heading.split(" ", 1)[0]
    start = lines.index(heading) + 1
    blocks: list[str] = []
    current: list[str] | None = None  # the sh block being read
    fenced = False  # inside any ``` block (a "# comment" there is no heading)
    for line in lines[start:]:
        stripped = line.strip()
        if not fenced and line.startswith("#") and line.split(" ", 1)[0] <= level:
            break
        if stripped.startswith("```"):
            fenced = not fenced
            if fenced and stripped == "```sh":
                current = []
            elif not fenced and current is not None:
                blocks.append(textwrap.dedent("\n".join(current)).strip() + "\n")
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def run_step(step: str, timeout: float = 120) -> str:
    """One shell step, run by bash from the checkout (as the walkthroughs say); its output."""
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", step],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"{step}\n{done.stdout}\n{done.stderr}"
    return done.stdout
