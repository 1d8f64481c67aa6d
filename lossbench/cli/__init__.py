"""The `lossbench` command line: a thin layer that parses arguments, calls the library, prints.

One module per command group; each exposes `register(app)`. Errors a user can cause
(`LossbenchError`) are printed as one line on stderr with exit code 2, never as a traceback.
"""

from __future__ import annotations

import signal
import sys
import threading

import typer

from lossbench.errors import LossbenchError, lossbench_error_in

app = typer.Typer(
    name="lossbench",
    help="Benchmark GAN adversarial losses and perceptual-loss weights with evidence.",
    no_args_is_help=True,
    invoke_without_command=True,  # for --version alone
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", help="Print lossbench's version and exit.", is_eager=True, metavar=""
    ),
) -> None:
    """Benchmark GAN adversarial losses and perceptual-loss weights with evidence."""
    if version:
        import lossbench

        typer.echo(f"lossbench {lossbench.__version__}")
        raise typer.Exit()


def _register_commands() -> None:
    from lossbench.cli import (
        data,
        encoder,
        evaluate,
        losses,
        metrics,
        report,
        stats,
        study,
        train,
        utility,
        weights,
    )

    for module in (data, weights, losses, train, encoder, evaluate, utility, metrics, study, stats, report):
        module.register(app)


_register_commands()


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit code (0 ok, 2 bad input or failed run, 130 interrupted).

    Typer runs in standalone mode, so usage errors are printed by typer itself (exit 2); errors from
    the library arrive here as `LossbenchError` and become one line.
    """
    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread:  # a terminated run (SIGTERM) cleans up like Ctrl-C: workers stopped, runs closed
        previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        app(args=argv, prog_name="lossbench")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if code == 130:  # typer turns KeyboardInterrupt (Ctrl-C, or SIGTERM here) into exit 130
            print("interrupted", file=sys.stderr)
        return code
    except LossbenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a path that cannot be read or written, a full disk: one line, whichever command
        print(f"error: {os_error(e)}", file=sys.stderr)
        return 2
    except Exception as e:  # a library's error around ours, or the tracking server gone (errors.py)
        known = lossbench_error_in(e)
        if known is None:
            raise
        print(f"error: {known}", file=sys.stderr)
        return 2
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
    return 0


def os_error(error: OSError) -> str:
    """`<path>: <reason>` for an OSError (both paths of a rename or link), its text when it names none."""
    paths = [str(p) for p in (error.filename, error.filename2) if p is not None]
    if not paths or not error.strerror:
        return str(error)
    return f"{' -> '.join(paths)}: {error.strerror}"


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def entry_point() -> None:
    """Console-script entry point."""
    sys.exit(main())
