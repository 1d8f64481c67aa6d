"""`lossbench report`: the HTML + markdown report of a study or a results CSV."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""

    @app.command("report")
    def report_command(
        source: str = typer.Argument(
            ..., help="Study name, or a CSV with loss, lambda, seed and metric columns."
        ),
        out: Path = typer.Option(
            ..., "--out", "-o", help="Output folder for report.html, report.md, figures/."
        ),
        alpha: float = typer.Option(0.05, "--alpha", help="Significance level for verdicts."),
        paired: bool = typer.Option(
            False, "--paired", help="Seeds matched across losses: paired t, Wilcoxon."
        ),
        correction: str = typer.Option(
            "holm", "--correction", help="Multiple-testing correction: holm or fdr_bh."
        ),
        bootstrap: bool = typer.Option(False, "--bootstrap", help="Bootstrap (BCa) CIs instead of t-based."),
        storage: str | None = typer.Option(
            None, "--storage", help="Optuna storage (default: ROOT's journal)."
        ),
        root: Path = typer.Option(
            Path("mlruns"), "--root", help="Folder of the study's storage and MLflow store."
        ),
        tracking_uri: str | None = typer.Option(None, "--tracking-uri", help="MLflow store with the runs."),
        seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap resampling."),
    ) -> None:
        """Paper-style table, significance tables and figures; logged to the study's MLflow run."""
        from lossbench.report import report

        result = report(
            source,
            out,
            storage=storage,
            tracking_uri=tracking_uri,
            alpha=alpha,
            paired=paired,
            correction=correction,
            bootstrap=bootstrap,
            seed=seed,
        )
        typer.echo(f"wrote {result.html} and {result.markdown} ({len(result.figures)} figures)")
        if result.logged_to:
            typer.echo(f"logged to MLflow run {result.logged_to} under report/")
