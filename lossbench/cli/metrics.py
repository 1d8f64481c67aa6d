"""`lossbench metrics list`: the registered evaluation metrics, their result keys and directions."""

from __future__ import annotations

import typer


def list_metrics() -> None:
    """List every metric usable in --metrics: built-in, registered and plugin, with result keys."""
    from lossbench.metrics import get_metric, registry

    names = registry.available_metrics()
    width = max(map(len, names))
    indent = " " * (width + 2)
    for name in names:
        metric = get_metric(name)
        typer.echo(f"{name:<{width}}  {metric.description or '(no description)'}")
        better = {"min": "lower is better", "max": "higher is better"}
        keys = ", ".join(f"{k} ({better[d]})" for k, d in metric.keys.items())
        typer.echo(
            f"{indent}keys: {keys}" + (f"; also {', '.join(metric.auxiliary)}" if metric.auxiliary else "")
        )
        if metric.aliases:
            typer.echo(f"{indent}aliases: {', '.join(metric.aliases)}")
        origin = registry.origin(name)
        if origin != "built-in":
            typer.echo(f"{indent}from: {origin}")
    for problem in registry.problems().values():
        typer.echo(f"warning: {problem}", err=True)


def register(app: typer.Typer) -> None:
    """Add `lossbench metrics` to the root app."""
    metrics_app = typer.Typer(help="The evaluation metrics: built-in and plugins.", no_args_is_help=True)
    metrics_app.command("list")(list_metrics)
    app.add_typer(metrics_app, name="metrics")
