"""The exactly-once kill and fencing tests, run again and again after other integration tests.

    python tests/benchmarks/exactly_once_loop.py [RUNS] [RESULT_FILE]

Each iteration is one pytest process that first runs ``tests/integration/test_pipeline.py`` on
Apache Kafka (kills, restarts and a shared group on the session's broker, as in the default run)
and then the two exactly-once tests, in that order and on the same session broker and Ray. The
outcome of every test is read from pytest's JUnit XML, a failure's message is kept, and the tally
per test is printed at the end (and written to RESULT_FILE as markdown when given). Exits 1 if any
exactly-once test failed. ``EXACTLY_ONCE_LOOP_LOGS=DIR`` keeps each run's whole output in DIR.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BEFORE = "tests/integration/test_pipeline.py"
UNDER_TEST = "tests/integration/test_exactly_once.py"
SELECT = "apache or answered_once_for_read_committed or paused_member"
WATCHED = ("answered_once_for_read_committed", "paused_member")


def one_run(report: Path) -> tuple[dict[str, str], float, str]:
    """Outcome per test (passed, failed, error, skipped), wall seconds, pytest's output tail."""
    env = dict(os.environ)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", BEFORE, UNDER_TEST, "-k", SELECT, "-q", "-p", "no:cacheprovider",
         f"--junitxml={report}"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False,
    )
    wall = time.monotonic() - started
    if logs := os.environ.get("EXACTLY_ONCE_LOOP_LOGS"):  # keep every run's whole output there
        Path(logs).mkdir(parents=True, exist_ok=True)
        (Path(logs) / f"{report.stem}.log").write_text(done.stdout + done.stderr)
    outcomes: dict[str, str] = {}
    if report.exists():
        for case in ET.parse(report).getroot().iter("testcase"):
            name = case.get("name", "?")
            kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
            outcomes[name] = kinds[0] if kinds else "passed"
            for child in case:
                if child.tag in ("failure", "error"):
                    outcomes[name] += ": " + (child.get("message") or "").splitlines()[0][:300]
    return outcomes, wall, (done.stdout + done.stderr)[-3000:]


def main() -> int:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    result_file = Path(sys.argv[2]) if len(sys.argv) > 2 else None
    tally: dict[str, Counter[str]] = {}
    failures: list[str] = []
    walls: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(1, runs + 1):
            outcomes, wall, tail = one_run(Path(tmp) / f"run-{n}.xml")
            walls.append(wall)
            if not outcomes:
                failures.append(f"run {n}: pytest reported nothing\n{tail}")
            for name, outcome in outcomes.items():
                tally.setdefault(name, Counter())[outcome.split(":")[0]] += 1
                if outcome.startswith(("failure", "error")):
                    failures.append(f"run {n}: {name}: {outcome}")
            watched = {k: v for k, v in outcomes.items() if k.split("[")[0].endswith(WATCHED) or any(w in k for w in WATCHED)}
            print(f"run {n}/{runs} ({wall:.0f} s): " + ", ".join(f"{k.split('_')[-1]}={v.split(':')[0]}" for k, v in watched.items()),
                  flush=True)
    lines = [f"# Exactly-once kill and fencing tests after test_pipeline (Apache Kafka), {runs} runs", "",
             f"Command: `python tests/benchmarks/exactly_once_loop.py {runs}`; one pytest process per run: "
             f"`{BEFORE}` then `{UNDER_TEST}`, `-k \"{SELECT}\"`. Median run {sorted(walls)[len(walls) // 2]:.0f} s.", "",
             "| test | passed | failed | error | skipped |", "|---|---|---|---|---|"]
    for name, counts in sorted(tally.items()):
        lines.append(f"| {name} | {counts['passed']} | {counts['failure']} | {counts['error']} | {counts['skipped']} |")
    lines += ["", "Failures:" if failures else "No failures.", *(f"- {f}" for f in failures)]
    text = "\n".join(lines) + "\n"
    print(text)
    if result_file is not None:
        result_file.write_text(text)
    watched_failed = any(any(w in f for w in WATCHED) or "reported nothing" in f for f in failures)
    return 1 if watched_failed else 0


if __name__ == "__main__":
    sys.exit(main())
