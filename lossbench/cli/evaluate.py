"""`lossbench evaluate`: score a checkpoint's EMA generator, or a folder of images, against a dataset."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from lossbench.cli import options
from lossbench.config import DataConfig, EvalConfig, check_resolution, parse_name_list
from lossbench.errors import ConfigError
from lossbench.metrics import available_metrics

DEFAULTS = EvalConfig()


def evaluate(
    checkpoint: Path | None = typer.Option(
        None, "--checkpoint", help="checkpoint.pt written by `lossbench train`; its EMA generator is scored."
    ),
    fake_dir: Path | None = typer.Option(None, "--fake", help="Score this folder of images instead."),
    data: str = typer.Option(
        ..., "--data", help="Real data: phantom, phantom:N, a BUSI folder or an image folder."
    ),
    resolution: int | None = typer.Option(
        None,
        "--resolution",
        help=f"Image side R (default: the generator's; {DataConfig.resolution} for --fake).",
    ),
    metrics: str = typer.Option(
        ",".join(DEFAULTS.metrics),
        "--metrics",
        help=f"Comma-separated, from: {', '.join(available_metrics())} (`lossbench metrics list`).",
    ),
    n_fake: int = typer.Option(DEFAULTS.n_fake, "--n-fake", help="Images generated from the checkpoint."),
    n_pairs: int = typer.Option(
        DEFAULTS.n_pairs, "--n-pairs", help="Random disjoint pairs for LPIPS/MS-SSIM."
    ),
    extractor: str = typer.Option(
        DEFAULTS.feature_extractor,
        "--extractor",
        help="FID/KID/copy-detection extractor: a torch-fidelity registry name, or encoder:FILE.",
    ),
    prc_extractor: str = typer.Option(
        DEFAULTS.prc_extractor, "--prc-extractor", help="Precision/recall feature extractor."
    ),
    extra_extractors: str = typer.Option(
        "",
        "--extra-extractors",
        help="Comma-separated extractors to repeat the feature metrics in (keys fid.NAME).",
    ),
    seed: int = typer.Option(
        DEFAULTS.seed, "--seed", help="Seeds the fakes' z, the pairs and the KID subsets."
    ),
    holdout: float | None = options.HOLDOUT,
    split_seed: int | None = options.SPLIT_SEED,
    bootstrap: int = typer.Option(
        DEFAULTS.bootstrap, "--bootstrap", help="Resamples of the fakes for standard errors (0: none)."
    ),
    batch_size: int = typer.Option(DEFAULTS.batch_size, "--batch-size"),
    cache_dir: Path | None = typer.Option(
        None, "--cache-dir", help="Real-feature cache folder (default mlruns/feature-cache)."
    ),
    weights_dir: str | None = options.WEIGHTS_DIR,
    random_weights: bool = options.RANDOM_WEIGHTS,
    device: str = options.DEVICE,
    per_class: bool = typer.Option(
        False,
        "--per-class",
        help="Also score each class (conditional checkpoints): class-k fakes vs class-k reals.",
        metavar="",
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print metrics, settings, provenance and timings as JSON.", metavar=""
    ),
) -> None:
    """Score generated images with FID, KID, LPIPS, MS-SSIM (and precision/recall, SWD) against real data."""
    from rich.console import Console
    from rich.table import Table

    from lossbench.data import load_dataset
    from lossbench.data.split import load_split
    from lossbench.metrics import evaluate as evaluate_images
    from lossbench.metrics import evaluate_per_class, resolve_metrics
    from lossbench.training.train import load_generator

    if (checkpoint is None) == (fake_dir is None):
        raise ConfigError("give exactly one of --checkpoint CKPT or --fake DIR")
    if per_class and checkpoint is None:
        raise ConfigError("--per-class needs --checkpoint (a class-conditional generator)")
    config = EvalConfig(
        metrics=parse_name_list(metrics, "metric"),
        n_fake=n_fake,
        feature_extractor=extractor,
        prc_extractor=prc_extractor,
        extra_extractors=parse_name_list(extra_extractors, "extractor") if extra_extractors else (),
        n_pairs=n_pairs,
        batch_size=batch_size,
        seed=seed,
        bootstrap=bootstrap,
        cache_dir=str(cache_dir) if cache_dir else None,
        random_weights=random_weights,
        weights_dir=weights_dir,
    )
    resolve_metrics(config.metrics)
    if checkpoint is not None:
        fake = load_generator(checkpoint, device)
        if resolution is not None and check_resolution(resolution) != fake.resolution:
            raise ConfigError(
                f"--resolution {resolution} differs from the checkpoint's resolution {fake.resolution}"
            )
        resolution = fake.resolution
    else:
        resolution = check_resolution(resolution or DataConfig.resolution)
        fake = load_dataset(str(fake_dir), resolution).images
    split = load_split(DataConfig(data, resolution, None, holdout or 0.0, split_seed or 0))
    real = split.train
    result = evaluate_images(fake, real, config, device, heldout=split.heldout)
    result.settings.update(holdout=split.fraction, split_seed=split.seed)
    classes = evaluate_per_class(fake, real, config, device, split.heldout) if per_class else {}

    if as_json:
        typer.echo(
            json.dumps(
                {
                    "metrics": result.metrics,
                    "settings": result.settings,
                    "provenance": result.provenance,
                    "timings": result.timings,
                    **(
                        {
                            "per_class": {
                                k: {"metrics": r.metrics, "settings": r.settings} for k, r in classes.items()
                            }
                        }
                        if classes
                        else {}
                    ),
                }
            )
        )
        return
    table = Table(title=f"{checkpoint or fake_dir} vs {real.source}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name in classes:
        table.add_column(name, justify="right")
    for key, value in result.metrics.items():
        table.add_row(
            key,
            f"{value:.6g}",
            *(f"{r.metrics[key]:.6g}" if key in r.metrics else "" for r in classes.values()),
        )
    console = Console()
    console.print(table)
    console.print("settings: " + ", ".join(f"{k}={v}" for k, v in result.settings.items()))
    console.print("provenance: " + ", ".join(f"{k}={v}" for k, v in result.provenance.items()))
    for name, r in classes.items():
        console.print(f"{name}: n_fake={r.settings['n_fake']}, n_real={r.settings['n_real']}")


def register(app: typer.Typer) -> None:
    """Add `lossbench evaluate` to the root app."""
    app.command("evaluate")(evaluate)
