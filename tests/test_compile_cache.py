"""The run's persistent compilation cache (train/compile_cache.py): which cache a run uses,
damaged entries deleted, and a restart of ``python -m train``'s code path, in a copy of the
workdir, that loads its programs from ``WORKDIR/compile_cache``."""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from train.compile_cache import CACHE_DIR, drop_damaged_entries, run_cache_dir

ROOT = Path(__file__).resolve().parents[1]


def test_the_users_choice_wins(tmp_path):
    assert run_cache_dir(tmp_path / "wd", {}) == (tmp_path / "wd" / CACHE_DIR).absolute()
    assert run_cache_dir("runs/x", {}) == Path("runs/x").absolute() / CACHE_DIR
    assert run_cache_dir(tmp_path, {"JAX_COMPILATION_CACHE_DIR": "/elsewhere"}) is None
    for off in ("false", "0", "False", "off", "f", "N", "no"):
        assert run_cache_dir(tmp_path, {"JAX_ENABLE_COMPILATION_CACHE": off}) is None
    assert run_cache_dir(tmp_path, {"JAX_ENABLE_COMPILATION_CACHE": "true"}) == tmp_path / CACHE_DIR
    assert run_cache_dir(tmp_path, {"JAX_COMPILATION_CACHE_DIR": ""}) == tmp_path / CACHE_DIR


def test_the_run_cache_keeps_programs_of_a_tenth_of_a_second_unless_the_user_says_otherwise(tmp_path):
    script = ("import sys, jax; from train.compile_cache import use_run_cache; use_run_cache(sys.argv[1], print); "
              "print(jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_COMPILATION_CACHE", "JAX_PERSISTENT"))}
    for extra, seconds in (({}, "0.1"), ({"JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "2"}, "2.0")):
        out = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=ROOT, env={**env, **extra},
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        assert out.stdout.split() == [str(tmp_path / CACHE_DIR), seconds], out.stdout


def test_damaged_entries_are_deleted_and_good_ones_kept(tmp_path):
    from jax._src.compilation_cache import compress_executable

    good = compress_executable(os.urandom(50_000))
    (tmp_path / "jit_core-aa-cache").write_bytes(good)
    (tmp_path / "jit_core-bb-cache").write_bytes(good[: len(good) // 2])  # killed mid-write
    (tmp_path / "jit_core-cc-cache").write_bytes(good[:-1])
    (tmp_path / "jit_init-dd-cache").write_bytes(b"")  # a full disk
    (tmp_path / "jit_core-aa-atime").write_bytes(b"12345678")  # not an entry: left alone
    dropped = drop_damaged_entries(tmp_path)
    assert dropped == ["jit_core-bb-cache", "jit_core-cc-cache", "jit_init-dd-cache"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jit_core-aa-atime", "jit_core-aa-cache"]
    assert drop_damaged_entries(tmp_path) == []


_RUN_SCRIPT = textwrap.dedent(
    """
    import sys
    from train.__main__ import _use_run_cache, run
    from train.testing import synthetic_sources, tiny_train_config
    workdir, epochs = sys.argv[1], int(sys.argv[2])
    _use_run_cache(workdir, quiet=False)  # what main() does before anything compiles
    cfg = tiny_train_config(epochs=epochs, checkpoint_every_steps=0)
    sys.exit(run(cfg, workdir, sources=synthetic_sources(), final_eval=False, quiet=True))
    """
)


def _run(workdir: Path, epochs: int) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}  # the default
    # Every program cached, however fast this machine compiles it: the eval step (0.2-0.5 s
    # here) must be there to be hit after the train step's entry is damaged.
    env.update(PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu", JAX_LOG_COMPILES="1",
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    return subprocess.run([sys.executable, "-c", _RUN_SCRIPT, str(workdir), str(epochs)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_a_restart_loads_its_programs_and_heals_a_damaged_entry(tmp_path):
    from jax._src.compilation_cache import decompress_executable

    first = _run(tmp_path, 1)
    assert first.returncode == 0, first.stderr[-3000:]
    cache = tmp_path / CACHE_DIR
    steps = sorted(cache.glob("jit_core-*-cache"), key=lambda p: p.stat().st_size)
    assert len(steps) == 2, sorted(cache.iterdir())  # the train step (the largest) and the eval step
    assert "Persistent compilation cache hit" not in first.stderr
    moved = tmp_path.parent / f"{tmp_path.name}_moved"  # keys do not depend on the workdir's path
    shutil.copytree(tmp_path, moved)
    cache = moved / CACHE_DIR
    largest = cache / steps[-1].name  # the train step: a restart compiles no init
    largest.write_bytes(largest.read_bytes()[:1000])  # as a kill -9 during the write leaves it

    second = _run(moved, 2)  # resumes after epoch 1
    assert second.returncode == 0, second.stderr[-3000:]
    err = second.stderr
    assert f"compile cache: deleted 1 damaged entry in {cache}" in err, err[-3000:]
    assert "Persistent compilation cache hit for 'jit_core'" in err, err[-3000:]
    assert "Error reading persistent compilation cache" not in err and "Traceback" not in err
    assert largest.exists(), "the deleted entry was not compiled and written again"
    for p in cache.glob("*-cache"):
        decompress_executable(p.read_bytes())
