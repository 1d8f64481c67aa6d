"""`lossbench utility`: do a conditional checkpoint's synthetic images help a classifier on held-out data?"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import typer

from lossbench.cli import options
from lossbench.config import DataConfig, EvalConfig

DEFAULTS = EvalConfig()


def utility(
    checkpoint: Path = typer.Option(
        ..., "--checkpoint", help="checkpoint.pt of a conditional run (train.conditional = true)."
    ),
    data: str = typer.Option(..., "--data", help="The dataset the run was trained on."),
    holdout: float | None = options.HOLDOUT,
    split_seed: int | None = options.SPLIT_SEED,
    seeds: int = typer.Option(DEFAULTS.utility_seeds, "--seeds", help="Classifier seeds 0..N-1."),
    steps: int = typer.Option(DEFAULTS.utility_steps, "--steps", help="Optimiser steps per classifier."),
    classifier: str = typer.Option(
        DEFAULTS.utility_classifier, "--classifier", help="The judge: resnet, or cnn3 (fast and weak)."
    ),
    width: int = typer.Option(DEFAULTS.utility_width, "--width", help="Classifier's first-layer channels."),
    augment: bool = typer.Option(
        DEFAULTS.utility_augment,
        "--augment/--no-augment",
        help="Classic augmentation while classifiers train.",
    ),
    ratio: float = typer.Option(
        DEFAULTS.utility_ratio, "--ratio", help="0: synthetic images balance the classes; r: add r × N_train."
    ),
    n_bootstrap: int = typer.Option(DEFAULTS.utility_bootstrap, "--bootstrap", help="Held-out resamples."),
    seed: int = typer.Option(DEFAULTS.seed, "--seed", help="Seeds the synthetic z and the bootstrap."),
    device: str = options.DEVICE,
    as_json: bool = typer.Option(False, "--json", help="Print the full result as JSON.", metavar=""),
) -> None:
    """Classifier on real vs real + synthetic vs synthetic only, scored on the held-out part of --data
    (split by --holdout/--split-seed as in training)."""
    import functools

    from lossbench.analysis.formatting import utility_table
    from lossbench.data.split import load_split
    from lossbench.images import is_conditional, sample_classes
    from lossbench.metrics import cache, check_needs
    from lossbench.metrics.compute import utility_settings
    from lossbench.metrics.utility import downstream_utility
    from lossbench.training.train import load_generator

    config = EvalConfig(
        seed=seed,
        utility_seeds=seeds,
        utility_steps=steps,
        utility_classifier=classifier,
        utility_width=width,
        utility_augment=augment,
        utility_ratio=ratio,
        utility_bootstrap=n_bootstrap,
    )
    generator = load_generator(checkpoint, device)
    check_needs(["utility"], heldout=bool(holdout), conditional=is_conditional(generator))
    split = load_split(DataConfig(data, generator.resolution, holdout=holdout, split_seed=split_seed or 0))
    train_part, heldout_part = split.train, split.heldout
    sample = functools.partial(
        sample_classes, generator, seed=seed, batch_size=config.batch_size, device=device
    )
    settings = utility_settings(config)
    report = downstream_utility(train_part, heldout_part, sample, settings, device, cache.DEFAULT_DIR)
    if as_json:
        typer.echo(json.dumps(dataclasses.asdict(report) | {"metrics": report.metrics()}))
        return
    typer.echo(f"{checkpoint}: trained on {train_part.source}, held out {heldout_part.source}\n")
    typer.echo(utility_table(report))


def register(app: typer.Typer) -> None:
    """Add `lossbench utility` to the root app."""
    app.command("utility")(utility)
