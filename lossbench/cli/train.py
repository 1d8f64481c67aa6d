"""`lossbench train`: one training run (one loss, one λ, one seed) with its outputs in --out.

Settings come from, in increasing precedence: the defaults in lossbench.config, the `--config` TOML
file ([data] and [train] tables, `RunConfig`), the options, and `--set key=value` (dotted keys,
values as TOML literals: `--set train.steps=10 --set 'train.betas=[0.5, 0.99]'`).
"""

from __future__ import annotations

import enum
from pathlib import Path

import typer

from lossbench.cli import options
from lossbench.config import (
    AUGMENTATIONS,
    CRITIC_NORMS,
    PERCEPTUAL_DISTANCES,
    PERCEPTUAL_PAIRINGS,
    RunConfig,
    config_from_dict,
    lambda_text,
    load_toml,
    parse_assignments,
    parse_name_list,
    with_overrides,
)
from lossbench.errors import ConfigError
from lossbench.losses import get_loss
from lossbench.progress import stage

RUN = RunConfig()  # the defaults `lossbench train` shows


def _choices(name: str, values: tuple[str, ...]) -> type[enum.Enum]:
    """An Enum of `values`, so that typer checks them and --help lists them."""
    return enum.Enum(name, {v: v for v in values}, type=str)


CriticNorm = _choices("CriticNorm", CRITIC_NORMS)
PerceptualDistance = _choices("PerceptualDistance", PERCEPTUAL_DISTANCES)
PerceptualPairing = _choices("PerceptualPairing", PERCEPTUAL_PAIRINGS)


def _value(choice: enum.Enum | None) -> str | None:
    return None if choice is None else choice.value


def _list(text: str | None, what: str) -> tuple[str, ...] | None:
    return None if text is None else (parse_name_list(text, what) if text else ())


def train(
    out: Path = typer.Option(..., "--out", help="Output folder (checkpoint, samples, curves, config)."),
    config_file: Path | None = typer.Option(
        None, "--config", help="TOML file with \\[data] and \\[train] tables (see docs/training.md)."
    ),
    set_: list[str] = typer.Option(
        [], "--set", help="Override KEY=VALUE, dotted, value a TOML literal: train.steps=10 (repeatable)."
    ),
    loss: str | None = options.config_option("--loss", "train.loss", RUN),
    lam: float | None = options.config_option("--lambda", "train.lam", RUN),
    data: str | None = options.config_option("--data", "data.spec", RUN),
    resolution: int | None = options.config_option("--resolution", "data.resolution", RUN),
    classes: str | None = options.CLASSES,
    holdout: float | None = options.HOLDOUT,
    split_seed: int | None = options.SPLIT_SEED,
    steps: int | None = options.config_option("--steps", "train.steps", RUN),
    seed: int | None = options.config_option("--seed", "train.seed", RUN),
    resume: bool = typer.Option(
        False, "--resume", help="Continue from OUT/checkpoint.pt if it exists.", metavar=""
    ),
    batch_size: int | None = options.config_option("--batch-size", "train.batch_size", RUN),
    n_critic: int | None = options.config_option("--n-critic", "train.n_critic", RUN),
    loss_param: list[str] = typer.Option(
        [], "--loss-param", help="Loss hyper-parameter key=value, a TOML value as in --set (repeatable)."
    ),
    arch: str | None = options.config_option("--arch", "train.model.arch", RUN),
    lr_g: float | None = options.config_option("--lr-g", "train.lr_g", RUN),
    lr_d: float | None = options.config_option("--lr-d", "train.lr_d", RUN),
    g_width: int | None = options.config_option("--g-width", "train.g_width", RUN),
    d_width: int | None = options.config_option("--d-width", "train.d_width", RUN),
    critic_norm: CriticNorm | None = options.config_option("--critic-norm", "train.critic_norm", RUN),
    perceptual: str | None = options.config_option("--perceptual", "train.perceptual", RUN),
    perceptual_layers: str | None = options.config_option(
        "--perceptual-layers", "train.perceptual_layers", RUN, "Comma-separated."
    ),
    perceptual_distance: PerceptualDistance | None = options.config_option(
        "--perceptual-distance", "train.perceptual_distance", RUN
    ),
    perceptual_pairing: PerceptualPairing | None = options.config_option(
        "--perceptual-pairing", "train.perceptual_pairing", RUN
    ),
    augment: str | None = options.config_option(
        "--augment", "train.augment", RUN, f"Comma-separated: {', '.join(AUGMENTATIONS)}."
    ),
    ema_decay: float | None = options.config_option("--ema-decay", "train.ema_decay", RUN),
    checkpoint_every: int | None = options.config_option("--checkpoint-every", "train.checkpoint_every", RUN),
    log_every: int | None = options.config_option("--log-every", "train.log_every", RUN),
    sample_every: int | None = options.config_option("--sample-every", "train.sample_every", RUN),
    random_weights: bool = options.RANDOM_WEIGHTS,
    weights_dir: str | None = options.WEIGHTS_DIR,
    device: str | None = options.config_option("--device", "train.device", RUN),
    progress: bool | None = options.config_option(
        "--progress/--no-progress", "train.progress", RUN, metavar=""
    ),
) -> None:
    """Train DGAN-WP-TL with one adversarial loss and one λ; write checkpoint, samples, curves, config."""
    if config_file is None and data is None:
        raise ConfigError("give the dataset with --data SPEC (or a [data] table in --config FILE)")
    base = (
        config_from_dict(RunConfig, load_toml(config_file, "train config"), str(config_file))
        if config_file
        else RunConfig()
    )
    overrides = {
        "data.spec": data,
        "data.resolution": resolution,
        "data.classes": _list(classes, "class"),
        "data.holdout": holdout,
        "data.split_seed": split_seed,
        "train.loss": loss,
        "train.loss_params": parse_assignments(loss_param, "--loss-param", "gp_weight=10") or None,
        "train.lam": lam,
        "train.seed": seed,
        "train.steps": steps,
        "train.batch_size": batch_size,
        "train.n_critic": n_critic,
        "train.model.arch": arch,
        "train.lr_g": lr_g,
        "train.lr_d": lr_d,
        "train.g_width": g_width,
        "train.d_width": d_width,
        "train.critic_norm": _value(critic_norm),
        "train.perceptual": perceptual,
        "train.perceptual_layers": _list(perceptual_layers, "layer"),
        "train.perceptual_distance": _value(perceptual_distance),
        "train.perceptual_pairing": _value(perceptual_pairing),
        "train.augment": _list(augment, "augmentation"),
        "train.ema_decay": ema_decay,
        "train.checkpoint_every": checkpoint_every,
        "train.log_every": log_every,
        "train.sample_every": sample_every,
        "train.random_weights": random_weights or None,
        "train.weights_dir": weights_dir,
        "train.device": device,
        "train.progress": progress,
    }
    run = with_overrides(with_overrides(base, overrides), parse_assignments(set_))
    config = run.train
    get_loss(config.loss, **config.loss_params)  # before torch is imported: a typo is answered at once
    for warning in config.warnings:
        typer.echo(f"warning: {warning}", err=True)
    shown = config.progress
    stage(f"loading data {run.data.spec!r} at {run.data.resolution} px", shown)
    from lossbench.data.split import load_split
    from lossbench.training.train import LOSS_CURVES, plot_history
    from lossbench.training.train import train as run_training

    split = load_split(run.data)
    dataset = split.train
    stage(f"building networks, then {config.steps} steps of {config.loss}", shown)
    result = run_training(dataset, config, out, resume=resume)
    loss, lam, seed = config.loss, lambda_text(config.lam), config.seed
    curves = plot_history(result.history, out / LOSS_CURVES, title=f"{loss}, λ = {lam}, seed {seed}")
    typer.echo(
        f"trained {result.steps} steps of {loss} (λ={lam}, seed {seed}) in {result.precision} "
        f"on {len(dataset.images)} images"
        + (f" ({len(split.heldout)} held out)" if split.heldout is not None else "")
    )
    if result.perceptual_weights == "random":
        typer.echo("note: the perceptual network used RANDOM weights (--random-weights)")
    typer.echo(f"checkpoint  {result.checkpoint}")
    typer.echo(f"samples     {result.sample_grid}")
    typer.echo(f"curves      {curves}")
    random = " --random-weights" if result.perceptual_weights == "random" else ""
    typer.echo(f"next: lossbench evaluate --checkpoint {result.checkpoint} --data {run.data.spec}{random}")


def register(app: typer.Typer) -> None:
    """Add `lossbench train` to the root app."""
    app.command("train")(train)
