"""CPU of starting `callgate serve`: from exec to the first `GET /healthz` answered, user+system
CPU of the server process (all threads) beside wall time, the median of --runs starts.

    .venv/bin/python bench/serve_startup.py                        # this checkout
    .venv/bin/python bench/serve_startup.py --reference OLD/src    # and another tree, same run

--reference puts another source tree first on PYTHONPATH (e.g. `git archive main src | tar -x -C
/tmp/old`); the starts of the two trees alternate, so both columns see the same machine load.
Each start gets a fresh temporary data directory (so the first start's migrations and the first
administrator's password hash count), or with --restart one data directory per tree, made by an
untimed first start, as an operator restarts a node.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serve_process import CallgateServe


def one_start(extra_env: dict[str, str], data_dir: Path | None) -> tuple[float, float]:
    """CPU seconds and wall seconds of one `callgate serve` start, up to /healthz answering."""
    start = time.perf_counter()
    with CallgateServe(users={}, extra_env=extra_env, data_dir=data_dir) as serve:
        with urllib.request.urlopen(f"{serve.url}/healthz", timeout=30) as response:
            response.read()
        wall = time.perf_counter() - start
        return serve.cpu(), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--reference", type=Path, help="another tree's src/ to compare with")
    parser.add_argument("--restart", action="store_true", help="reuse one data dir per tree")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="callgate-bench-") as top:
        run(args, Path(top))


def run(args: argparse.Namespace, top: Path) -> None:
    trees: dict[str, dict[str, str]] = {"this": {}}
    if args.reference is not None:
        trees["reference"] = {"PYTHONPATH": str(args.reference.resolve())}
    cpu: dict[str, list[float]] = {name: [] for name in trees}
    wall: dict[str, list[float]] = {name: [] for name in trees}
    dirs: dict[str, Path | None] = {name: None for name in trees}
    if args.restart:
        for name, env in trees.items():
            dirs[name] = kept = top / name
            kept.mkdir()
            one_start(env, kept)  # untimed: migrations and the first administrator
    for _ in range(args.runs):
        for name, env in trees.items():
            c, w = one_start(env, dirs[name])
            cpu[name].append(c)
            wall[name].append(w)
    print(f"{'tree':<12}{'median CPU s':>14}{'median wall s':>15}   CPU s of each start")
    for name in trees:
        each = " ".join(f"{c:.2f}" for c in cpu[name])
        med_c, med_w = statistics.median(cpu[name]), statistics.median(wall[name])
        print(f"{name:<12}{med_c:>14.2f}{med_w:>15.2f}   {each}")


if __name__ == "__main__":
    main()
