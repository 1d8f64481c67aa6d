"""`lossbench stats`: significance across seeds for a study or a results CSV (read -> analyze -> format)."""

from __future__ import annotations

from pathlib import Path

import typer

from lossbench.cli import options
from lossbench.config import parse_name_list


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""

    @app.command("stats")
    def stats_command(
        source: str = options.SOURCE,
        metric: str | None = typer.Option(
            None, "--metric", "-m", help="Metric(s), comma-separated; default all."
        ),
        alpha: float = options.ALPHA,
        paired: bool = options.PAIRED,
        correction: str = options.CORRECTION,
        bootstrap: bool = options.BOOTSTRAP,
        fmt: str = typer.Option("table", "--format", help="table, markdown, csv, latex or json."),
        storage: str | None = options.STORAGE,
        root: Path = options.ROOT,
        seed: int = options.BOOTSTRAP_SEED,
    ) -> None:
        """Per-cell summaries, pairwise tests with corrected p-values, ANOVA and verdicts."""
        from lossbench import stats
        from lossbench.formatting import check_format, format_result
        from lossbench.study.results import load_results

        metrics = list(parse_name_list(metric, "metric")) if metric else None
        check_format(fmt)  # before any work is done
        df = load_results(source, storage, root)
        result = stats.analyze(
            df,
            metrics,
            alpha=alpha,
            paired=paired,
            correction=correction,
            bootstrap=bootstrap,
            seed=seed,
            name=source,
        )
        typer.echo(format_result(result, fmt), nl=False)
