"""Peak resident memory and wall time of a command, e.g. a bench or a training run.

    python -m lab.peak_rss -- dfplan bench maze2d-large --episodes 100
    python -m lab.peak_rss -- dfplan train maze2d-large --steps 200 --out /tmp/run

Runs the command as a child process, lets its output through, and prints one line: the peak
resident set size (RSS) and the wall time. The peak is the kernel's `ru_maxrss` over the waited-for
children, so with several processes (`--workers`, torchrun) it is the largest single process, not
their sum. Exits with the command's exit code.
"""

from __future__ import annotations

import argparse
import resource
import shlex
import subprocess
import sys
import time


def peak_rss_of(command: list[str]) -> tuple[int, float, float]:
    """Run `command`; (exit code, peak RSS in MiB of its largest process, wall seconds)."""
    tic = time.perf_counter()
    returncode = subprocess.call(command)
    wall = time.perf_counter() - tic
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    unit = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return returncode, peak * unit / 2**20, wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lab.peak_rss",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to measure after --")
    try:
        returncode, peak, wall = peak_rss_of(command)
    except FileNotFoundError:
        parser.error(f"command not found: {command[0]}")
    print(
        f"peak RSS {peak:.1f} MiB, wall {wall:.1f} s, exit code {returncode}: {shlex.join(command)}"
    )
    return returncode


if __name__ == "__main__":
    sys.exit(main())
