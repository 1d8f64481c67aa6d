"""Images per second of the busi-cpu recipe on this CPU, before and after a change, side by side.

Each row is one cell kind of studies/busi-cpu.toml (loss × λ × resolution: class-conditional, batch
16, widths 16, z 64, VGG16 relu1_2 + relu2_2 with random weights, which compute what the pretrained
ones do). Each measurement is a fresh process with one torch thread (as a study worker runs a cell),
importing lossbench from either the checkout at `--before` (a git revision, checked out into a
temporary worktree) or this checkout; before and after alternate row by row and repeat by repeat,
so a change in the machine's load hits both. A measurement builds the run (`lossbench.training.train.build`),
takes `--warmup` generator steps, then times `--steps` more. images/s counts images through the
generator: batch × (n_critic + 1) per generator step. Printed: the median of the repeats with their
range, and the ratio of the medians.

`--layout` also measures the split of the machine's cores for a study: one process with 2 torch
threads against two processes with one thread each, side by side (images/s of the machine).

    python benchmarks/cpu_speed.py --before 33df282 [--repeats 3] [--resolutions 32,64] [--layout]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
N_IMAGES = 624  # BUSI's train part (holdout 0.2): the phantom with as many images


def measure(args: argparse.Namespace) -> None:
    """Child: seconds per generator step of one row, printed as JSON."""
    import torch

    from lossbench.config import TrainConfig
    from lossbench.data import load_dataset
    from lossbench.training.train import build, train_step

    torch.set_num_threads(args.threads)
    data = load_dataset(f"phantom:{N_IMAGES}", args.resolution)
    config = TrainConfig(
        loss=args.loss, lam=args.lam, batch_size=16, z_dim=64, g_width=16, d_width=16, conditional=True,
        perceptual_layers=("relu1_2", "relu2_2"), random_weights=True, progress=False,
    )  # fmt: skip
    run = build(data.images, config, data.labels)
    for step in range(args.warmup):
        train_step(run, step)
    start = time.perf_counter()
    for step in range(args.warmup, args.warmup + args.steps):
        train_step(run, step)
    seconds = (time.perf_counter() - start) / args.steps
    precision = getattr(run, "precision", "fp32")
    print(json.dumps({"seconds": seconds, "images": 16 * (run.n_critic + 1), "precision": precision}))


def child(source: Path, row: dict, threads: int, args: argparse.Namespace) -> subprocess.Popen:
    command = [sys.executable, __file__, "--child", "--threads", str(threads)]
    command += ["--steps", str(args.steps), "--warmup", str(args.warmup)]
    command += ["--loss", row["loss"], "--lam", str(row["lam"]), "--resolution", str(row["resolution"])]
    env = {**os.environ, "PYTHONPATH": str(source), "OMP_NUM_THREADS": str(threads)}
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True, cwd=source)


def result(process: subprocess.Popen) -> dict:
    out, _ = process.communicate()
    if process.returncode:
        raise SystemExit(f"a measurement failed (exit {process.returncode})")
    return json.loads(out.strip().splitlines()[-1])


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.0f} ({min(values):.0f}-{max(values):.0f})"


def compare(rows: list[dict], sources: dict[str, Path], args: argparse.Namespace) -> None:
    speed: dict[tuple[int, str], list[float]] = {}
    precision: dict[tuple[int, str], str] = {}
    for _ in range(args.repeats):
        for i, row in enumerate(rows):
            for name, source in sources.items():
                r = result(child(source, row, 1, args))
                speed.setdefault((i, name), []).append(r["images"] / r["seconds"])
                precision[(i, name)] = r["precision"]
    print("| R | loss | λ | before: images/s | after: images/s | after / before |")
    print("|---|---|---|---|---|---|")
    for i, row in enumerate(rows):
        before, after = speed[(i, "before")], speed[(i, "after")]
        ratio = statistics.median(after) / statistics.median(before)
        cells = f"{spread(before)} {precision[(i, 'before')]} | {spread(after)} {precision[(i, 'after')]}"
        print(f"| {row['resolution']} | {row['loss']} | {row['lam']:g} | {cells} | {ratio:.2f}× |")


def layout(rows: list[dict], source: Path, args: argparse.Namespace) -> None:
    """Machine throughput of one 2-thread process against two 1-thread processes at once."""
    print("\n| R | loss | λ | 1 process × 2 threads: images/s | 2 processes × 1 thread: images/s | ratio |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        one, two = [], []
        for _ in range(args.repeats):
            r = result(child(source, row, 2, args))
            one.append(r["images"] / r["seconds"])
            pair = [child(source, row, 1, args) for _ in range(2)]
            two.append(sum(r["images"] / r["seconds"] for r in map(result, pair)))
        ratio = statistics.median(two) / statistics.median(one)
        cells = f"{spread(one)} | {spread(two)} | {ratio:.2f}×"
        print(f"| {row['resolution']} | {row['loss']} | {row['lam']:g} | {cells} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="HEAD", help="git revision of the baseline")
    parser.add_argument("--resolutions", default="32,64")
    parser.add_argument("--losses", default="wgangp,bce")
    parser.add_argument("--lambdas", default="0,5")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--layout", action="store_true", help="also compare 1×2 threads with 2×1")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--loss", help=argparse.SUPPRESS)
    parser.add_argument("--lam", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--resolution", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return measure(args)
    rows = [
        {"resolution": int(r), "loss": loss, "lam": float(lam)}
        for r in args.resolutions.split(",")
        for loss in args.losses.split(",")
        for lam in args.lambdas.split(",")
    ]
    print(
        f"busi-cpu recipe rows, one torch thread per process, {args.warmup} warm-up + {args.steps} timed "
        f"steps, {args.repeats} repeats; before: {args.before}; load average {os.getloadavg()[0]:.1f}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        before = Path(tmp) / "before"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(before), args.before],
                       check=True, capture_output=True)  # fmt: skip
        try:
            compare(rows, {"before": before, "after": ROOT}, args)
            if args.layout:
                layout([r for r in rows if r["resolution"] == max(r["resolution"] for r in rows)], ROOT, args)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(before)], check=True)
    print(f"load average after {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
