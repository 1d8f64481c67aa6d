"""`lossbench stats`: significance across seeds for a study or a results CSV (read -> analyze -> format)."""

from __future__ import annotations

from pathlib import Path

import typer

from lossbench.cli import options
from lossbench.config import parse_name_list
from lossbench.errors import ConfigError


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""

    @app.command("stats")
    def stats_command(
        source: str = options.SOURCE,
        metric: str | None = typer.Option(
            None, "--metric", "-m", help="Metric(s), comma-separated; default all."
        ),
        alpha: float = options.ALPHA,
        paired: bool | None = options.PAIRED,
        correction: str = options.CORRECTION,
        bootstrap: bool = options.BOOTSTRAP,
        fmt: str = typer.Option("table", "--format", help="table, markdown, csv, latex or json."),
        storage: str | None = options.STORAGE,
        root: Path = options.ROOT,
        seed: int = options.BOOTSTRAP_SEED,
        power: bool = typer.Option(
            False,
            "--power",
            help="Show only the power analysis: detectable differences, seeds needed.",
            metavar="",
        ),
        delta: str | None = typer.Option(
            None,
            "--delta",
            help="Differences to power for, e.g. fid=10,kid=0.01 [default: the mean difference observed].",
            show_default=False,
        ),
    ) -> None:
        """Per-cell summaries, pairwise tests with corrected p-values, ANOVA, mixed model, power and
        verdicts; failed and missing cells first. Warnings go to stderr."""
        from lossbench import analysis
        from lossbench.analysis.formatting import check_format, format_result, format_warnings
        from lossbench.study.results import load_problems, load_results

        metrics = list(parse_name_list(metric, "metric")) if metric else None
        check_format(fmt)  # before any work is done
        deltas = parse_deltas(delta)
        df = load_results(source, storage, root)
        result = analysis.analyze(
            df,
            metrics,
            alpha=alpha,
            paired=paired,
            correction=correction,
            bootstrap=bootstrap,
            seed=seed,
            name=source,
            problems=load_problems(source, storage, root),
            deltas=deltas,
        )
        typer.echo(format_result(result, fmt, ("power",) if power else None), nl=False)
        if fmt != "json":
            typer.echo(format_warnings(result), nl=False, err=True)


def parse_deltas(text: str | None) -> dict[str, float]:
    """`fid=10,kid=0.01` as {metric: difference}; ConfigError (one line) for anything else."""
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        key, _, value = part.partition("=")
        try:
            out[key.strip()] = float(value)
        except ValueError:
            raise ConfigError(
                f"--delta wants metric=number pairs, e.g. fid=10,kid=0.01; got {part!r}"
            ) from None
        if not out[key.strip()] > 0:
            raise ConfigError(f"--delta {part!r}: the difference must be a positive number")
    return out
