"""`lossbench losses list` and `lossbench losses show NAME`: the registered adversarial losses."""

from __future__ import annotations

import inspect

import typer


def _summary(cls: type) -> tuple[str, str]:
    """The docstring's first line and its "Source:" paragraph (empty when absent)."""
    doc = inspect.getdoc(cls) or ""
    first = doc.splitlines()[0] if doc else "(no description)"
    _, found, rest = doc.partition("Source:")
    source = " ".join(rest.split("\n\n")[0].split()) if found else ""
    return first, source


def _defaults(name: str) -> str:
    from lossbench.losses import registry

    items = {**registry.defaults(name), "n_critic": getattr(registry.loss_class(name), "n_critic", "?")}
    return ", ".join(f"{k}={v}" for k, v in items.items())


def list_losses() -> None:
    """List every loss usable by name: built-in and plugin, with defaults and source paper."""
    from lossbench.losses import available_losses, registry

    names = available_losses()
    width = max(map(len, names))
    indent = " " * (width + 4)  # hanging indent under the one-line summary
    for name in names:
        first, source = _summary(registry.loss_class(name))
        origin = registry.origin(name)
        typer.echo(f"{name:<{width}}  {first}")
        typer.echo(f"{indent}defaults: {_defaults(name)}")
        if source or origin != "built-in":
            typer.echo(f"{indent}source: {source or '(not stated)'}")
        if origin != "built-in":
            typer.echo(f"{indent}from: {origin}")
    for problem in registry.problems().values():
        typer.echo(f"warning: {problem}", err=True)


def show(name: str = typer.Argument(..., help="Loss name, as listed by `lossbench losses list`.")) -> None:
    """Show a loss's formula, defaults, source paper and origin."""
    from lossbench.losses import registry

    cls = registry.loss_class(name)
    typer.echo(f"{name}  ({registry.origin(name)})")
    typer.echo(f"defaults: {_defaults(name)}")
    typer.echo("")
    typer.echo(inspect.getdoc(cls) or "(no description)")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    losses_app = typer.Typer(help="The adversarial losses: built-in and plugins.", no_args_is_help=True)
    losses_app.command("list")(list_losses)
    losses_app.command("show")(show)
    app.add_typer(losses_app, name="losses")
