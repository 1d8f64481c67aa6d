"""`lossbench study`: run or resume a (loss × λ × seed) study; `study status NAME`; `study export NAME`.

Options override the `--config` TOML file, which overrides the defaults of `StudyConfig`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from lossbench.cli import options
from lossbench.cli.train import parse_loss_params
from lossbench.config import StudyConfig, parse_float_list, parse_int_list, parse_name_list
from lossbench.errors import ConfigError

study_app = typer.Typer(
    invoke_without_command=True,
    help="Run (or resume) a study: one Optuna trial and one MLflow run per (loss, λ, seed) cell.",
)


def _loss_params(items: list[str]) -> dict[str, dict[str, Any]]:
    """['wgangp.gp_weight=10'] -> {'wgangp': {'gp_weight': 10}}."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        loss, dot, rest = item.partition(".")
        if not dot or not loss.strip():
            raise ConfigError(
                f"malformed --loss-param {item!r}: expected LOSS.NAME=VALUE, e.g. wgangp.gp_weight=10"
            )
        out.setdefault(loss.strip(), {}).update(parse_loss_params([rest]))
    return out


def _seeds(seeds: int | None, seed_list: str | None) -> tuple[int, ...] | None:
    if seeds is not None and seed_list is not None:
        raise ConfigError("give either --seeds N or --seed-list 0,1,2, not both")
    if seeds is not None:
        if seeds < 1:
            raise ConfigError(f"--seeds must be at least 1, got {seeds}")
        return tuple(range(seeds))
    return parse_int_list(seed_list, "seed") if seed_list is not None else None


@study_app.callback()
def study(
    ctx: typer.Context,
    config: Path | None = typer.Option(None, "--config", help="TOML study file, e.g. studies/demo.toml."),
    losses: str | None = typer.Option(None, "--losses", help="Comma-separated losses, e.g. wgangp,bce."),
    lambdas: str | None = typer.Option(
        None, "--lambdas", help="Comma-separated λ values, e.g. 0.5,3,5,7,10."
    ),
    seeds: int | None = typer.Option(None, "--seeds", help="Seeds 0..N-1 (default 3)."),
    seed_list: str | None = typer.Option(None, "--seed-list", help="Explicit seeds, e.g. 0,1,2."),
    data: str | None = typer.Option(
        None, "--data", help="busi (looked for; see docs/study.md), phantom, phantom:N, or a folder."
    ),
    classes: str | None = options.CLASSES,
    resolution: int | None = typer.Option(None, "--resolution", help="Image side R (32..512)."),
    steps: int | None = typer.Option(None, "--steps", help="Generator steps per cell."),
    batch_size: int | None = typer.Option(None, "--batch-size"),
    loss_param: list[str] = typer.Option(
        [], "--loss-param", help="LOSS.NAME=VALUE, e.g. wgangp.gp_weight=10."
    ),
    objective: str | None = typer.Option(None, "--objective", help="fid, kid, lpips, msssim, precision, ..."),
    eval_every: int | None = typer.Option(
        None, "--eval-every", help="Evaluate every N steps (0: at the end)."
    ),
    n_fake: int | None = typer.Option(None, "--n-fake", help="Generated images per evaluation."),
    extractor: str | None = typer.Option(None, "--extractor", help="FID/KID feature extractor."),
    random_weights: bool = options.RANDOM_WEIGHTS,
    name: str | None = typer.Option(None, "--name", help="Study name (MLflow experiment)."),
    storage: str | None = options.STORAGE,
    tracking_uri: str | None = options.TRACKING_URI,
    workers: int | None = typer.Option(None, "--workers", help="Worker processes."),
    devices: str | None = typer.Option(None, "--devices", help="cpu, or cuda:0,cuda:1 (round-robin)."),
    root: Path = options.ROOT,
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    set_: list[str] = typer.Option(
        [], "--set", help="Override KEY=VALUE, dotted, value a TOML literal: train.lr_g=2e-4 (repeatable)."
    ),
) -> None:
    """Run or resume a study; rerunning the same command continues where it stopped."""
    if ctx.invoked_subcommand is not None:
        return
    import optuna

    from lossbench.study import run_study
    from lossbench.study_config import load_study_config, with_overrides

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    base = load_study_config(config) if config is not None else StudyConfig()
    overrides = {
        "name": name,
        "losses": parse_name_list(losses, "loss") if losses is not None else None,
        "lambdas": parse_float_list(lambdas, "lambda") if lambdas is not None else None,
        "seeds": _seeds(seeds, seed_list),
        "loss_params": _loss_params(loss_param),
        "data.spec": data,
        "data.classes": parse_name_list(classes, "class") if classes is not None else None,
        "data.resolution": resolution,
        "train.steps": steps,
        "train.batch_size": batch_size,
        "train.random_weights": random_weights or None,
        "eval.random_weights": random_weights or None,
        "eval.n_fake": n_fake,
        "eval.feature_extractor": extractor,
        "objective": objective,
        "eval_every": eval_every,
        "storage": storage,
        "tracking_uri": tracking_uri,
        "workers": workers,
        "devices": parse_name_list(devices, "device") if devices is not None else None,
    }
    from lossbench.config import parse_assignments

    study_config = with_overrides(with_overrides(base, overrides), parse_assignments(set_))
    summary = run_study(study_config, root=root, progress=progress)
    counts = ", ".join(f"{n} {state}" for state, n in summary.counts.items() if n)
    typer.echo(f"study {summary.name}: {counts}; {summary.new_trials} new trials")
    typer.echo(f"optuna storage: {summary.storage}")
    typer.echo(f"mlflow: {summary.tracking_uri} (parent run {summary.parent_run_id})")
    where = "" if root == Path("mlruns") else f" --root {root}"
    steps = [
        f"lossbench stats {summary.name}{where}",
        f"lossbench report {summary.name}{where} --out report/",
    ]
    if summary.tracking_uri.startswith("sqlite:"):
        steps.append(f"mlflow server --backend-store-uri {summary.tracking_uri}")
    typer.echo("next: " + "  |  ".join(steps))


@study_app.command("status")
def status(
    name: str = typer.Argument(..., help="Study name."),
    storage: str | None = options.STORAGE,
    root: Path = options.ROOT,
) -> None:
    """The study's grid as a table: done, running, queued, failed, pending per cell."""
    from rich.console import Console
    from rich.table import Table

    from lossbench.study import load_study, study_cells

    study = load_study(name, storage, root)
    table = Table(
        "loss",
        "λ",
        "seed",
        "state",
        "trial",
        study.user_attrs.get("config", {}).get("objective", "value"),
        "note",
    )
    for cell, state, trial in study_cells(study):
        value = trial.value if trial is not None and trial.value is not None else None
        note = trial.user_attrs.get("fail_reason", "") if trial is not None else ""
        table.add_row(
            cell.loss,
            f"{cell.lam:g}",
            str(cell.seed),
            state,
            str(trial.number) if trial is not None else "",
            f"{value:.4g}" if value is not None else "",
            note,
        )
    Console().print(table)


@study_app.command("export")
def export(
    name: str = typer.Argument(..., help="Study name."),
    out: Path = typer.Option(..., "--out", help="CSV file to write."),
    storage: str | None = options.STORAGE,
    root: Path = options.ROOT,
) -> None:
    """One CSV row per COMPLETE trial: study, trial, loss, lambda, seed, state, run_id, every metric."""
    from lossbench.study import results_frame

    frame = results_frame(name, storage, root)
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out, index=False)
    typer.echo(f"wrote {len(frame)} rows to {out}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.add_typer(study_app, name="study")
