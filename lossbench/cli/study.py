"""`lossbench study`: run or resume a (loss × λ × seed) study; `study status NAME`; `study export NAME`.

Options override the `--config` TOML file, which overrides the defaults of `StudyConfig`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from lossbench.cli import options
from lossbench.config import (
    StudyConfig,
    lambda_text,
    parse_assignments,
    parse_float_list,
    parse_int_list,
    parse_name_list,
)
from lossbench.errors import ConfigError
from lossbench.progress import duration, stage

D = StudyConfig()  # the defaults shown in --help; a --config file or --preset overrides them

study_app = typer.Typer(
    invoke_without_command=True,
    help="Run (or resume) a study: one Optuna trial and one MLflow run per (loss, λ, seed) cell.",
)


def _loss_params(items: list[str]) -> dict[str, dict[str, Any]]:
    """['wgangp.gp_weight=10'] -> {'wgangp': {'gp_weight': 10}}."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        loss, dot, rest = item.partition(".")
        if not dot or not loss.strip() or "=" not in rest:
            raise ConfigError(
                f"malformed --loss-param {item!r}: expected LOSS.NAME=VALUE, e.g. wgangp.gp_weight=10"
            )
        out.setdefault(loss.strip(), {}).update(parse_assignments([rest], "--loss-param"))
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
    preset: str | None = typer.Option(
        None, "--preset", help="A study shipped with lossbench: tiny (seconds, offline, random weights)."
    ),
    losses: str | None = options.config_option("--losses", "losses", D, "Comma-separated."),
    lambdas: str | None = options.config_option("--lambdas", "lambdas", D, "Comma-separated."),
    seeds: int | None = typer.Option(None, "--seeds", help=rf"Seeds 0..N-1. \[default: {len(D.seeds)}]"),
    seed_list: str | None = typer.Option(None, "--seed-list", help="Explicit seeds, e.g. 0,1,2."),
    data: str | None = options.config_option("--data", "data.spec", D),
    classes: str | None = options.CLASSES,
    resolution: int | None = options.config_option("--resolution", "data.resolution", D),
    steps: int | None = options.config_option("--steps", "train.steps", D),
    batch_size: int | None = options.config_option("--batch-size", "train.batch_size", D),
    loss_param: list[str] = typer.Option(
        [], "--loss-param", help="LOSS.NAME=VALUE, a TOML value as in --set, e.g. wgangp.gp_weight=10."
    ),
    objective: str | None = options.config_option("--objective", "objective", D),
    eval_every: int | None = options.config_option("--eval-every", "eval_every", D),
    n_fake: int | None = options.config_option("--n-fake", "eval.n_fake", D),
    extractor: str | None = options.config_option("--extractor", "eval.feature_extractor", D),
    random_weights: bool = options.RANDOM_WEIGHTS,
    weights_dir: str | None = options.WEIGHTS_DIR,
    name: str | None = options.config_option("--name", "name", D),
    storage: str | None = options.STORAGE,
    tracking_uri: str | None = options.TRACKING_URI,
    workers: int | None = options.config_option("--workers", "workers", D),
    threads: int | None = options.config_option("--threads", "threads", D),
    fuse: int | None = options.config_option("--fuse", "fuse", D),
    devices: str | None = options.config_option("--devices", "devices", D),
    root: Path = options.ROOT,
    progress: bool = typer.Option(True, "--progress/--no-progress", metavar=""),
    plan: bool = typer.Option(
        False,
        "--plan",
        help="Run nothing: measure what each cell kind costs on this machine (a few training steps, one "
        "evaluation, the judge's steps) and print the study's estimated time.",
        metavar="",
    ),
    force: bool = typer.Option(
        False,
        "--force",
        help="Rerun cells whose finished MLflow runs the Optuna storage has lost.",
        metavar="",
    ),
    repair_tracking: bool = typer.Option(
        False,
        "--repair-tracking",
        help="Write back, from the Optuna records, the MLflow runs of finished cells that the store lost "
        "(metrics and settings; samples and features are not recoverable).",
        metavar="",
    ),
    set_: list[str] = typer.Option(
        [], "--set", help="Override KEY=VALUE, dotted, value a TOML literal: train.lr_g=2e-4 (repeatable)."
    ),
) -> None:
    """Run or resume a study; rerunning the same command continues where it stopped."""
    if ctx.invoked_subcommand is not None:
        return
    from lossbench.study.definition import load_preset, load_study_config, validate, with_overrides

    if config is not None and preset is not None:
        raise ConfigError("give either --config FILE or --preset NAME, not both")
    base = load_study_config(config) if config else load_preset(preset) if preset else StudyConfig()
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
        "train.weights_dir": weights_dir,
        "eval.weights_dir": weights_dir,
        "eval.n_fake": n_fake,
        "eval.feature_extractor": extractor,
        "objective": objective,
        "eval_every": eval_every,
        "storage": storage,
        "tracking_uri": tracking_uri,
        "workers": workers,
        "threads": threads,
        "fuse": fuse,
        "devices": parse_name_list(devices, "device") if devices is not None else None,
    }
    config = with_overrides(with_overrides(base, overrides), parse_assignments(set_))
    validate(config)  # before torch, optuna and mlflow are imported: a typo is answered at once
    for warning in config.train.warnings:
        typer.echo(f"warning: {warning}", err=True)
    if config.fuse > 1 and all(d == "cpu" for d in config.devices):
        typer.echo("note: --fuse gains nothing on a CPU (docs/performance.md); --workers does", err=True)
    if plan:
        stage("measuring the study's cost here: a few steps of each cell kind, one evaluation", progress)
        from lossbench.study.plan import measure_plan, plan_lines

        typer.echo("\n".join(plan_lines(measure_plan(config))))
        return
    stage("loading torch, optuna and mlflow", progress)
    import optuna

    from lossbench import tracking
    from lossbench.metrics import metric_key
    from lossbench.study import run_study

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    summary = run_study(config, root=root, progress=progress, force=force, repair_tracking=repair_tracking)
    counts = ", ".join(f"{n} {state}" for state, n in summary.counts.items() if n)
    typer.echo(f"study {summary.name}: {counts}; {summary.new_trials} new trials")
    if summary.verdict:  # the objective's answer; every metric's: lossbench stats
        from lossbench.analysis.formatting import wrap

        typer.echo("\n".join(wrap([summary.verdict[0].replace("**", "")])))
    typer.echo(f"optuna storage: {summary.storage}")
    typer.echo(f"mlflow: {summary.tracking_uri} (parent run {summary.parent_run_id})")
    where = "" if root == Path("mlruns") else f" --root {root}"
    typer.echo(f"next: lossbench stats {summary.name}{where}")
    typer.echo(f"      lossbench report {summary.name}{where} --out report/")
    if summary.tracking_uri.startswith("sqlite:"):
        typer.echo(f"      mlflow server --backend-store-uri {summary.tracking_uri}")
        server = "http://127.0.0.1:5000"
    else:
        server = summary.tracking_uri
    key = metric_key(summary.objective)
    run_url = tracking.run_view_url(server, summary.experiment_id, summary.parent_run_id)
    typer.echo(f"      open {run_url}  (the study's run: the verdict)")
    url = tracking.runs_view_url(server, summary.experiment_id, key)
    typer.echo(f"      open {url}  (the runs table, best {key} first)")


@study_app.command("status")
def status(
    name: str = typer.Argument(..., help="Study name."),
    storage: str | None = options.STORAGE,
    root: Path = options.ROOT,
) -> None:
    """The study's grid as a table: state, objective and time per cell (done, running, queued,
    failed, pending), then the median time of a finished cell and the wall time so far."""
    import statistics
    from datetime import datetime

    from rich.console import Console
    from rich.table import Table

    from lossbench.study.journal import check_study_named

    check_study_named(name, storage, root)  # before optuna is imported
    from lossbench.study import load_study, study_cells

    study = load_study(name, storage, root)
    table = Table(
        "loss",
        "λ",
        "seed",
        "state",
        "trial",
        study.user_attrs.get("config", {}).get("objective", "value"),
        "time",
        "note",
    )
    took: dict[str, list[float]] = {}  # loss -> seconds per finished cell
    left: dict[str, int] = {}  # loss -> cells not finished (running, queued or pending)
    for cell, state, trial in study_cells(study):
        if state in ("running", "queued", "pending"):
            left[cell.loss] = left.get(cell.loss, 0) + 1
        start = trial.datetime_start if trial is not None else None
        end = trial.datetime_complete if trial is not None else None
        time_text = ""
        if start is not None:
            time_text = duration(((end or datetime.now()) - start).total_seconds())
            if end is None:
                time_text += " so far"
            else:  # done, or failed (diverged), or a retryable failure
                took.setdefault(cell.loss, []).append((end - start).total_seconds())
        table.add_row(
            cell.loss,
            lambda_text(cell.lam),
            str(cell.seed),
            state,
            str(trial.number) if trial is not None else "",
            f"{trial.value:.4g}" if trial is not None and trial.value is not None else "",
            time_text,
            _note(trial),
        )
    console = Console()
    console.print(table)
    if took:
        trials = study.get_trials(deepcopy=False)
        first = min(t.datetime_start for t in trials if t.datetime_start is not None)
        last = max(t.datetime_complete for t in trials if t.datetime_complete is not None)
        every = [t for times in took.values() for t in times]
        console.print(
            f"{len(every)} finished cell(s): median {duration(statistics.median(every))} per cell; "
            f"first start to last finish {duration((last - first).total_seconds())}"
        )
    if left:
        console.print(_time_left(took, left))


def _time_left(took: dict[str, list[float]], left: dict[str, int]) -> str:
    """The cell time the unfinished cells need at the median of the finished cells of their loss
    (a retried cell's time counts from its last attempt), or why there is no estimate."""
    import statistics

    median = {loss: statistics.median(times) for loss, times in took.items()}
    parts = [f"{n} {loss} at {duration(median[loss])}" for loss, n in left.items() if loss in median]
    unknown = [f"{n} {loss}" for loss, n in left.items() if loss not in median]
    text = f"{sum(left.values())} cell(s) left"
    if parts:
        total = duration(sum(n * median[loss] for loss, n in left.items() if loss in median))
        text += f": about {total} of cell time ({', '.join(parts)}; divide by the workers)"
    if unknown:
        text += f"; no estimate for {', '.join(unknown)} (none of that loss has finished; "
        text += "the study's command with --plan measures it)"
    return text


def _note(trial: Any) -> str:
    """A trial's failure, else its training-health warnings by kind (lossbench.health)."""
    if trial is None:
        return ""
    from lossbench.study import record

    if record.FAIL_REASON in trial.user_attrs:
        return trial.user_attrs[record.FAIL_REASON]
    warnings = trial.user_attrs.get(record.HEALTH, {})
    return f"health: {', '.join(warnings)}" if warnings else ""


@study_app.command("export")
def export(
    name: str = typer.Argument(..., help="Study name."),
    out: Path = typer.Option(..., "--out", help="CSV file to write."),
    storage: str | None = options.STORAGE,
    root: Path = options.ROOT,
) -> None:
    """One CSV row per COMPLETE trial: study, trial, loss, lambda, seed, state, run_id, every metric."""
    from lossbench.study.journal import check_study_named

    check_study_named(name, storage, root)  # before optuna is imported
    from lossbench.study import results_frame

    frame = results_frame(name, storage, root)
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out, index=False)
    typer.echo(f"wrote {len(frame)} rows to {out}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.add_typer(study_app, name="study")
