"""`lossbench train`: one training run (one loss, one λ, one seed) with its outputs in --out.

Settings come from, in increasing precedence: the defaults in lossbench.config, the `--config` TOML
file ([data] and [train] tables, `RunConfig`), the options, and `--set key=value` (dotted keys,
values as TOML literals: `--set train.steps=10 --set 'train.betas=[0.5, 0.99]'`).
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Any

import typer

from lossbench.cli import options
from lossbench.config import (
    AUGMENTATIONS,
    CRITIC_NORMS,
    MAX_RESOLUTION,
    MIN_RESOLUTION,
    PERCEPTUAL_DISTANCES,
    PERCEPTUAL_PAIRINGS,
    DataConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
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

DEFAULTS = TrainConfig()


def _option(name: str, help: str = "", **kw: Any) -> Any:
    """An option that defaults to None (the file's or the config's value), showing that default."""
    field = name.split("/")[0].removeprefix("--").replace("-", "_")
    default = getattr(DEFAULTS, field, None)
    shown = ",".join(default) if isinstance(default, tuple) else default
    return typer.Option(None, name, help=rf"{help} \[default: {shown}]".strip(), **kw)


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
    loss: str | None = _option("--loss", "Adversarial loss (see `lossbench losses list`)."),
    lam: float | None = typer.Option(
        None,
        "--lambda",
        help=f"Perceptual-loss weight λ (0: no perceptual loss). \\[default: {DEFAULTS.lam}]",
    ),
    data: str | None = typer.Option(
        None, "--data", help="phantom, phantom:N, busi, a BUSI folder or an image folder."
    ),
    resolution: int | None = typer.Option(
        None,
        "--resolution",
        help=f"Image side R, a power of two in {MIN_RESOLUTION}..{MAX_RESOLUTION}. "
        f"\\[default: {DataConfig.resolution}]",
    ),
    classes: str | None = options.CLASSES,
    holdout: float | None = options.HOLDOUT,
    split_seed: int | None = options.SPLIT_SEED,
    steps: int | None = _option("--steps", "Generator steps."),
    seed: int | None = _option("--seed"),
    resume: bool = typer.Option(
        False, "--resume", help="Continue from OUT/checkpoint.pt if it exists.", metavar=""
    ),
    batch_size: int | None = _option("--batch-size"),
    n_critic: int | None = typer.Option(
        None, "--n-critic", help="Critic steps per generator step. \\[default: the loss's]"
    ),
    loss_param: list[str] = typer.Option(
        [], "--loss-param", help="Loss hyper-parameter key=value, a TOML value as in --set (repeatable)."
    ),
    arch: str | None = typer.Option(
        None, "--arch", help=f"Registered architecture. \\[default: {ModelConfig.arch}]"
    ),
    lr_g: float | None = _option("--lr-g"),
    lr_d: float | None = _option("--lr-d"),
    g_width: int | None = _option("--g-width", "Generator width (last hidden layer)."),
    d_width: int | None = _option("--d-width", "Critic width (first layer)."),
    critic_norm: CriticNorm | None = _option("--critic-norm"),
    perceptual: str | None = _option("--perceptual", "vgg16, vgg19, none or a registered network."),
    perceptual_layers: str | None = _option("--perceptual-layers"),
    perceptual_distance: PerceptualDistance | None = _option("--perceptual-distance"),
    perceptual_pairing: PerceptualPairing | None = _option("--perceptual-pairing"),
    augment: str | None = _option(
        "--augment", f"DiffAugment policies, comma-separated: {', '.join(AUGMENTATIONS)}."
    ),
    ema_decay: float | None = _option("--ema-decay"),
    checkpoint_every: int | None = _option("--checkpoint-every"),
    log_every: int | None = _option("--log-every"),
    sample_every: int | None = _option("--sample-every", "0: only the final grid."),
    random_weights: bool = options.RANDOM_WEIGHTS,
    weights_dir: str | None = options.WEIGHTS_DIR,
    device: str | None = _option("--device", "cpu, cuda, cuda:1, ..."),
    progress: bool | None = _option("--progress/--no-progress", metavar=""),
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
