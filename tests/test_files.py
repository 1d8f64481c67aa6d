"""atomic_write: all or nothing."""

from __future__ import annotations

import pytest

from lossbench.files import atomic_write


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "state.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_write(path) as f:
        f.write(b"half")
        raise RuntimeError("interrupted")
    assert path.read_bytes() == b"old" and list(tmp_path.iterdir()) == [path]
    with atomic_write(path) as f:
        f.write(b"new")
    assert path.read_bytes() == b"new" and list(tmp_path.iterdir()) == [path]
