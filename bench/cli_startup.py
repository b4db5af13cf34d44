"""CPU time of short `callgate` processes: `--version`, `--help`, a group's and a command's
`--help`, and one real store command (`user list` on a fresh data directory), each the median of
--runs runs, user+system CPU of the child (`resource.getrusage(RUSAGE_CHILDREN)`) beside wall time.

    .venv/bin/python bench/cli_startup.py                        # this checkout
    .venv/bin/python bench/cli_startup.py --reference OLD/src    # and another tree, same run

--reference puts another source tree first on PYTHONPATH (e.g. `git archive main src | tar -x -C
/tmp/old`), so both columns come from one run on one machine load.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CALLGATE = Path(sys.executable).parent / "callgate"
COMMANDS = (["--version"], ["--help"], ["user", "list", "--help"], ["call", "--help"],
            ["user", "list"])  # fmt: skip


def measure(argv: list[str], env: dict[str, str], runs: int) -> tuple[float, float]:
    """Median CPU seconds and median wall seconds of `callgate ARGV`."""
    cpu, wall = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run([str(CALLGATE), *argv], env=env, capture_output=True, check=True)
        wall.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(cpu), statistics.median(wall)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--reference", type=Path, help="another tree's src/ to compare with")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir:
        base = {**os.environ, "CALLGATE_DATA_DIR": data_dir, "COLUMNS": "100"}
        base.pop("PYTHONPATH", None)
        trees = {"this": base}
        if args.reference is not None:
            trees["reference"] = {**base, "PYTHONPATH": str(args.reference.resolve())}
        print(f"{'command':<28}" + "".join(f"{name + ' CPU s':>16}{'wall s':>9}" for name in trees))
        for argv in COMMANDS:
            row = f"{'callgate ' + ' '.join(argv):<28}"
            for env in trees.values():
                cpu, wall = measure(argv, env, args.runs)
                row += f"{cpu:>16.3f}{wall:>9.3f}"
            print(row, flush=True)


if __name__ == "__main__":
    main()
