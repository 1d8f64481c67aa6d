"""The finished rows of a resumable benchmark, one JSON object per line of OUT/rows.jsonl.

`load` reads them; a line that does not parse (a write cut off by a kill, a damaged file) is dropped
with a note and the file is rewritten without it, so that row is measured again. `append` adds one
finished row as one line.
"""

from __future__ import annotations

import json
from pathlib import Path

from lossbench.files import atomic_write

FILE = "rows.jsonl"


def load(out: Path) -> list[dict]:
    path = out / FILE
    if not path.exists():
        return []
    rows, bad = [], 0
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if isinstance(row, dict):
            rows.append(row)
        else:
            bad += 1
    if bad:
        print(f"note: dropped {bad} unreadable line(s) of {path}; those rows are measured again", flush=True)
        with atomic_write(path) as f:
            f.write("".join(json.dumps(r) + "\n" for r in rows).encode())
    return rows


def append(out: Path, row: dict) -> None:
    with (out / FILE).open("a") as f:
        f.write(json.dumps(row) + "\n")
