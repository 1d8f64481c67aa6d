"""`lossbench encoder train`: a domain encoder trained on the train part of a dataset."""

from __future__ import annotations

from pathlib import Path

import typer

from lossbench.cli import options
from lossbench.config import DataConfig, parse_name_list

encoder_app = typer.Typer(help="Domain encoder: a feature network trained on the data.", no_args_is_help=True)


@encoder_app.command("train")
def train(
    data: str = typer.Option(
        ..., "--data", help="phantom, phantom:N, busi, a BUSI folder or an image folder."
    ),
    out: Path = typer.Option(..., "--out", help="Encoder file to write (and OUT.json beside it)."),
    resolution: int = typer.Option(64, "--resolution", "-r", help="Side R of the square images."),
    classes: str | None = options.CLASSES,
    holdout: float = typer.Option(0.2, "--holdout", help="Share of each class held out (must be > 0)."),
    split_seed: int = typer.Option(0, "--split-seed", help="Seed of the held-out split."),
    epochs: int = typer.Option(30, "--epochs"),
    batch_size: int = typer.Option(64, "--batch-size"),
    lr: float = typer.Option(1e-3, "--lr"),
    seed: int = typer.Option(0, "--seed", help="Seed of the weights and augmentation."),
) -> None:
    """Train the encoder on the train part; print its held-out quality against random weights.

    Use it as an extractor with `encoder:OUT` (e.g. `--extractor encoder:OUT`)."""
    from lossbench.data.split import load_split
    from lossbench.metrics.encoder import sidecar_path, train_encoder

    selected = parse_name_list(classes, "class") if classes is not None else None
    split = load_split(DataConfig(data, resolution, selected, holdout, split_seed))
    sidecar = train_encoder(split, out, epochs, batch_size, lr, seed)
    quality = sidecar["heldout_quality"]
    typer.echo(f"trained {epochs} epochs on {len(split.train)} images in {sidecar['train_seconds']:.0f} s")
    typer.echo(f"held-out ({len(split.heldout or [])} images)   trained   random init")
    for key in ("head_balanced_accuracy", "probe_balanced_accuracy"):
        typer.echo(f"  {key:<24} {quality['trained'][key]:8.3f}  {quality['random_init'][key]:8.3f}")
    typer.echo(f"encoder  {out}  sha256 {sidecar['sha256']}")
    typer.echo(f"sidecar  {sidecar_path(out)}")


def register(app: typer.Typer) -> None:
    """Add `lossbench encoder` to the root app."""
    app.add_typer(encoder_app, name="encoder")
