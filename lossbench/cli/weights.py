"""`lossbench weights status|fetch|import`: which pretrained files are present, and installing them."""

from __future__ import annotations

from pathlib import Path

import typer

from lossbench.cli import options

weights_app = typer.Typer(help="Pretrained weight files: status, fetch and import.", no_args_is_help=True)


@weights_app.command("status")
def status(weights_dir: str | None = options.WEIGHTS_DIR) -> None:
    """List every pretrained file lossbench uses, where it was found (or that it is missing), and
    whether its sha256 is the published one."""
    from rich.console import Console
    from rich.table import Table

    from lossbench import weights as weights_lib
    from lossbench.errors import WeightsDigestError

    table = Table(title="pretrained weights")
    for col in ("key", "file", "used for", "found at", "sha256"):
        table.add_column(col)
    for entry, path in weights_lib.status(weights_dir):
        check = ""
        if path is not None:
            try:
                weights_lib.verify(entry.key, path)
                check = "ok"
            except WeightsDigestError:
                check = "[red]wrong: delete it[/red]"
        table.add_row(
            entry.key, entry.filename, entry.used_for, str(path) if path else "[red]missing[/red]", check
        )
    console = Console()
    console.print(table)
    typer.echo("searched: " + ", ".join(str(d) for d in weights_lib.search_dirs(weights_dir)))
    for entry, path in weights_lib.status(weights_dir):  # full names and URLs, never cut
        if path is None:
            typer.echo(f"missing: {entry.filename}  {entry.source}")


@weights_app.command("fetch")
def fetch(
    config: Path | None = typer.Option(
        None, "--config", help="TOML study file whose files to fetch [default: the default study's]."
    ),
    all_files: bool = typer.Option(False, "--all", help="Every file lossbench knows.", metavar=""),
    dest: Path | None = typer.Option(None, "--dest", help="Target folder (default: the torch hub cache)."),
    weights_dir: str | None = options.WEIGHTS_DIR,
) -> None:
    """Download the weight files a study needs (sha256 checked); offline, name each with its URL."""
    from lossbench import weights as weights_lib
    from lossbench.config import StudyConfig
    from lossbench.errors import MissingWeightsError
    from lossbench.study.definition import load_study_config
    from lossbench.study.prepare import study_weights

    keys = (
        list(weights_lib.WEIGHTS)
        if all_files
        else study_weights(load_study_config(config) if config else StudyConfig())
    )
    if not keys:
        typer.echo("this study needs no pretrained weight file")
        return
    try:
        fetched = weights_lib.fetch_weights(keys, dest, weights_dir)
    except MissingWeightsError:
        for key in keys:  # each missing file in full, to fetch elsewhere
            if weights_lib.locate(key, dest) is None and weights_lib.locate(key, weights_dir) is None:
                entry = weights_lib.WEIGHTS[key]
                typer.echo(f"missing: {entry.filename}  {entry.source}", err=True)
        raise
    for entry, path, downloaded in fetched:
        typer.echo(f"{'downloaded' if downloaded else 'present   '} {entry.filename}  {path}")


@weights_app.command("import")
def import_(
    src: Path = typer.Argument(..., help="Folder holding downloaded weight files (searched recursively)."),
    dest: Path | None = typer.Option(None, help="Target folder (default: the torch hub cache)."),
) -> None:
    """Copy known weight files from SRC into the torch hub cache (or DEST), each checked first."""
    from lossbench import weights as weights_lib

    for path in weights_lib.import_weights(src, dest):
        typer.echo(f"installed {path}")


def register(app: typer.Typer) -> None:
    app.add_typer(weights_app, name="weights")
