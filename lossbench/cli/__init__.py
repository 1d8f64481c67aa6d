"""The `lossbench` command line: a thin layer that parses arguments, calls the library, prints.

One module per command group; each exposes `register(app)`. Errors a user can cause
(`LossbenchError`) are printed as one line on stderr with exit code 2, never as a traceback.
"""

from __future__ import annotations

import sys

import click
import typer

from lossbench.errors import LossbenchError

app = typer.Typer(
    name="lossbench",
    help="Benchmark GAN adversarial losses and perceptual-loss weights with evidence.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _register_commands() -> None:
    from lossbench.cli import data, evaluate, losses, report, stats, study, train, weights

    for module in (data, weights, losses, train, evaluate, study, stats, report):
        module.register(app)


_register_commands()


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit code (0 ok, 2 bad input or failed run, 130 interrupted)."""
    try:
        result = app(args=argv, prog_name="lossbench", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except click.exceptions.Abort:
        print("aborted", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except LossbenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def entry_point() -> None:
    """Console-script entry point."""
    sys.exit(main())
