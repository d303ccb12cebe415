"""Start and stop the two-node Ray cluster of the placement and autoscaling tests N times, and
tally how often the second node joined.

The second node runs in its own mount namespace, as in the autoscaling test. A start failed in
CI when the second node's raylet could not bind one of the ports chosen for it
(``0.0.0.0:42311``: address in use): ports were then chosen with ``bind(0)``, from the range the
kernel and Ray's own port picker also draw from. ``free_port`` now chooses below that range.

    python -m tests.benchmarks.two_node_start_loop --starts 10 --out tests/benchmarks/results/two_node_start_loop.md
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from rich.progress import track

from tests.support.ray_cluster import two_node_cluster


def _start_once() -> str:
    with tempfile.TemporaryDirectory() as work:
        hidden = Path(work) / "hidden"
        hidden.mkdir()
        try:
            with two_node_cluster(Path(work), hidden_on_second=[hidden]):
                return "joined"
        except AssertionError as exc:
            return "failed: " + " ".join(str(exc).split())[:300]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("tests/benchmarks/results/two_node_start_loop.md"))
    args = parser.parse_args()

    rows = []
    for start in track(range(1, args.starts + 1), description="two-node cluster starts"):
        load = os.getloadavg()[0]
        began = time.monotonic()
        outcome = _start_once()
        rows.append(f"| {start} | {outcome} | {time.monotonic() - began:.0f} | {load:.2f} |")
        print(rows[-1])
    joined = sum("| joined |" in row for row in rows)
    args.out.write_text("\n".join([
        "# Two-node cluster starts", "",
        f"`python -m tests.benchmarks.two_node_start_loop --starts {args.starts}` on "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores: **{joined} of {args.starts} joined**.", "",
        "| start | outcome | seconds | load at start |", "|---|---|---|---|", *rows,
    ]) + "\n")


if __name__ == "__main__":
    main()
