"""Session fixtures for tests marked `servers`: a real PostgreSQL cluster and an MLflow server on it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from servers import Postgres, ServerUnavailable, mlflow_server, postgres_cluster


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A throwaway PostgreSQL cluster for the whole session (skip when PostgreSQL cannot start)."""
    pytest.importorskip(
        "psycopg", reason="psycopg 3 is needed for PostgreSQL (pip install lossbench[postgres])"
    )
    try:
        with postgres_cluster() as cluster:
            yield cluster
    except ServerUnavailable as e:
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def mlflow_url(postgres: Postgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An `mlflow server` on the cluster's database `mlflow`, artifacts proxied; its URL."""
    backend = postgres.create_database("mlflow")
    try:
        with mlflow_server(backend, tmp_path_factory.mktemp("mlflow") / "artifacts") as url:
            yield url
    except ServerUnavailable as e:
        pytest.skip(str(e))
