"""`lossbench stats`: significance across seeds for a study or a results CSV."""

from __future__ import annotations

from pathlib import Path

import typer

from lossbench.config import parse_name_list


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""

    @app.command("stats")
    def stats_command(
        source: str = typer.Argument(
            ..., help="Study name, or a CSV with loss, lambda, seed and metric columns."
        ),
        metric: str | None = typer.Option(
            None, "--metric", "-m", help="Metric(s), comma-separated; default all."
        ),
        alpha: float = typer.Option(0.05, "--alpha", help="Significance level for verdicts."),
        paired: bool = typer.Option(
            False, "--paired", help="Seeds matched across losses: paired t, Wilcoxon."
        ),
        correction: str = typer.Option(
            "holm", "--correction", help="Multiple-testing correction: holm or fdr_bh."
        ),
        bootstrap: bool = typer.Option(False, "--bootstrap", help="Bootstrap (BCa) CIs instead of t-based."),
        fmt: str = typer.Option("table", "--format", help="table, markdown, csv, latex or json."),
        storage: str | None = typer.Option(
            None, "--storage", help="Optuna storage (default: ROOT's journal)."
        ),
        root: Path = typer.Option(
            Path("mlruns"), "--root", help="Folder of the study's storage and MLflow store."
        ),
        seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap resampling."),
    ) -> None:
        """Per-cell summaries, pairwise tests with corrected p-values, ANOVA and verdicts."""
        from lossbench import stats

        metrics = list(parse_name_list(metric, "metric")) if metric else None
        stats.check_format(fmt)  # before any work is done
        df = stats.load_results(source, storage, root)
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
        typer.echo(stats.format_result(result, fmt), nl=False)
