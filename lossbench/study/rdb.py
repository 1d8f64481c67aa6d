"""Optuna's RDB storage for studies shared by several machines, surviving database restarts.

`RetryingRDBStorage` is an `RDBStorage` that pings pooled connections before use (after a server
restart every pooled connection is dead; without the ping the next commit fails) and retries every
storage call that fails because the database cannot be reached, with exponential backoff (0.5 s
doubling to 10 s, tenacity), for at most `retry_s` seconds; then it raises StorageUnavailable (one line). Once
it has given up, later calls are tried once until one succeeds, so a worker stops promptly. A heartbeat
is never raised from: Optuna's heartbeat thread would die with a traceback; it simply tries again at
the next interval. Retried writes are safe when the failed attempt was not committed, the usual case
(a connection lost between commit and acknowledgement is not distinguished). Machines creating
Optuna's tables in a fresh database at once collide; the losers open the storage again, backing off.
"""

from __future__ import annotations

import functools
import logging
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
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    retry_if_exception_type,
    stop_before_delay,
    wait_exponential,
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
    if not isinstance(error, (StorageInternalError, OperationalError, InterfaceError)):
        return None
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
        racing = _backoff(
            max(self.retry_s, TABLES_RACE_S), retry_if_exception_type((IntegrityError, ProgrammingError))
        )
        try:
            racing(RDBStorage.__init__, self, url, **kwargs)
        except (IntegrityError, ProgrammingError) as e:
            raise StorageUnavailable(
                f"cannot create Optuna's tables in {_shown(url)}: {first_line(e)}"
            ) from None

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            _retrying(RDBStorage.record_heartbeat)(self, trial_id)
        except StorageUnavailable as e:
            _log.warning("heartbeat of trial id %s not recorded: %s", trial_id, e)


def _backoff(
    budget_s: float, retry: Any, before_sleep: Callable[[RetryCallState], None] | None = None
) -> Retrying:
    """Attempts while `retry` accepts the error, FIRST_DELAY_S apart doubling to MAX_DELAY_S, none that
    would start after `budget_s` seconds (0: one attempt); the last error is raised."""
    return Retrying(
        retry=retry,
        wait=wait_exponential(multiplier=FIRST_DELAY_S, max=MAX_DELAY_S),
        stop=stop_before_delay(budget_s),
        before_sleep=before_sleep,
        reraise=True,
    )


def _retrying(method: Callable[..., Any]) -> Callable[..., Any]:
    def drop_session(state: RetryCallState) -> None:
        storage = state.args[0]  # this thread's session holds the dead connection's transaction
        if isinstance(storage, RDBStorage):
            storage.remove_session()

    @functools.wraps(method)
    def call(self: RetryingRDBStorage, *args: Any, **kwargs: Any) -> Any:
        budget = 0.0 if getattr(self, "_gave_up", False) else self.retry_s
        try:
            result = _backoff(budget, retry_if_exception(_unreachable), drop_session)(
                method, self, *args, **kwargs
            )
        except (StorageInternalError, OperationalError, InterfaceError) as e:
            cause = _unreachable(e)
            if cause is None:
                raise
            self._gave_up = True
            raise StorageUnavailable(
                f"the study database did not answer for {self.retry_s:g} s ({first_line(cause)})"
            ) from None
        self._gave_up = False
        return result

    return call


for _name in _CALLS:
    setattr(RetryingRDBStorage, _name, _retrying(getattr(RDBStorage, _name)))
