"""Wall time of the demo study (studies/demo.toml) with 1 and with 2 workers, and their ratio.

Each run starts from an empty root (fresh journal, MLflow store and feature cache), so both pay the
same set-up. Run on an otherwise idle machine:

    python benchmarks/demo_study.py [--workers 1,2] [--config studies/demo.toml] [--repeats 1]

Prints the load average with every number (a loaded machine makes both runs slower, unevenly).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import tempfile
import time

from lossbench.config import parse_int_list
from lossbench.study import run_study
from lossbench.study.definition import load_study_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="studies/demo.toml")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    base = load_study_config(args.config)
    print(
        f"{args.config}: {len(base.losses) * len(base.lambdas) * len(base.seeds)} cells, "
        f"{len(os.sched_getaffinity(0))} cores"
    )
    seconds: dict[int, list[float]] = {}
    for repeat in range(args.repeats):
        for workers in parse_int_list(args.workers, "worker count"):
            with tempfile.TemporaryDirectory() as root:
                load = os.getloadavg()[0]
                start = time.perf_counter()
                summary = run_study(dataclasses.replace(base, workers=workers), root=root)
                seconds.setdefault(workers, []).append(time.perf_counter() - start)
            print(
                f"repeat {repeat}: workers={workers}: {seconds[workers][-1]:.1f} s ({summary.counts}), "
                f"load average {load:.2f} before, {os.getloadavg()[0]:.2f} after",
                flush=True,
            )
    first = next(iter(seconds))
    for workers, runs in seconds.items():
        ratios = [a / b for a, b in zip(seconds[first], runs, strict=True)]
        print(
            f"workers={workers}: median {statistics.median(runs):.1f} s, speed-up over workers={first}: "
            f"{statistics.median(ratios):.2f}x (min {min(ratios):.2f}, max {max(ratios):.2f})"
        )


if __name__ == "__main__":
    main()
