"""Optuna's RDB storage for studies shared by several machines, surviving database restarts.

`RetryingRDBStorage` is an `RDBStorage` that pings pooled connections before use (after a server
restart every pooled connection is dead; without the ping the next commit fails) and retries every
storage call that fails because the database cannot be reached, with exponential backoff (0.5 s
doubling to 10 s), for at most `retry_s` seconds; then it raises StorageUnavailable (one line). Once
it has given up, later calls are tried once until one succeeds, so a worker stops promptly. A heartbeat
is never raised from: Optuna's heartbeat thread would die with a traceback; it simply tries again at
the next interval. Retried writes are safe when the failed attempt was not committed, the usual case
(a connection lost between commit and acknowledgement is not distinguished). Machines creating
Optuna's tables in a fresh database at once collide; the losers open the storage again, backing off.
"""

from __future__ import annotations

import functools
import logging
import time
import warnings
from collections.abc import Callable
from typing import Any

from optuna.exceptions import ExperimentalWarning, StorageInternalError
from optuna.storages import RDBStorage
from sqlalchemy import make_url
from sqlalchemy.exc import (
    ArgumentError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    ProgrammingError,
)

from lossbench.errors import StorageUnavailable, first_line

_log = logging.getLogger(__name__)
FIRST_DELAY_S = 0.5
MAX_DELAY_S = 10.0
TABLES_RACE_S = 30.0  # how long a machine retries creating Optuna's tables while others create them
#: RDBStorage methods that reach the database (those Optuna's cached storage and lossbench call).
_CALLS = (
    "create_new_study",
    "delete_study",
    "set_study_user_attr",
    "set_study_system_attr",
    "get_study_id_from_name",
    "get_study_name_from_id",
    "get_study_directions",
    "get_study_user_attrs",
    "get_study_system_attrs",
    "get_all_studies",
    "create_new_trial",
    "_create_new_trial",
    "set_trial_param",
    "_set_trial_param",
    "set_trial_state_values",
    "set_trial_intermediate_value",
    "set_trial_user_attr",
    "set_trial_system_attr",
    "get_trial_id_from_study_id_trial_number",
    "get_trial",
    "get_trial_param",
    "get_trial_user_attrs",
    "get_trial_system_attrs",
    "get_all_trials",
    "_get_trials",
    "get_n_trials",
    "get_best_trial",
    "_get_best_trial_id",
    "_get_stale_trial_ids",
    "get_current_version",
    "get_all_versions",
)
#: RDBStorage's public methods that do not reach the database (or, the heartbeat, are wrapped apart).
NOT_DATABASE = (
    "get_heartbeat_interval",
    "get_heartbeat_stale_trial_callback",
    "get_head_version",
    "remove_session",
    "upgrade",
    "record_heartbeat",
)


def _shown(url: str) -> str:
    """`url` without its password."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def _unreachable(error: BaseException) -> BaseException | None:
    """The connection error behind `error` (itself, its cause or context: a lost connection may
    surface as a PendingRollbackError raised while rolling back), or None for any other error."""
    seen: BaseException | None = error
    for _ in range(10):
        if seen is None or isinstance(seen, (OperationalError, InterfaceError)):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


class RetryingRDBStorage(RDBStorage):
    """`RDBStorage` with pre-pinged connections and bounded retries (see the module docstring)."""

    def __init__(self, url: str, retry_s: float, **kwargs: Any) -> None:
        self.retry_s = retry_s
        self._gave_up = False
        engine_kwargs = {"pool_pre_ping": True, **kwargs.pop("engine_kwargs", {})}
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna 5
                warnings.simplefilter("ignore", ExperimentalWarning)
                self._create_tables_racing(url, engine_kwargs=engine_kwargs, **kwargs)
        except ImportError:
            raise StorageUnavailable(
                f"no database driver for {_shown(url)} (PostgreSQL: pip install 'lossbench[postgres]')"
            ) from None
        except (OperationalError, InterfaceError, ArgumentError) as e:
            where = _shown(url)
            raise StorageUnavailable(f"cannot open the study database {where}: {first_line(e)}") from None

    def _create_tables_racing(self, url: str, **kwargs: Any) -> None:
        """`RDBStorage.__init__`, which creates Optuna's tables and stamps their version on first use.
        Machines starting at once collide there (a duplicate table, type or version row, in any of
        several statements); each attempt is idempotent, so a loser tries again, backing off, for at
        least TABLES_RACE_S seconds."""
        deadline = time.monotonic() + max(self.retry_s, TABLES_RACE_S)
        delay = FIRST_DELAY_S
        while True:
            try:
                RDBStorage.__init__(self, url, **kwargs)
                return
            except (IntegrityError, ProgrammingError) as e:
                if time.monotonic() + delay > deadline:
                    raise StorageUnavailable(
                        f"cannot create Optuna's tables in {_shown(url)}: {first_line(e)}"
                    ) from None
                time.sleep(delay)
                delay = min(2 * delay, MAX_DELAY_S)

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            _retrying(RDBStorage.record_heartbeat)(self, trial_id)
        except StorageUnavailable as e:
            _log.warning("heartbeat of trial id %s not recorded: %s", trial_id, e)


def _retrying(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(self: RetryingRDBStorage, *args: Any, **kwargs: Any) -> Any:
        deadline = time.monotonic() + (0.0 if getattr(self, "_gave_up", False) else self.retry_s)
        delay = FIRST_DELAY_S
        while True:
            try:
                result = method(self, *args, **kwargs)
            except (StorageInternalError, OperationalError, InterfaceError) as e:
                cause = _unreachable(e)
                if cause is None:
                    raise
                if time.monotonic() + delay > deadline:
                    self._gave_up = True
                    raise StorageUnavailable(
                        f"the study database did not answer for {self.retry_s:g} s ({first_line(cause)})"
                    ) from None
                if isinstance(self, RDBStorage):
                    self.remove_session()  # this thread's session holds the dead connection's transaction
                time.sleep(delay)
                delay = min(2 * delay, MAX_DELAY_S)
                continue
            self._gave_up = False
            return result

    return call


for _name in _CALLS:
    setattr(RetryingRDBStorage, _name, _retrying(getattr(RDBStorage, _name)))
