"""Options shared by several commands, each defined once: flag names, default and help.

Used as parameter defaults, e.g. `device: str = options.DEVICE`. Importing this module stays cheap
(typer and lossbench.config only), so `lossbench --help` does not load torch.
"""

from __future__ import annotations

from pathlib import Path

import typer

from lossbench.config import ANALYSIS, CORRECTIONS, DataConfig, TrainConfig

# ----------------------------------------------------------------------- data, weights, device

CLASSES = typer.Option(
    None, "--classes", help="Comma-separated classes to keep, e.g. benign,malignant (default: all)."
)
HOLDOUT = typer.Option(
    None, "--holdout", help="Share of each class held out of training, images of one lesion kept together."
)
SPLIT_SEED = typer.Option(
    None, "--split-seed", help=rf"Seed of the held-out split. \[default: {DataConfig.split_seed}]"
)
WEIGHTS_DIR = typer.Option(
    None,
    "--weights-dir",
    help="Extra folder searched first for weight files (also $LOSSBENCH_WEIGHTS).",
)
RANDOM_WEIGHTS = typer.Option(
    False,
    "--random-weights",
    metavar="",  # a flag: no value
    help="Explicitly allow random weights for pretrained networks (demos, tests); tagged weights=random.",
)
DEVICE = typer.Option(TrainConfig.device, "--device", help="cpu, cuda, cuda:1, ...")

# --------------------------------------------------------------------- study storage and runs

STORAGE = typer.Option(
    None, "--storage", help="Optuna storage: RDB URL or journal file (default: ROOT's journal)."
)
ROOT = typer.Option(
    Path("mlruns"),
    "--root",
    help="Folder of the journal storage, MLflow store, artifacts, checkpoints and caches.",
)
TRACKING_URI = typer.Option(None, "--tracking-uri", help="MLflow tracking URI (default: ROOT's store).")

# ------------------------------------------------------------ analysis: `stats` and `report`

SOURCE = typer.Argument(..., help="Study name, or a CSV with loss, lambda, seed and metric columns.")
ALPHA = typer.Option(ANALYSIS.alpha, "--alpha", help="Significance level for verdicts.")
PAIRED = typer.Option(
    None,
    "--paired/--unpaired",
    metavar="",
    help="Paired t / Wilcoxon, or Welch t / Mann-Whitney U [default: paired when the seeds match].",
    show_default=False,
)
CORRECTION = typer.Option(
    ANALYSIS.correction, "--correction", help=f"Multiple-testing correction: {' or '.join(CORRECTIONS)}."
)
BOOTSTRAP = typer.Option(
    ANALYSIS.bootstrap, "--bootstrap", help="Bootstrap (BCa) CIs instead of t-based.", metavar=""
)
BOOTSTRAP_SEED = typer.Option(ANALYSIS.seed, "--seed", help="Seed of the bootstrap resampling.")
