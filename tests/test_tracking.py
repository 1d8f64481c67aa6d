"""MLflow tracking: store set-up, parent run reuse, child runs with explicit parents, batched metrics."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from lossbench import tracking


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite store for the module (creating one runs MLflow's migrations, seconds each)."""
    root = tmp_path_factory.mktemp("mlruns")
    return root, tracking.default_tracking_uri(root)


def test_flatten_nested_config():
    flat = tracking.flatten({"train": {"lr": 1e-4, "betas": (0.0, 0.9)}, "name": "x", "loss_params": {}})
    assert flat == {"train.lr": "0.0001", "train.betas": "[0.0, 0.9]", "name": "x", "loss_params": "{}"}


def test_default_uri_keeps_relative_root():
    assert tracking.default_tracking_uri("mlruns") == "sqlite:///mlruns/mlflow.db"


def test_parent_run_is_reused_and_children_point_to_it(store):
    tmp_path, uri = store
    exp = tracking.init_experiment(uri, "s1", tmp_path / "artifacts")
    assert tracking.init_experiment(uri, "s1", tmp_path / "artifacts") == exp
    client = MlflowClient(uri)
    assert client.get_experiment(exp).artifact_location == (tmp_path / "artifacts" / "s1").as_uri()

    parent = tracking.study_run(uri, exp, "s1", {"losses": '["bce"]'}, {"lossbench.weights": "random"})
    tracking.end_run(uri, parent, "FINISHED")
    again = tracking.study_run(uri, exp, "s1", {"losses": '["bce"]'}, {"lossbench.weights": "random"})
    assert again == parent
    assert client.get_run(parent).info.status == "RUNNING"  # reopened on resume
    assert client.get_run(parent).data.tags["lossbench.role"] == "study"

    child = tracking.TrialRun.start(uri, exp, parent, "c", {"lossbench.trial": 3, "lossbench.loss": "bce"})
    tags = client.get_run(child.run_id).data.tags
    assert tags["mlflow.parentRunId"] == parent
    assert tags["lossbench.role"] == "trial" and tags["lossbench.trial"] == "3"
    assert tags["lossbench.version"] and tags["lossbench.git_commit"]
    assert [r.info.run_id for r in tracking.running_child_runs(uri, exp)] == [child.run_id]
    child.end("KILLED")


def test_metrics_are_buffered_then_written_in_order(store):
    tmp_path, uri = store
    exp = tracking.init_experiment(uri, "s2", tmp_path / "artifacts")
    parent = tracking.study_run(uri, exp, "s2", {}, {})
    run = tracking.TrialRun.start(uri, exp, parent, "c", {})
    values = [(step, 1.0 / step) for step in range(1, 31)]
    for step, v in values:
        run.log_metrics({"train/g/loss": v}, step)
    client = MlflowClient(uri)
    assert client.get_metric_history(run.run_id, "train/g/loss") == []  # still buffered
    run.end("FAILED", "diverged: test")
    history = sorted((m.step, m.value) for m in client.get_metric_history(run.run_id, "train/g/loss"))
    assert history == values
    info = client.get_run(run.run_id)
    assert info.info.status == "FAILED"
    assert info.data.tags["lossbench.fail_reason"] == "diverged: test"
    assert tracking.running_child_runs(uri, exp) == []


def test_features_artifact_keeps_at_most_500_rows(store, tmp_path):
    uri = store[1]
    exp = tracking.init_experiment(uri, "s3", tmp_path / "artifacts")
    parent = tracking.study_run(uri, exp, "s3", {}, {})
    features = np.random.default_rng(0).normal(size=(700, 4)).astype(np.float32)
    assert not tracking.has_artifact(uri, parent, "features/real.npy")
    tracking.log_features(uri, parent, features, "features/real.npy")
    assert tracking.has_artifact(uri, parent, "features/real.npy")
    local = MlflowClient(uri).download_artifacts(parent, "features/real.npy", str(tmp_path))
    kept = np.load(local)
    assert len(kept) == 500 and (kept[0] == features[0]).all() and (kept[-1] == features[-1]).all()
    # rows come class by class: every class keeps its share (the first 500 rows had dropped the last
    # class of the BUSI study's 624 real images, 106 normal ones, from its maps)
    classes = np.repeat(["benign", "malignant", "normal"], [351, 167, 106])
    tracking.log_features(uri, parent, classes, "features/real_classes.npy")
    local = MlflowClient(uri).download_artifacts(parent, "features/real_classes.npy", str(tmp_path))
    counts = dict(zip(*np.unique(np.load(local), return_counts=True), strict=True))
    assert counts == {"benign": 281, "malignant": 134, "normal": 85}
    rows = tracking.kept_rows(624)
    assert len(set(rows)) == 500 and (np.diff(rows) > 0).all()
    np.testing.assert_array_equal(tracking.kept_rows(300), np.arange(300))


def test_a_study_begun_before_class_names_were_logged_gains_them_on_resume(store, tmp_path):
    from lossbench.metrics.evaluation import EvalResult
    from lossbench.study.run import _log_real_features

    uri = store[1]
    exp = tracking.init_experiment(uri, "classes-on-resume", tmp_path / "artifacts")
    parent = tracking.study_run(uri, exp, "classes-on-resume", {}, {})
    features = np.arange(12, dtype=np.float32).reshape(6, 2)
    tracking.log_features(uri, parent, features, tracking.REAL_FEATURES)  # as the older version left it
    classes = np.array(["a", "a", "b", "b", "c", "c"])
    _log_real_features(uri, parent, EvalResult({}, {}, real_features=features + 1, real_classes=classes))
    client = MlflowClient(uri)
    kept = np.load(client.download_artifacts(parent, tracking.REAL_FEATURES, str(tmp_path / "f")))
    np.testing.assert_array_equal(kept, features)  # what was recorded is left as it was
    added = client.download_artifacts(parent, tracking.REAL_CLASSES, str(tmp_path / "c"))
    assert np.load(added).tolist() == classes.tolist()


@pytest.mark.parametrize(
    ("error", "status", "reason"),
    [
        (None, "FINISHED", None),
        (ValueError("bad"), "FAILED", "ValueError: bad"),
        (KeyboardInterrupt(), "KILLED", "interrupted"),
        (SystemExit(2), "KILLED", "interrupted"),
    ],
)
def test_ending_ends_the_run_by_how_the_block_ended(store, error, status, reason):
    root, uri = store
    exp = tracking.init_experiment(uri, "s4", root / "artifacts")
    parent = tracking.study_run(uri, exp, "s4", {}, {})
    run = tracking.TrialRun.start(uri, exp, parent, "c", {})
    expected = pytest.raises(type(error)) if error is not None else contextlib.nullcontext()
    with expected, tracking.ending(run):
        run.log_metrics({f"{tracking.TRAIN_PREFIX}g": 1.0}, 0)  # buffered, flushed by the end
        if error is not None:
            raise error
    got = MlflowClient(uri).get_run(run.run_id)
    assert got.info.status == status
    assert got.data.tags.get(tracking.FAIL_REASON_TAG) == reason
    assert got.data.metrics == {"train/g": 1.0}


def test_weights_kind_is_random_when_either_config_asks():
    from lossbench.config import EvalConfig, TrainConfig

    assert tracking.weights_kind(TrainConfig(), EvalConfig()) == "pretrained"
    assert tracking.weights_kind(TrainConfig(random_weights=True), EvalConfig()) == "random"
    assert tracking.weights_warning(TrainConfig(), EvalConfig()) is None
    # a random VGG16 in the perceptual loss alone: the evaluation (a trained encoder, say) still measures
    only_perceptual = tracking.weights_warning(TrainConfig(random_weights=True), EvalConfig())
    assert only_perceptual == tracking.RANDOM_PERCEPTUAL_WARNING and "perceptual loss" in only_perceptual
    for train in (TrainConfig(), TrainConfig(random_weights=True)):
        assert tracking.weights_warning(train, EvalConfig(random_weights=True)) == tracking.RANDOM_WARNING
    assert tracking.weights_kind(TrainConfig(), EvalConfig(random_weights=True)) == "random"


@pytest.mark.parametrize(("key", "ascending"), [("fid", "true"), ("utility_gain", "false")])
def test_the_runs_view_puts_the_best_run_first(key, ascending):
    """A higher-is-better objective (utility_gain) sorted ascending put the worst run first."""
    url = tracking.runs_view_url("http://h:5000/", "3", key)
    assert url == f"http://h:5000/#/experiments/3/runs?orderByKey=metrics.%60{key}%60&orderByAsc={ascending}"


def test_a_store_left_half_made_by_a_kill_is_made_again(tmp_path, capsys):
    """Issue #26: a first run killed while MLflow created its schema left a store MLflow refuses for
    good (no `alembic_version` row). Such a store holds no run: it is set aside, with one line, and
    made again; a new store is made beside and moved into place, so a kill leaves only `<db>.new-*`."""
    import sqlite3

    db = tmp_path / "mlflow.db"
    uri = f"sqlite:///{db}"
    MlflowClient(f"sqlite:///{tmp_path / 'made.db'}").search_experiments()  # MLflow's cache keeps
    (tmp_path / "made.db").rename(db)  # that URI's engine: a new process opens `db` afresh
    with contextlib.closing(sqlite3.connect(db)) as con:
        con.execute("DROP TABLE alembic_version")  # what a kill before MLflow stamped its schema leaves
        con.commit()
    (tmp_path / "mlflow.db.new-0123abcd").write_bytes(b"a creation cut off by a kill")
    exp = tracking.init_experiment(uri, "s", tmp_path / "artifacts")
    err = capsys.readouterr().err
    assert err.startswith("warning: ") and err.count("\n") == 1 and "has no complete schema" in err
    assert [p.name.split(".bad-")[0] for p in tmp_path.glob("mlflow.db.bad-*")] == ["mlflow.db"]
    assert not list(tmp_path.glob("mlflow.db.new*"))
    assert tracking.init_experiment(uri, "s", tmp_path / "artifacts") == exp  # complete now: kept
    assert capsys.readouterr().err == ""
