"""The errors lossbench raises for bad input or a failed run.

Every error a user can cause is a `LossbenchError`: the CLI prints its message as one line and
exits with code 2, without a traceback. Messages are complete sentences that name the offending
path, value or file and, where there is one, the fix.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import requests


def first_line(error: BaseException, typed: bool = False) -> str:
    """The first sentence of an error's message (of the database error a SQLAlchemy error wraps, its
    `orig`), or its type's name when the message is empty: what a one-line message quotes; `typed`
    puts the type first ("UnpicklingError: Weights only load failed")."""
    text = str(getattr(error, "orig", None) or error).strip()
    if not text:
        return type(error).__name__
    first = text.splitlines()[0].split(". ")[0]
    return f"{type(error).__name__}: {first}" if typed else first


class LossbenchError(Exception):
    """Base class of the errors that the CLI reports as one line (exit code 2)."""


class DataError(LossbenchError):
    """A dataset spec that cannot be loaded: missing path, no images, corrupt file, bad class."""


class ConfigError(LossbenchError):
    """An invalid configuration value: bad resolution, malformed list, unknown option."""


class UnknownLossError(LossbenchError):
    """A loss name that is not registered (in-tree or through a plugin)."""


class PluginError(LossbenchError):
    """A loss plugin that fails to import or clashes with a registered name."""


class MissingWeightsError(LossbenchError):
    """A pretrained weight file that is not present where lossbench looks for it."""


class WeightsDigestError(LossbenchError):
    """A pretrained weight file whose sha256 is not the published one, or that is not a plain state dict."""


class DivergedError(LossbenchError):
    """Training produced NaN or Inf; `step` and `term` say where."""

    def __init__(self, step: int, term: str, value: float | None = None) -> None:
        self.step = step
        self.term = term
        self.value = value
        super().__init__(f"training diverged at step {step}: {term} is {value}")


class StorageError(LossbenchError):
    """A study's storage that cannot be used as it is: a corrupt Optuna journal or MLflow store, a
    moved study folder, results that the journal has forgotten."""


class CheckpointError(LossbenchError):
    """A training checkpoint that exists but cannot be loaded (truncated, garbled)."""


class StorageUnavailable(LossbenchError):
    """The study's database did not answer within the retry period (a restart, a network cut)."""


class TrackingUnavailable(LossbenchError):
    """The MLflow tracking server did not answer, after MLflow's own retries (its environment
    variables MLFLOW_HTTP_REQUEST_MAX_RETRIES and _BACKOFF_FACTOR: by default about 4 minutes)."""


def lossbench_error_in(error: BaseException) -> LossbenchError | None:
    """The first LossbenchError in `error`'s chain (itself, its cause or context): a library may
    raise its own error while handling ours (Optuna, when it cannot record a failed trial). A
    connection to an HTTP server (lossbench's only one is the tracking server) that failed or timed
    out, wherever in the chain, is TrackingUnavailable."""
    import requests

    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, LossbenchError):
            return current
        if isinstance(current, (requests.ConnectionError, requests.Timeout)):
            return _tracking_unavailable(current, isinstance(current, requests.Timeout))
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _tracking_unavailable(error: requests.RequestException, timed_out: bool) -> TrackingUnavailable:
    """`error` in one line: the server's address and the reason (the innermost OSError's)."""
    from urllib.parse import urlsplit

    url = urlsplit(error.request.url if error.request is not None else "")
    where = f"{url.scheme}://{url.netloc}" if url.netloc else "the MLflow tracking server"
    reason, current = "no answer", error.__context__ or error.__cause__
    for _ in range(20):  # the OSError at the bottom of urllib3's chain says what happened
        if current is None:
            break
        if isinstance(current, OSError) and current.strerror:
            reason = current.strerror.lower()
        current = current.__cause__ or current.__context__
    if timed_out:
        reason = "timed out"
    return TrackingUnavailable(
        f"the tracking server {where} did not answer ({reason}); rerun the same command once it is back: "
        "finished cells are kept and the others run again"
    )
