"""Run a command as several processes, e.g. members of one consumer group, under one parent.

    python -m bench.group N COMMAND...

The parent imports nothing but the standard library (its memory is not the system's), so the
benchmark measures the whole group as one process tree; SIGTERM to it stops every member.
"""

from __future__ import annotations

import signal
import subprocess
import sys


def main(argv: list[str]) -> int:
    count, command = int(argv[0]), argv[1:]
    members = [subprocess.Popen(command) for _ in range(count)]

    def stop(*_: object) -> None:
        for member in members:
            if member.poll() is None:
                member.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    codes = [member.wait() for member in members]
    return max(codes, key=abs)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
