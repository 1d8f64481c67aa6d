"""`lossbench train`: one training run (one loss, one λ, one seed) with its outputs in --out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from lossbench.cli import options
from lossbench.config import DataConfig, TrainConfig, parse_name_list
from lossbench.errors import ConfigError

DEFAULTS = TrainConfig()


def parse_loss_params(items: list[str]) -> dict[str, Any]:
    """['gp_weight=10', 'flag=true'] -> {'gp_weight': 10, 'flag': True}: values as JSON, else strings."""
    params: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"malformed --loss-param {item!r}: expected key=value, e.g. gp_weight=10")
        try:
            params[key.strip()] = json.loads(text)
        except json.JSONDecodeError:
            params[key.strip()] = text
    return params


def train(
    loss: str = typer.Option(DEFAULTS.loss, "--loss", help="Adversarial loss (see `lossbench losses list`)."),
    lam: float = typer.Option(
        DEFAULTS.lam, "--lambda", help="Perceptual-loss weight λ (0: no perceptual loss)."
    ),
    data: str = typer.Option(..., "--data", help="phantom, phantom:N, a BUSI folder or an image folder."),
    resolution: int = typer.Option(DataConfig.resolution, "--resolution", help="Image side R (32..512)."),
    classes: str | None = options.CLASSES,
    steps: int = typer.Option(DEFAULTS.steps, "--steps", help="Generator steps."),
    seed: int = typer.Option(DEFAULTS.seed, "--seed"),
    out: Path = typer.Option(..., "--out", help="Output folder (checkpoint, samples, curves, config)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT/checkpoint.pt if it exists."),
    batch_size: int = typer.Option(DEFAULTS.batch_size, "--batch-size"),
    n_critic: int | None = typer.Option(
        None, "--n-critic", help="Critic steps per generator step (default: the loss's)."
    ),
    loss_param: list[str] = typer.Option(
        [], "--loss-param", help="Loss hyper-parameter key=value (repeatable)."
    ),
    lr_g: float = typer.Option(DEFAULTS.lr_g, "--lr-g"),
    lr_d: float = typer.Option(DEFAULTS.lr_d, "--lr-d"),
    g_width: int = typer.Option(DEFAULTS.g_width, "--g-width", help="Generator width (last hidden layer)."),
    d_width: int = typer.Option(DEFAULTS.d_width, "--d-width", help="Critic width (first layer)."),
    critic_norm: str = typer.Option(DEFAULTS.critic_norm, "--critic-norm", help="none or layernorm."),
    perceptual: str = typer.Option(DEFAULTS.perceptual, "--perceptual", help="vgg16, vgg19 or none."),
    perceptual_layers: str = typer.Option(",".join(DEFAULTS.perceptual_layers), "--perceptual-layers"),
    perceptual_distance: str = typer.Option(
        DEFAULTS.perceptual_distance, "--perceptual-distance", help="l1 or mse."
    ),
    perceptual_pairing: str = typer.Option(
        DEFAULTS.perceptual_pairing, "--perceptual-pairing", help="paired or mean."
    ),
    augment: str = typer.Option("", "--augment", help="DiffAugment policy, e.g. translation,cutout,color."),
    ema_decay: float = typer.Option(DEFAULTS.ema_decay, "--ema-decay"),
    checkpoint_every: int = typer.Option(DEFAULTS.checkpoint_every, "--checkpoint-every"),
    log_every: int = typer.Option(DEFAULTS.log_every, "--log-every"),
    sample_every: int = typer.Option(DEFAULTS.sample_every, "--sample-every", help="0: only the final grid."),
    random_weights: bool = options.RANDOM_WEIGHTS,
    weights_dir: str | None = options.WEIGHTS_DIR,
    device: str = options.DEVICE,
    progress: bool = typer.Option(DEFAULTS.progress, "--progress/--no-progress"),
) -> None:
    """Train DGAN-WP-TL with one adversarial loss and one λ; write checkpoint, samples, curves, config."""
    from lossbench.data import load_dataset
    from lossbench.train import LOSS_CURVES, plot_history
    from lossbench.train import train as run_training

    data_config = DataConfig(data, resolution, parse_name_list(classes, "class") if classes else None)
    config = TrainConfig(
        loss=loss,
        loss_params=parse_loss_params(loss_param),
        lam=lam,
        seed=seed,
        steps=steps,
        batch_size=batch_size,
        lr_g=lr_g,
        lr_d=lr_d,
        n_critic=n_critic,
        g_width=g_width,
        d_width=d_width,
        critic_norm=critic_norm,
        perceptual=perceptual,
        perceptual_layers=parse_name_list(perceptual_layers, "layer"),
        perceptual_distance=perceptual_distance,
        perceptual_pairing=perceptual_pairing,
        augment=parse_name_list(augment, "augmentation") if augment else (),
        ema_decay=ema_decay,
        device=device,
        checkpoint_every=checkpoint_every,
        log_every=log_every,
        sample_every=sample_every,
        random_weights=random_weights,
        weights_dir=weights_dir,
        progress=progress,
    )
    dataset = load_dataset(data_config.spec, data_config.resolution, data_config.classes)
    result = run_training(dataset, config, out, resume=resume)
    curves = plot_history(result.history, out / LOSS_CURVES, title=f"{loss}, λ = {lam:g}, seed {seed}")
    typer.echo(
        f"trained {result.steps} steps of {loss} (λ={lam:g}, seed {seed}) on {len(dataset.images)} images"
    )
    if result.perceptual_weights == "random":
        typer.echo("note: the perceptual network used RANDOM weights (--random-weights)")
    typer.echo(f"checkpoint  {result.checkpoint}")
    typer.echo(f"samples     {result.sample_grid}")
    typer.echo(f"curves      {curves}")


def register(app: typer.Typer) -> None:
    """Add `lossbench train` to the root app."""
    app.command("train")(train)
