"""Shared test fixtures. Tests run on CPU at tiny sizes; nothing here needs ../shared or a network."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest_servers import mlflow_url, postgres  # noqa: F401  (fixtures for tests marked `servers`)
from torch import nn

from lossbench.models import register_feature_network


def tiny_features(random_weights: bool, weights_dir: str | None) -> nn.Sequential:
    """A 2-block VGG-style perceptual network (relu1_1, relu2_1) for tests, the same in every run."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Conv2d(4, 4, 3), nn.ReLU()
    )


register_feature_network("tiny-train", tiny_features)

REPO = Path(__file__).resolve().parents[1]
BUSI = REPO.parent / "shared" / "data" / "busi"

# One thread: tiny networks run ~100x slower when two threads oversubscribe two busy cores.
torch.set_num_threads(1)


@pytest.fixture
def busi_dir() -> Path:
    """The real BUSI folder beside the repo; the test is skipped when ../shared is absent."""
    if not (BUSI / "Dataset_BUSI_with_GT").is_dir():
        pytest.skip("BUSI not found at ../shared/data/busi")
    return BUSI


@pytest.fixture(autouse=True)
def _torch_threads_left_as_found():
    """A test that leaves torch on more threads slows every later test of its process (the learning
    runs took 3-5x longer behind one that left 2): fail it."""
    threads = torch.get_num_threads()
    yield
    left = torch.get_num_threads()
    torch.set_num_threads(threads)
    assert left == threads, f"the test left torch on {left} threads (found {threads})"


@pytest.fixture(autouse=True)
def _isolated_weights(tmp_path_factory, monkeypatch):
    """Point the torch hub cache at an empty folder so no test sees (or needs) real weights."""
    home = tmp_path_factory.mktemp("torch_home")
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.delenv("LOSSBENCH_WEIGHTS", raising=False)


def assert_one_line_error(err: str, *fragments: str) -> None:
    """`err` (a command's stderr) is one line, `error: ...`, without a traceback, holding each fragment."""
    assert err.startswith("error: ") and err.count("\n") == 1 and err.endswith("\n"), err
    assert "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
