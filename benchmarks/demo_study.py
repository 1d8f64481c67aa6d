"""Wall time of the demo study (studies/demo.toml) with 1 and with 2 workers, and their ratio.

Each run starts from an empty root (fresh journal, MLflow store and feature cache), so both pay the
same set-up. Run on an otherwise idle machine:

    python benchmarks/demo_study.py [--workers 1,2] [--config studies/demo.toml]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time

from lossbench.config import parse_int_list
from lossbench.study import run_study
from lossbench.study_config import load_study_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="studies/demo.toml")
    parser.add_argument("--workers", default="1,2")
    args = parser.parse_args()
    base = load_study_config(args.config)
    print(
        f"{args.config}: {len(base.losses) * len(base.lambdas) * len(base.seeds)} cells, "
        f"{len(os.sched_getaffinity(0))} cores"
    )
    seconds = {}
    for workers in parse_int_list(args.workers, "worker count"):
        with tempfile.TemporaryDirectory() as root:
            start = time.perf_counter()
            summary = run_study(dataclasses.replace(base, workers=workers), root=root)
            seconds[workers] = time.perf_counter() - start
        print(f"workers={workers}: {seconds[workers]:.1f} s ({summary.counts})", flush=True)
    first = next(iter(seconds))
    for workers, s in seconds.items():
        print(f"workers={workers}: {s:.1f} s, speed-up over workers={first}: {seconds[first] / s:.2f}x")


if __name__ == "__main__":
    main()
