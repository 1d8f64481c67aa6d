"""`lossbench report`: the HTML + markdown report of a study or a results CSV."""

from __future__ import annotations

from pathlib import Path

import typer

from lossbench.cli import options


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""

    @app.command("report")
    def report_command(
        source: str = options.SOURCE,
        out: Path = typer.Option(
            ..., "--out", "-o", help="Output folder for report.html, report.md, figures/."
        ),
        alpha: float = options.ALPHA,
        paired: bool | None = options.PAIRED,
        correction: str = options.CORRECTION,
        bootstrap: bool = options.BOOTSTRAP,
        storage: str | None = options.STORAGE,
        root: Path = options.ROOT,
        tracking_uri: str | None = options.TRACKING_URI,
        seed: int = options.BOOTSTRAP_SEED,
    ) -> None:
        """Paper-style table, significance tables and figures; logged to the study's MLflow run."""
        from lossbench.analysis.report import report
        from lossbench.study.results import load_problems, load_results

        df = load_results(source, storage, root)
        from_study = not Path(source).is_file()
        result = report(
            df,
            out,
            name=source,
            study=source if from_study else None,
            title=f"lossbench report: {source if from_study else Path(source).stem}",
            tracking_uri=tracking_uri,
            root=root,
            alpha=alpha,
            paired=paired,
            correction=correction,
            bootstrap=bootstrap,
            seed=seed,
            problems=load_problems(source, storage, root),
        )
        typer.echo(f"wrote {result.html} and {result.markdown} ({len(result.figures)} figures)")
        if result.logged_to:
            typer.echo(f"logged to MLflow run {result.logged_to} under report/")
