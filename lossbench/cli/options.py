"""Options shared by several commands, each defined once: flag names, default and help.

Used as parameter defaults, e.g. `device: str = options.DEVICE`. Importing this module stays cheap
(typer and lossbench.config only), so `lossbench --help` does not load torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from lossbench.config import ANALYSIS, CORRECTIONS, DataConfig, TrainConfig, config_field, lambda_text


def config_option(flag: str, key: str, root: Any, more: str = "", **kw: Any) -> Any:
    """`flag` setting config key `key` (dotted, e.g. "train.steps") of the config `root` (an
    instance): None by default (the file's or the config's value), with the field's `help` metadata
    (then `more`, e.g. how the command line spells a list) and the value `root` holds as the shown
    default."""
    field, default = config_field(root, key)
    text = f"{field.metadata.get('help', '')} {more}".strip()
    if isinstance(default, tuple):
        shown = ",".join(lambda_text(v) if isinstance(v, float) else str(v) for v in default) or "none"
    else:
        shown = lambda_text(default) if isinstance(default, float) else default
    return typer.Option(None, flag, help=rf"{text} \[default: {shown}]".strip(), **kw)


# ----------------------------------------------------------------------- data, weights, device

CLASSES = config_option("--classes", "classes", DataConfig(), "Comma-separated, e.g. benign,malignant.")
HOLDOUT = config_option("--holdout", "holdout", DataConfig())
SPLIT_SEED = config_option("--split-seed", "split_seed", DataConfig())
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
