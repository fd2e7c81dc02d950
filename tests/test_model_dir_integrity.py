"""Faults injected into model directories: damaged files, training workdirs, stale temporary
directories, failing writes (full disk, read-only), symlink loops, wrongly typed configs."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import time
import warnings

import pytest

from rawnet2_jax import checkpoint as ck
from rawnet2_jax import fsutil
from rawnet2_jax.errors import CheckpointError
from tests.conftest import refuse_as_read_only
from tests.test_checkpoint import TINY, _audio


@pytest.fixture(scope="module")
def tiny_vars():
    """Random variables of TINY's shapes (abstract init only: nothing to compile)."""
    import numpy as np

    rng = np.random.default_rng(0)
    flat = {}
    for path, (shape, dtype) in ck.expected_shapes(TINY).items():
        a = rng.uniform(0.5, 1.5, shape) if path.endswith("/var") else rng.normal(0, 0.1, shape)
        flat[path] = a.astype(dtype)
    tree: dict = {}
    for path, a in flat.items():
        *parents, leaf = path.split("/")
        node = tree
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = a
    return tree


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tiny_vars):
    d = tmp_path_factory.mktemp("integrity") / "model"
    ck.save_model(d, tiny_vars, TINY, {"source": "unit test"})
    return d


@pytest.fixture()
def copy(saved, tmp_path):
    d = tmp_path / "copy"
    shutil.copytree(saved, d)
    return d


def _one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg, msg
    return msg


def _largest_array_file(d):
    files = [p for p in (d / ck.VARIABLES_DIR).rglob("*") if p.is_file()]
    return max(files, key=lambda p: p.stat().st_size)


def test_manifest_lists_every_file_with_its_hash(saved):
    files = json.loads((saved / ck.MANIFEST_FILE).read_text())["files"]
    on_disk = sorted(p.relative_to(saved).as_posix() for p in saved.rglob("*") if p.is_file())
    assert sorted(files) == [f for f in on_disk if f != ck.MANIFEST_FILE]
    for rel, entry in files.items():
        assert entry["sha256"] == fsutil.sha256_file(saved / rel), rel
        assert entry["bytes"] == (saved / rel).stat().st_size, rel
    assert ck.verify_manifest(saved) is True


def test_64_bytes_overwritten_in_array_data_are_named(copy):
    victim = _largest_array_file(copy)
    size = victim.stat().st_size
    assert size > 256, f"{victim} is too small to hold array data ({size} bytes)"
    with open(victim, "r+b") as f:  # same size, different bytes: only the hash can tell
        f.seek(size // 2)
        f.write(os.urandom(64))
    assert victim.stat().st_size == size
    with pytest.raises(CheckpointError) as e:
        ck.load_pretrained(copy)
    msg = _one_line(e)
    assert str(victim) in msg and "SHA-256" in msg and "re-create" in msg


def test_truncated_and_missing_files_are_named(copy):
    victim = _largest_array_file(copy)
    with open(victim, "r+b") as f:
        f.truncate(victim.stat().st_size // 3)
    with pytest.raises(CheckpointError) as e:
        ck.load_pretrained(copy)
    assert str(victim) in _one_line(e) and "bytes instead of" in str(e.value)
    victim.unlink()
    with pytest.raises(CheckpointError) as e:
        ck.load_pretrained(copy)
    assert str(victim) in _one_line(e) and "missing" in str(e.value)


def test_edited_metadata_and_damaged_manifest(copy):
    (copy / ck.METADATA_FILE).write_text('{"source": "edited"}\n')
    with pytest.raises(CheckpointError) as e:
        ck.load_pretrained(copy)
    assert "metadata.json" in _one_line(e)
    (copy / ck.MANIFEST_FILE).write_text("{trunc")
    with pytest.raises(CheckpointError) as e:
        ck.load_pretrained(copy)
    assert "manifest.json is damaged" in _one_line(e)


def test_model_without_manifest_loads_silently(copy, capsys):
    (copy / ck.MANIFEST_FILE).unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = ck.load_pretrained(copy)
    assert m.config == TINY
    cap = capsys.readouterr()
    assert cap.out == "" and cap.err == ""


def _workdir(tmp_path, saved, with_best=True):
    from train.configs import get_train_config

    run = tmp_path / "run"
    (run / "checkpoints" / "50").mkdir(parents=True)
    (run / "config.json").write_text(get_train_config("demo").to_json() + "\n")
    if with_best:
        shutil.copytree(saved, run / ck.BEST_MODEL_DIRNAME)
    return run


def test_training_workdir_resolves_to_best_model(tmp_path, saved):
    run = _workdir(tmp_path, saved)
    assert ck.find_model_dir(run) == run / ck.BEST_MODEL_DIRNAME
    assert ck.load_pretrained(run).directory == run / ck.BEST_MODEL_DIRNAME
    assert ck.load_pretrained(str(run) + "/").config == TINY


def test_training_workdir_before_first_epoch(tmp_path, saved):
    run = _workdir(tmp_path, saved, with_best=False)
    with pytest.raises(CheckpointError) as e:
        ck.load_pretrained(run)
    assert "training workdir without a finished best_model/" in _one_line(e)
    with pytest.raises(CheckpointError) as e:  # its config.json is not mistaken for a model's
        ck.load_config(run)
    assert "training config, not a model config" in _one_line(e)


@pytest.mark.slow  # compiles the model: ~15 s on a busy 2-core machine
def test_score_cli_accepts_a_training_workdir(tmp_path, saved, capsys):
    import numpy as np
    import soundfile as sf

    from rawnet2_jax import cli

    run = _workdir(tmp_path, saved)
    wav = tmp_path / "a.wav"
    sf.write(wav, _audio(1, TINY.num_samples)[0] * 3, 16000, subtype="FLOAT")
    assert cli.main(["score", "--checkpoint", str(run), str(wav), "--json", "--no-progress"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["num_scored"] == 1 and np.isfinite(out["files"][0]["log_odds"])


@pytest.mark.parametrize(
    "field,value,needle",
    [("num_samples", "2200", "num_samples: expected int, got '2200' (str)"),
     ("sinc_abs", 1, "sinc_abs: expected bool"),
     ("sinc_scale", "bark", "sinc_scale: expected one of 'mel'"),
     ("gru_hidden", 16.5, "gru_hidden: expected int")],
)
def test_wrongly_typed_config_field_is_one_line(copy, field, value, needle):
    cfg = json.loads((copy / ck.CONFIG_FILE).read_text())
    cfg[field] = value
    (copy / ck.CONFIG_FILE).write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError) as e:
        ck.load_pretrained(copy)
    assert needle in _one_line(e)


def test_symlink_loop_is_not_reported_as_missing(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.symlink_to(b)
    b.symlink_to(a)
    with pytest.raises(CheckpointError) as e:
        ck.load_pretrained(a)
    assert "symbolic link loop" in _one_line(e) and "does not exist" not in str(e.value)


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_temp_dirs_are_removed_at_the_next_write(tmp_path, tiny_vars):
    host = fsutil._host()
    dead = tmp_path / f".model.tmp-{host}-{_dead_pid()}-abc"
    old_style = tmp_path / ".model.tmp-k2j3h4"  # a PID-less name, from before this process
    aside = tmp_path / f".model.old-{host}-{_dead_pid()}-xyz"
    live = tmp_path / f".model.tmp-{host}-{os.getppid()}-live"  # a running writer
    foreign = tmp_path / ".model.tmp-otherhost-12345-abc"  # another host, recent
    other = tmp_path / ".other.tmp-k2j3h4"  # not ours to judge
    for d in (dead, old_style, aside, live, foreign, other):
        (d / "variables").mkdir(parents=True)
    past = time.time() - 3600
    os.utime(old_style, (past, past))
    os.utime(other, (past, past))
    ck.save_model(tmp_path / "model", tiny_vars, TINY)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(["model", live.name, foreign.name, other.name])


def test_model_moved_aside_by_a_killed_writer_is_put_back(tmp_path, saved):
    run = _workdir(tmp_path, saved, with_best=False)
    # Killed between "rename best_model -> .best_model.old-..." and "rename tmp -> best_model".
    aside = run / f".{ck.BEST_MODEL_DIRNAME}.old-{fsutil._host()}-{_dead_pid()}-q1w2"
    shutil.copytree(saved, aside)
    (run / f".{ck.BEST_MODEL_DIRNAME}.tmp-{fsutil._host()}-{_dead_pid()}-e3r4").mkdir()
    m = ck.load_pretrained(run)
    assert m.directory == run / ck.BEST_MODEL_DIRNAME and not aside.exists()
    assert ck.verify_manifest(run / ck.BEST_MODEL_DIRNAME)


def test_disk_full_during_save_is_one_line_and_keeps_the_old_model(tmp_path, tiny_vars, monkeypatch):
    import orbax.checkpoint as ocp

    d = ck.save_model(tmp_path / "model", tiny_vars, TINY, {"epoch": 1})

    def full(self, path, *a, **k):
        (path).mkdir(parents=True, exist_ok=True)
        (path / "partial").write_bytes(b"x" * 100)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path / "partial"))

    monkeypatch.setattr(ocp.StandardCheckpointer, "save", full)
    with pytest.raises(CheckpointError) as e:
        ck.save_model(d, tiny_vars, TINY, {"epoch": 2})
    msg = _one_line(e)
    assert "no space left on the device" in msg and "nothing was replaced" in msg
    assert ck.load_metadata(d)["epoch"] == 1 and ck.verify_manifest(d)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temporary left


def test_tensorstore_style_disk_full_message(tmp_path, tiny_vars, monkeypatch):
    import orbax.checkpoint as ocp

    def full(self, path, *a, **k):
        raise ValueError("Error writing local file \"/x/d/abc\": [OS error 28: No space left on device]")

    monkeypatch.setattr(ocp.StandardCheckpointer, "save", full)
    with pytest.raises(CheckpointError) as e:
        ck.save_model(tmp_path / "model", tiny_vars, TINY)
    assert "no space left on the device" in _one_line(e)
    assert list(tmp_path.iterdir()) == []


def test_read_only_directory_is_one_line(tmp_path, tiny_vars, monkeypatch):
    monkeypatch.setattr(fsutil.tempfile, "mkdtemp", refuse_as_read_only(tmp_path))
    with pytest.raises(CheckpointError) as e:
        ck.save_model(tmp_path / "model", tiny_vars, TINY)
    assert "read-only file system" in _one_line(e)


def test_read_only_directory_for_real(unwritable_dir, tiny_vars):
    with pytest.raises(CheckpointError) as e:
        ck.save_model(unwritable_dir.path / "model", tiny_vars, TINY)
    assert unwritable_dir.reason in _one_line(e)
