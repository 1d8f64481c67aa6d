"""Issue #26: every invalid value of every configuration field, and malformed study files of every
kind, are answered by one line and exit 2, with nothing created: counted, so a field added without a
check, or a check that lets a traceback through, fails here."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import typing
from pathlib import Path

from lossbench.cli import main
from lossbench.config import CELL, DataConfig, EvalConfig, TrainConfig


def _bad_values(hint: typing.Any) -> list[str]:
    """Two TOML literals no field of this type accepts."""
    text = str(hint)
    if text.startswith("tuple[float, float]"):
        return ["[0.5]", '"x"']
    if text.startswith("tuple"):
        return ["5", '"x"']
    if "None" in text:
        return ['"x"', "1.5"] if "int" in text else ["5", "[1]"]
    return {int: ['"x"', "1.5"], float: ['"x"', "nan"], bool: ['"yes"', "2"], str: ["5", "[1]"]}[hint]


def bad_assignments() -> list[str]:
    """`section.field=value` for every settable field of a study's [train], [eval] and [data]."""
    out = []
    for section, cls in (("train", TrainConfig), ("eval", EvalConfig), ("data", DataConfig)):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.metadata.get("role") != CELL and f.name != "model":
                out += [f"{section}.{f.name}={value}" for value in _bad_values(hints[f.name])]
    return out


#: Values of the right kind outside what a field accepts (declared `within=` in lossbench.config).
OUT_OF_RANGE = [
    "train.steps=0",
    "train.steps=100000000000",
    "train.batch_size=100000000",
    "train.n_critic=0",
    "train.z_dim=100000",
    "train.lr_g=-0.5",
    "train.lr_d=inf",
    "train.health_every=-1",
    "eval.n_fake=1",
    "eval.n_fake=100000000000",
    "eval.kid_subsets=0",
    "eval.swd_directions=10000000000",
    "eval.bootstrap=1",
    "eval.bootstrap=-2",
    "eval.utility_ratio=-1",
    "eval.seed=-1",
    "workers=-1",
    "workers=100000",
    "threads=0",
    "eval_every=-5",
]
#: Number fields whose accepted values are not a plain range (checked by their own rule), or that
#: take any integer: every other int or float field must declare `within=`.
OWN_RULE = {"lam", "ema_decay", "holdout", "resolution", "split_seed", "grace_s"}

MALFORMED_STUDY_FILES = [
    b"name = \n",
    b"[train\nsteps = 1\n",
    b"steps = 5\nsteps = 6\n",
    b"\xff\xfe\x00 not UTF-8",
    b"bogus = 1\n",
    b"[train]\nbogus = 1\n",
    b"[nosuch]\nx = 1\n",
    b"[train]\nlam = 5\n",
    b"[train]\nseed = 1\n",
    b'[train]\nloss = "bce"\n',
    b'losses = "bce"\n',
    b'lambdas = "abc"\n',
    b'seeds = "01"\n',
    b'name = "bad name!"\n',
    b"losses = []\n",
    b"lambdas = [0.5, 0.5]\n",
    b"lambdas = [0.3, 0.30000000000000004]\n",
    b"lambdas = [-1]\n",
    b'losses = ["nope"]\n',
    b'objective = "nope"\n',
    b'curve_metrics = ["nope"]\n',
    b'best_metric = "nope"\n',
    b"workers = 0\n",
    b"threads = 0\n",
    b'devices = ["gpu7"]\n',
    b"train = 5\n",
    b"[train]\nsteps = 9223372036854775807\n",
    b"eval_every = -1\n",
    b'[eval]\nmetrics = ["fid", "bogus"]\n',
    b"[data]\nresolution = 48\n",
    b"[train.model]\nbogus = 1\n",
]


def _answers(argv: list[str], root: Path) -> str | None:
    """None when `lossbench argv` exits 2 with one `error:` line and creates nothing under `root`;
    else what it did instead."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    text = err.getvalue()
    if code == 2 and text.startswith("error: ") and text.count("\n") == 1 and not root.exists():
        return None
    return f"exit {code}, {'created ' + str(root) if root.exists() else ''} stderr {text[-200:]!r}"


def _unanswered(assignments: list[str], root: Path) -> dict[str, str]:
    """The `--set` assignments that a study does not refuse in one line, with what it did."""
    failed = {}
    for assignment in assignments:
        argv = ["study", "--data", "phantom:16", "--root", str(root), "--no-progress", "--set", assignment]
        if (outcome := _answers(argv, root)) is not None:
            failed[assignment] = outcome
    return failed


def test_every_field_refuses_values_of_the_wrong_kind_in_one_line(tmp_path):
    cases = bad_assignments()
    assert len(cases) >= 100
    assert not _unanswered(cases, tmp_path / "root")


def test_malformed_study_files_are_one_line_each(tmp_path):
    root = tmp_path / "root"
    assert len(MALFORMED_STUDY_FILES) >= 28
    failed = {}
    for i, content in enumerate(MALFORMED_STUDY_FILES):
        path = tmp_path / f"s{i}.toml"
        path.write_bytes(content)
        argv = ["study", "--config", str(path), "--data", "phantom:16", "--root", str(root), "--no-progress"]
        if (outcome := _answers(argv, root)) is not None:
            failed[content] = outcome
    assert not failed


def test_out_of_range_values_are_one_line_each(tmp_path):
    assert not _unanswered(OUT_OF_RANGE, tmp_path / "root")


def test_every_number_field_declares_its_range():
    """A number field added without `within=` (or its own rule) would accept any value."""
    from lossbench.config import StudyConfig

    missing = []
    for cls in (TrainConfig, EvalConfig, DataConfig, StudyConfig):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            hint = hints[f.name]
            if typing.get_origin(hint) is tuple:  # lists of numbers (betas, lambdas, seeds): own rules
                continue
            numeric = {int, float} & set(typing.get_args(hint) or (hint,))
            if (
                numeric
                and hints[f.name] is not bool
                and "within" not in f.metadata
                and f.name not in OWN_RULE
            ):
                missing.append(f"{cls.__name__}.{f.name}")
    assert not missing
