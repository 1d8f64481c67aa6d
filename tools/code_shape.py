"""The shape of lossbench's code: import loops, the longest functions, blocks that repeat.

    python tools/code_shape.py [SOURCE_DIR]      # default: the lossbench package beside this folder

Three lists, each rerunnable on any commit (check the commit out, point this at its package):

- import loops: groups of modules that import each other, directly or through others (strongly
  connected components of the import graph; imports inside functions count, marked "deferred");
- the longest functions, in lines of their body (signature and docstring left out);
- alike blocks: runs of MIN_BLOCK or more consecutive code lines that occur in two places, compared
  after stripping indentation and trailing comments (blank, comment-only and import lines skipped).
  Runs made mostly of punctuation (closing brackets) are not counted.

The standard library only, so it runs before lossbench is installed.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

MIN_BLOCK = 6  # lines: shorter repeats are idiom, not copies
LONGEST = 12  # functions listed
SUBSTANTIAL = 10  # characters: a line shorter than this (")", "return x") barely identifies a block


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    when: str  # "load" (module level), "call" (inside a function) or "typing" (under TYPE_CHECKING)


def module_names(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under root (a package folder)."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def import_edges(names: dict[str, Path]) -> list[Edge]:
    """The imports from one module of `names` to another ("from a import b" names a.b if it is one)."""
    edges = set()
    for source, path in names.items():
        tree = ast.parse(path.read_text(), str(path))
        package = source if path.name == "__init__.py" else source.rpartition(".")[0]
        for node, when in _imports(tree):
            for target in _targets(node, package, names):
                if target != source:
                    edges.add(Edge(source, target, when))
    return sorted(edges, key=lambda e: (e.source, e.target, e.when))


def _imports(tree: ast.Module):
    """(import node, Edge.when) for every import statement of a module."""
    stack = [(child, "load") for child in ast.iter_child_nodes(tree)]
    while stack:
        node, when = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, when
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            when = "typing"
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and when == "load":
            when = "call"
        stack.extend((child, when) for child in ast.iter_child_nodes(node))


def _targets(node: ast.Import | ast.ImportFrom, package: str, names: dict[str, Path]) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name in names]
    base = node.module or ""
    if node.level:  # relative: one level is the module's own package
        anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join([*anchor, base] if base else anchor)
    found = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in names]
    if base in names and len(found) < len(node.names):
        found.append(base)
    return found


def import_loops(edges: list[Edge]) -> list[list[str]]:
    """Groups of two or more modules that reach each other (Tarjan's strongly connected components)
    through the given edges."""
    graph = defaultdict(set)
    for edge in edges:
        graph[edge.source].add(edge.target)
    index, low, on_stack, stack, loops = {}, {}, set(), [], []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                loops.append(sorted(group))

    for node in sorted(set(graph) | {e.target for e in edges}):
        if node not in index:
            visit(node)
    return sorted(loops)


def longest_functions(names: dict[str, Path], count: int = LONGEST) -> list[tuple[int, str]]:
    """(body lines, "module:qualified name") of the `count` longest functions, longest first."""
    found = []
    for module, path in names.items():
        tree = ast.parse(path.read_text(), str(path))
        for qualname, node in _functions(tree, ""):
            found.append((_body_lines(node), f"{module}:{qualname}"))
    return sorted(found, key=lambda f: (-f[0], f[1]))[:count]


def _body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines from the first statement after the docstring to the function's last line (a command's
    options, declared as parameters, are not its body)."""
    body = node.body[1:] if ast.get_docstring(node, clean=False) is not None else node.body
    return node.end_lineno - body[0].lineno + 1 if body else 0


def _functions(tree: ast.AST, prefix: str):
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            qualname = f"{prefix}{node.name}"
            if not isinstance(node, ast.ClassDef):
                yield qualname, node
            yield from _functions(node, f"{qualname}.")


def _code_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text without indentation or trailing comment) of the lines that hold code other
    than imports (a shared list of imports is not a copy)."""
    lines = []
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        text = raw.split("  #")[0].strip()
        if text and not text.startswith(("#", "import ", "from ", "if TYPE_CHECKING")):
            lines.append((number, text))
    return lines


def alike_blocks(names: dict[str, Path], size: int = MIN_BLOCK) -> list[tuple[int, str, str]]:
    """(lines, "file:first-last", "file:first-last") for every pair of places that share a run of
    `size` or more code lines, each run as long as both places agree."""
    files = {module: _code_lines(path) for module, path in names.items()}
    top = Path(*min(names.values(), key=lambda p: len(p.parts)).parts[:-2])  # the package's parent
    windows = defaultdict(list)
    for module, lines in files.items():
        for start in range(len(lines) - size + 1):
            windows[tuple(text for _, text in lines[start : start + size])].append((module, start))
    pairs = {
        (a, sa, b, sb)
        for places in windows.values()
        for i, (a, sa) in enumerate(places)
        for b, sb in places[i + 1 :]
        if not (a == b and abs(sa - sb) < size)  # a run overlapping itself
    }
    blocks = []
    for a, sa, b, sb in pairs:
        if (a, sa - 1, b, sb - 1) in pairs:
            continue  # inside a run that starts earlier
        length = size
        while (a, sa + length - size + 1, b, sb + length - size + 1) in pairs:
            length += 1
        run = [text for _, text in files[a][sa : sa + length]]
        if 2 * sum(len(text) >= SUBSTANTIAL for text in run) <= length:
            continue  # mostly closing brackets and one-word lines
        where = [
            f"{names[m].relative_to(top).as_posix()}:{files[m][s][0]}-{files[m][s + length - 1][0]}"
            for m, s in [(a, sa), (b, sb)]
        ]
        blocks.append((length, *where))
    return sorted(blocks, key=lambda b: (-b[0], b[1], b[2]))


def _typing_only(loops: list[list[str]], running_loops: list[list[str]]) -> list[list[str]]:
    """Those of `loops` that close only through a TYPE_CHECKING import: inside no running loop."""
    known = [set(group) for group in running_loops]
    return [group for group in loops if not any(set(group) <= k for k in known)]


def main(argv: list[str]) -> int:
    root = Path(argv[0]) if argv else Path(__file__).resolve().parent.parent / "lossbench"
    if not (root / "__init__.py").is_file():
        print(f"error: {root} is not a Python package folder", file=sys.stderr)
        return 2
    names = module_names(root)
    try:
        edges = import_edges(names)
    except (SyntaxError, UnicodeDecodeError) as e:
        print(f"error: cannot parse {getattr(e, 'filename', None) or root}: {e}", file=sys.stderr)
        return 2
    print(f"{len(names)} modules, {len(edges)} imports between them")
    running = import_loops([e for e in edges if e.when != "typing"])
    for title, loops in [
        ("import loops (imports that run)", running),
        ("loops through type annotations only (TYPE_CHECKING)", _typing_only(import_loops(edges), running)),
    ]:
        print(f"\n{title}: {len(loops)}")
        for group in loops:
            inside = [e for e in edges if e.source in group and e.target in group]
            print(
                f"  {' <-> '.join(group)}: "
                + ", ".join(f"{e.source} -> {e.target} ({e.when})" for e in inside)
            )
    print(f"\nlongest function bodies (lines after the signature and docstring): top {LONGEST}")
    for lines, name in longest_functions(names):
        print(f"  {lines:4d}  {name}")
    blocks = alike_blocks(names)
    print(f"\nalike blocks ({MIN_BLOCK}+ code lines in two places): {len(blocks)}")
    for length, where_a, where_b in blocks:
        print(f"  {length:3d} lines  {where_a}  ~  {where_b}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
