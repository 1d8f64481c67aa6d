"""Wall time of the command line's answer to three bad inputs, each a fresh process:

- a bad option (`lossbench study --bogus`),
- an unknown loss parameter (`lossbench study --losses wgangp --loss-param wgangp.nope=1`),
- an unknown study name (`lossbench study status nosuch`, against a journal holding one study).

Each must be answered (non-zero exit, one line) in under a second. Prints the median and spread of
`--repeats` runs per case, and the load average (timings on a loaded machine are slower):

    python benchmarks/cli_latency.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = {
    "bad option": ["study", "--bogus"],
    "unknown loss parameter": ["study", "--losses", "wgangp", "--loss-param", "wgangp.nope=1"],
    "unknown study name": ["study", "status", "nosuch"],
}


def _journal(root: Path) -> None:
    """A journal storage holding one study, `other` (set-up, not timed)."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(root / "optuna-journal.log")))
    optuna.create_study(study_name="other", storage=storage)


def _time(args: list[str], root: Path) -> tuple[float, int, str]:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "lossbench", *args, "--root", str(root)],
        capture_output=True,
        text=True,
        cwd=root,
    )
    last = [line for line in done.stderr.splitlines() if "rror" in line][-1:]
    return time.perf_counter() - start, done.returncode, last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _journal(root)
        print(f"load average {os.getloadavg()[0]:.2f} before; {args.repeats} runs per case")
        for case, argv in CASES.items():
            runs = [_time(argv, root) for _ in range(args.repeats)]
            seconds = [s for s, _, _ in runs]
            codes = {c for _, c, _ in runs}
            print(
                f"{case:<24} median {statistics.median(seconds):5.2f} s  "
                f"(min {min(seconds):.2f}, max {max(seconds):.2f})  exit {sorted(codes)}  {runs[0][2]}"
            )
        print(f"load average {os.getloadavg()[0]:.2f} after")


if __name__ == "__main__":
    main()
