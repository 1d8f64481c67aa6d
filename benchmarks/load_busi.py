"""Time loading all BUSI images at one resolution, and generating the built-in phantom.

    python benchmarks/load_busi.py [BUSI_DIR] [--resolution 128] [--repeats 3] [--threads N]

Prints wall and CPU seconds of: the first `load_dataset` call (file cache as the OS left it), the best
of `--repeats` later calls, decoding on one thread (the baseline) against the thread pool, and
`phantom` for the same number of images. Ratios are against the baseline measured in this run.
`--threads` sets torch's intra-op threads (the phantom); 1 gives steadier figures on a busy machine.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from lossbench.data import load_dataset
from lossbench.data.busi import busi_root, scan_busi
from lossbench.data.images import decode_all
from lossbench.data.phantom import PHANTOM_SIZE, phantom

DEFAULT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "busi"


def timed(fn, repeats: int = 1) -> tuple[float, float]:
    """Best (wall, cpu) seconds of `repeats` calls of `fn`."""
    best = (float("inf"), float("inf"))
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        best = min(best, (time.perf_counter() - wall, time.process_time() - cpu))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("busi", nargs="?", type=Path, default=DEFAULT)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    r = args.resolution

    first = timed(lambda: load_dataset(str(args.busi), r))
    data = load_dataset(str(args.busi), r)
    warm = timed(lambda: load_dataset(str(args.busi), r), args.repeats)
    paths = [p for files in scan_busi(busi_root(args.busi.resolve())).files.values() for p in files]
    serial = timed(lambda: decode_all(paths, r, workers=1), args.repeats)
    pooled = timed(lambda: decode_all(paths, r), args.repeats)
    synth = timed(lambda: phantom(PHANTOM_SIZE, r), args.repeats)

    print(f"BUSI {args.busi}: {len(data)} images at {r}x{r}, {len(data.skipped)} files skipped")
    print(f"torch threads {torch.get_num_threads()}")
    rows = [
        ("load_dataset, first call", first),
        (f"load_dataset, best of {args.repeats}", warm),
        ("decode, 1 thread (baseline)", serial),
        ("decode, thread pool", pooled),
        (f"phantom, {PHANTOM_SIZE} images", synth),
    ]
    for name, (wall, cpu) in rows:
        print(f"{name:<30} wall {wall:6.2f} s  cpu {cpu:6.2f} s  {wall / serial[0]:5.2f}x baseline wall")


if __name__ == "__main__":
    main()
