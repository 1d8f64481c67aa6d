"""tools/code_shape.py: the import loops, longest functions and alike blocks it lists, on planted code,
and lossbench's own import graph (one deliberate loop)."""

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parent.parent / "tools" / "code_shape.py"
spec = importlib.util.spec_from_file_location("code_shape", TOOL)
code_shape = sys.modules["code_shape"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(code_shape)

COPIED = """
def {name}(values):
    total = 0
    for value in values:
        if value > 0:
            total += value * value
        else:
            total -= abs(value) / 2
    return total
"""


def plant(root: Path, files: dict[str, str]) -> Path:
    package = root / "pkg"
    for name, text in {"__init__.py": "", **files}.items():
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(textwrap.dedent(text))
    return package


def test_lossbench_has_one_import_loop_the_deliberate_one():
    names = code_shape.module_names(TOOL.parent.parent / "lossbench")
    running = [e for e in code_shape.import_edges(names) if e.when != "typing"]
    # A worker's entry point imports the worker loop only when called, after its watchdog is up.
    assert code_shape.import_loops(running) == [["lossbench.study.worker_entry", "lossbench.study.workers"]]


def test_loops_are_found_through_relative_and_deferred_imports_not_type_checking(tmp_path):
    package = plant(
        tmp_path,
        {
            "a.py": "from pkg import b\n",
            "b.py": "def f():\n    from .sub import c\n",
            "sub/__init__.py": "",
            "sub/c.py": "from ..a import x\n",
            "d.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\n",
            "e.py": "import pkg.d\n",
        },
    )
    (package / "a.py").write_text("from pkg import b\nfrom pkg import e\n")
    edges = code_shape.import_edges(code_shape.module_names(package))
    assert code_shape.Edge("pkg.b", "pkg.sub.c", "call") in edges
    assert code_shape.Edge("pkg.sub.c", "pkg.a", "load") in edges
    assert code_shape.Edge("pkg.d", "pkg.a", "typing") in edges
    running = [e for e in edges if e.when != "typing"]
    assert code_shape.import_loops(running) == [["pkg.a", "pkg.b", "pkg.sub.c"]]
    assert code_shape.import_loops(edges) == [["pkg.a", "pkg.b", "pkg.d", "pkg.e", "pkg.sub.c"]]


def test_a_copied_function_is_one_block_with_its_lines_and_imports_are_not_copies(tmp_path):
    imports = "import os\nimport sys\nfrom math import pi\nfrom math import tau\nimport re\nimport json\n"
    package = plant(
        tmp_path,
        {
            "one.py": imports + COPIED.format(name="first"),
            "two.py": imports + "\n\nX = 1\n" + COPIED.format(name="second"),
        },
    )
    blocks = code_shape.alike_blocks(code_shape.module_names(package))
    # the def lines differ; the 7 lines of the body agree (one.py lines 9-15, two.py lines 12-18)
    assert blocks == [(7, "pkg/one.py:9-15", "pkg/two.py:12-18")]


def test_longest_functions_count_body_lines_methods_by_qualified_name(tmp_path):
    package = plant(
        tmp_path,
        {
            "m.py": 'class K:\n    def method(\n        self,\n    ):\n        """Doc."""\n'
            "        a = 1\n        return a\ndef short(): pass\n"
        },
    )
    assert code_shape.longest_functions(code_shape.module_names(package)) == [
        (2, "pkg.m:K.method"),  # the signature's three lines and the docstring left out
        (1, "pkg.m:short"),
    ]


@pytest.mark.parametrize("argument", ["no-such-folder", "tests", "broken"])
def test_a_folder_that_is_no_package_or_does_not_parse_is_one_line(argument, tmp_path):
    folder = TOOL.parent.parent / argument
    if argument == "broken":
        folder = plant(tmp_path, {"bad.py": "def f(:\n"})
    run = subprocess.run([sys.executable, str(TOOL), str(folder)], capture_output=True, text=True)
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and run.stderr.startswith("error: "), run.stderr
    assert ("bad.py" if argument == "broken" else "not a Python package folder") in run.stderr
