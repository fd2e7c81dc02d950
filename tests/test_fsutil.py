"""Output folders (rawnet2_jax.fsutil.make_out_dir): created with their parents; a file in the
way, a file as a parent or a full disk is one line that says what to do."""

import errno
import os
from pathlib import Path

import pytest

from rawnet2_jax.errors import UserError
from rawnet2_jax.fsutil import make_out_dir


def test_creates_the_folder_and_its_parents_and_accepts_an_existing_one(tmp_path):
    out = make_out_dir(tmp_path / "a" / "b")
    assert out == tmp_path / "a" / "b" and out.is_dir()
    assert make_out_dir(str(out)) == out


def test_a_file_in_the_way_is_one_line(tmp_path):
    (tmp_path / "scores.txt").write_text("x")
    with pytest.raises(UserError) as e:
        make_out_dir(tmp_path / "scores.txt")
    assert str(e.value) == f"{tmp_path / 'scores.txt'} is a file, not a folder; give an output folder (it is created if missing)"
    with pytest.raises(UserError, match=r"a part of the path is a file, not a folder") as e:
        make_out_dir(tmp_path / "scores.txt" / "out")
    assert "\n" not in str(e.value) and (tmp_path / "scores.txt").read_text() == "x"


def test_a_full_disk_is_one_line(tmp_path, monkeypatch):
    def full(self, *a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))

    monkeypatch.setattr(Path, "mkdir", full)
    with pytest.raises(UserError, match=r"^creating the output folder .* failed: no space left on the device"):
        make_out_dir(tmp_path / "new")
