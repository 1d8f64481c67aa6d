"""The command line as a whole: every command's --help, light start-up, bad input as one line + exit 2.

Nothing here trains or evaluates; each bad input is rejected before any real work starts.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import assert_one_line_error

from lossbench import weights
from lossbench.cli import main
from lossbench.config import DataConfig, RunConfig, StudyConfig, TrainConfig, config_field

HELP = [
    ([], ["data", "weights", "losses", "train", "evaluate", "study", "stats", "report"]),
    (["data", "inspect"], ["--resolution", "--classes"]),
    (["data", "phantom"], ["--n", "--resolution", "--seed", "--grid"]),
    (["weights", "status"], ["--weights-dir", weights.ENV_VAR]),
    (["weights", "import"], ["src", "--dest"]),
    (["weights", "fetch"], ["--config", "--all", "--dest", "--weights-dir"]),
    (["losses", "list"], []),
    (["losses", "show"], ["name"]),
    (["train"], ["--loss", "--lambda", "--data", "--out", "--weights-dir", "--random-weights", "--device"]),
    (["evaluate"], ["--checkpoint", "--fake", "--data", "--metrics", "--weights-dir", "--random-weights"]),
    (
        ["study"],
        ["--losses", "--lambdas", "--seeds", "--classes", "--storage", "--root", "--preset", "--plan"],
    ),
    (["study"], ["[default: wgangp,bce]", "[default: 0.5,3,5,7,10]", "[default: 2000]", "--weights-dir"]),
    (["study", "status"], ["--storage", "--root"]),
    (["study", "export"], ["--out", "--storage", "--root"]),
    (["stats"], ["--metric", "--alpha", "--paired", "--unpaired", "--correction", "--format", "--power"]),
    (["report"], ["--out", "--alpha", "--paired", "--correction", "--bootstrap", "--root", "--tracking-uri"]),
]


@pytest.mark.parametrize("command, expected", HELP, ids=[" ".join(c) or "root" for c, _ in HELP])
def test_help_of_every_command(command, expected, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # no wrapped option names
    assert main([*command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "Usage:" in out
    for word in expected:
        assert word in out


@pytest.mark.parametrize(
    "command, flag, key, root",
    [
        (["train"], "--steps", "train.steps", RunConfig()),
        (["train"], "--data", "data.spec", RunConfig()),
        (["train"], "--resolution", "data.resolution", RunConfig()),
        (["train"], "--perceptual-pairing", "train.perceptual_pairing", RunConfig()),
        (["study"], "--data", "data.spec", StudyConfig()),  # the study's own default: busi
        (["study"], "--workers", "workers", StudyConfig()),
        (["study"], "--lambdas", "lambdas", StudyConfig()),
        (["data", "inspect"], "--split-seed", "split_seed", DataConfig()),
    ],
)
def test_an_option_shows_its_fields_help_and_the_commands_default(
    command, flag, key, root, capsys, monkeypatch
):
    """Issue #27: an option's meaning is its config field's `help` metadata, its default the value of
    the config the command starts from: neither is retyped in the command line's code."""
    monkeypatch.setenv("COLUMNS", "400")  # one line per option
    assert main([*command, "--help"]) == 0
    (line,) = [row for row in capsys.readouterr().out.splitlines() if f" {flag} " in row]
    field, default = config_field(root, key)
    shown = (
        ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in default)
        if isinstance(default, tuple)
        else default
    )
    assert field.metadata["help"] and field.metadata["help"] in line and f"[default: {shown}]" in line


def test_help_does_not_import_heavy_libraries():
    """`lossbench --help` and `lossbench stats --help` must not pay for torch, mlflow, optuna, ..."""
    heavy = ("torch", "torchvision", "lpips", "torch_fidelity", "mlflow", "optuna", "pandas", "matplotlib")
    code = (
        "import sys\nfrom lossbench.cli import main\n"
        "codes = [main(['--help']), main(['stats', '--help']), main(['train', '--help'])]\n"
        f"print(codes, sorted(m for m in {heavy!r} if m in sys.modules), file=sys.stderr)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stderr.strip().splitlines()[-1] == "[0, 0, 0] []"


QUICK_ANSWERS = [
    (["study", "--losses", "wgangp", "--loss-param", "wgangp.nope=1"], "has no parameter nope"),
    (["study", "--losses", "wgangp,wgangp"], "must not repeat"),
    (["study", "--lambdas", "0.3,0.30000000000000004"], "must not repeat"),  # one folder name
    (["study", "--objective", "nope"], "unknown objective"),
    (["train", "--out", "{tmp}/o", "--data", "phantom", "--loss-param", "nope=1"], "has no parameter nope"),
    (["study", "status", "nosuch", "--root", "{tmp}"], "no study named 'nosuch'"),
    (["study", "status", "othre", "--root", "{tmp}"], "(it holds other); did you mean 'other'?"),
    (["study", "export", "nosuch", "--out", "{tmp}/x.csv", "--root", "{tmp}"], "no study named 'nosuch'"),
    (["study", "status", "other", "--root", "{tmp}/none"], "no study storage at"),
]


@pytest.mark.parametrize(
    "args, message", QUICK_ANSWERS, ids=[" ".join(a[:2]) + " " + m for a, m in QUICK_ANSWERS]
)
def test_bad_input_answered_before_heavy_imports(args, message, tmp_path):
    """A typo is rejected before torch, optuna, mlflow or scipy (statsmodels, via lossbench.analysis.stats) is
    imported (benchmarks/cli_latency.py times it)."""
    (tmp_path / "optuna-journal.log").write_text(
        '{"op_code":0,"worker_id":"w","study_name":"other","directions":[1]}\n'
    )
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    code = (
        "import sys\nfrom lossbench.cli import main\n"
        f"code = main({args!r})\n"
        "heavy = ('torch', 'optuna', 'mlflow', 'scipy')\n"
        "print(code, sorted(m for m in heavy if m in sys.modules), file=sys.stderr)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    *lines, last = done.stderr.strip().splitlines()
    assert last == "2 []", done.stderr
    assert len(lines) == 1 and message in lines[0], done.stderr


BAD_INPUT = [
    (["losses", "show", "nope"], "unknown loss 'nope'"),
    (
        ["train", "--loss", "nope", "--data", "phantom:8", "--resolution", "32", "--batch-size", "4"],
        "unknown loss",
    ),
    (["train", "--data", "phantom:8", "--resolution", "100"], "resolution 100 is not a power of two"),
    (["train", "--data", "{tmp}/missing"], "missing does not exist"),
    (["train", "--data", "phantom:8", "--loss-param", "gp_weight"], "malformed --loss-param 'gp_weight'"),
    (["study", "--lambdas", "1,x"], "malformed lambda list '1,x'"),
    (["study", "--lambdas", "0.5,nan"], "'nan' is not a finite number"),
    (["study", "--lambdas", "1,-2", "--data", "phantom"], "lambda must be a finite number >= 0"),
    (["study", "--seed-list", "0,1.5"], "'1.5' is not an integer"),
    (["study", "--seeds", "0"], "--seeds must be at least 1"),
    (["study", "--seeds", "2", "--seed-list", "0,1"], "either --seeds N or --seed-list"),
    (["study", "status", "nostudy", "--root", "{tmp}/r"], "no study storage at"),
    (["evaluate", "--data", "phantom:8"], "exactly one of --checkpoint"),
    (["evaluate", "--data", "phantom:8", "--checkpoint", "{tmp}/nope.pt"], "nope.pt does not exist"),
    (
        ["evaluate", "--data", "phantom:8", "--fake", "{tmp}/full", "--metrics", "fid,bogus"],
        "unknown metric 'bogus'",
    ),
    (["data", "inspect", "{tmp}/missing"], "missing does not exist"),
    (["data", "inspect", "phantom:8", "-r", "48"], "resolution 48 is not a power of two"),
    (["data", "inspect", "phantom:8", "--classes", "tumour"], "unknown class 'tumour'"),
    (["data", "phantom", "{tmp}/full", "--n", "8", "-r", "32"], "is not an empty folder"),
    (["weights", "import", "{tmp}/missing"], "missing does not exist"),
    (["stats", "{tmp}/missing.csv"], "no results file at"),
    (["stats", "{tmp}/full/results.csv", "--format", "xml"], "unknown format 'xml'"),
    (["report", "{tmp}/bad.csv", "--out", "{tmp}/out"], "lacks column(s) lambda"),
    (["report", "nostudy", "--out", "{tmp}/out", "--root", "{tmp}/r"], "r/optuna-journal.log"),
]


@pytest.mark.parametrize(
    "args, message", BAD_INPUT, ids=[" ".join(a[:2]) + f" {i}" for i, (a, _) in enumerate(BAD_INPUT)]
)
def test_bad_input_is_one_line_exit_2(args, message, tmp_path, capsys):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "results.csv").write_text("loss,lambda,seed,fid\nbce,1,0,1\n")
    (tmp_path / "bad.csv").write_text("loss,seed,fid\nbce,0,1\n")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if args[0] == "train":
        args += ["--out", str(tmp_path / "run")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert_one_line_error(err)
    assert message in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--resolution", "abc"], "Invalid value for '--resolution'"),
        (["stats", "--bogus"], "No such option: --bogus"),
        (["report", "results.csv"], "Missing option '--out'"),
        (["losses", "show"], "Missing argument"),
    ],
)
def test_usage_errors_exit_2_without_traceback(args, message, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_an_interrupted_command_says_so_and_exits_130(monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(weights, "status", interrupted)
    assert main(["weights", "status"]) == 130
    assert capsys.readouterr().err.strip() == "interrupted"


def test_version(capsys):
    import lossbench

    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"lossbench {lossbench.__version__}\n"


@pytest.mark.parametrize("command", [["train"], ["study"], ["stats"], ["evaluate"]])
def test_flags_take_no_value_in_help(command, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert main([*command, "--help"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "<bool>" in line]
    assert [line for line in lines if "--help" not in line] == []  # typer's own --help aside


def test_unknown_preset_is_one_line(capsys):
    assert main(["study", "--preset", "huge"]) == 2
    err = capsys.readouterr().err
    assert err == "error: unknown preset 'huge' (choose from tiny)\n"


@pytest.mark.parametrize("pairing, warned", [("paired", True), ("mean", False)])
def test_paired_perceptual_loss_is_warned_about_in_one_line(pairing, warned, tmp_path, capsys):
    args = [
        "train",
        "--data",
        str(tmp_path / "missing"),
        "--perceptual-pairing",
        pairing,
        "--out",
        str(tmp_path / "o"),
    ]
    assert main(args) == 2  # the missing data stops it right after the settings are read
    lines = capsys.readouterr().err.splitlines()
    assert lines[-1].startswith("error: ") and "missing does not exist" in lines[-1]
    assert lines[:-1] == (['warning: perceptual_pairing "paired" compares each fake with an unrelated real'
                           " image of its batch: it pulls noise-driven fakes toward the mean image"
                           " (docs/training.md)"] if warned else [])  # fmt: skip
    assert TrainConfig(perceptual_pairing=pairing, lam=0.0).warnings == []  # no perceptual loss, no warning


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--out", "/dev/null/t", "--data", "phantom:8", "--resolution", "32", "--batch-size", "4",
          "--lambda", "0"],
         "/dev/null/t: Not a directory"),
        (["study", "--preset", "tiny", "--root", "/dev/null/root"], "/dev/null/root"),
        (["study", "--config", "{tmp}/latin1.toml"], "latin1.toml is not UTF-8 text"),
    ],
)  # fmt: skip
def test_paths_that_cannot_be_used_are_one_line_exit_2(args, message, tmp_path, capsys):
    """Issue #26: every OSError and decoding error reaching the top of a command is one line."""
    (tmp_path / "latin1.toml").write_bytes('name = "caf\xe9"\n'.encode("latin-1"))
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert_one_line_error(err, message)
