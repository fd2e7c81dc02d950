"""Interrupted + resumed training == uninterrupted training, bit for bit (CPU)."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import jax

from train.loop import make_checkpoint_manager, read_metrics, train
from train.testing import synthetic_sources, tiny_train_config

ROOT = Path(__file__).resolve().parents[1]

# 20 train records / batch 4 = 5 steps per epoch; mid-epoch checkpoints every 2 steps.
CFG = tiny_train_config(epochs=2, checkpoint_every_steps=2)


def _assert_same_state(a, b):
    for name in ("params", "batch_stats", "buffers", "opt_state"):
        la, lb = jax.tree.leaves(getattr(a, name)), jax.tree.leaves(getattr(b, name))
        assert len(la) == len(lb)
        for x, y in zip(la, lb):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=name)
    assert int(a.step) == int(b.step) and int(a.epoch) == int(b.epoch)


def _assert_same_run(a, b):
    """Results of two runs: final states and the host decisions (selection, stopping)."""
    _assert_same_state(a.final_state, b.final_state)
    assert (a.best_step, a.best_epoch, a.best_dev_eer, a.stopped_reason) == (
        b.best_step, b.best_epoch, b.best_dev_eer, b.stopped_reason)


def _epoch_metrics(workdir):
    recs = [r for r in read_metrics(Path(workdir) / "metrics.jsonl") if r["type"] == "epoch"]
    return {r["epoch"]: (r["dev_loss"], r["dev_eer"], r["lr"], r["next_lr"]) for r in recs}


@pytest.fixture(scope="module")
def sources():
    return synthetic_sources()


@pytest.fixture(scope="module")
def reference(tmp_path_factory, sources):
    wd = tmp_path_factory.mktemp("uninterrupted")
    res = train(CFG, wd, sources=sources, final_eval=False, quiet=True)
    assert res.steps_done == 10 and res.epochs_done == 2
    return wd, res


@pytest.mark.slow
@pytest.mark.parametrize("stop_after", [3, 7])  # mid-epoch 1 / mid-epoch 2
def test_interrupt_and_resume_is_bit_identical(tmp_path, sources, reference, stop_after):
    ref_wd, ref = reference
    wd = tmp_path / "run"
    part = train(CFG, wd, sources=sources, stop_after_steps=stop_after, final_eval=False, quiet=True)
    assert part.interrupted
    mngr = make_checkpoint_manager(wd / "checkpoints")
    latest = mngr.latest_step()
    mngr.close()
    assert latest is not None and latest < part.steps_done  # the steps after it are lost, as in a kill
    resumed = train(CFG, wd, sources=sources, final_eval=False, quiet=True)
    assert not resumed.interrupted
    _assert_same_run(resumed, ref)
    assert _epoch_metrics(wd) == _epoch_metrics(ref_wd)


@pytest.mark.slow
def test_checkpoints_keep_latest_and_best(reference):
    wd, res = reference
    steps = sorted(int(p.name) for p in (wd / "checkpoints").iterdir() if p.name.isdigit())
    assert steps[-1] == res.steps_done
    assert set(steps) == {res.steps_done, res.best_step}


_KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    import train.loop as loop
    from train.testing import synthetic_sources, tiny_train_config
    import train.step as step_mod
    orig = loop.make_train_step
    def make(*a, **k):
        fn = orig(*a, **k)
        def wrapped(state, batch, rng=None):
            out = fn(state, batch, rng)
            if int(out[0].step) == int(sys.argv[2]):
                os.kill(os.getpid(), signal.SIGKILL)
            return out
        return wrapped
    loop.make_train_step = make
    cfg = tiny_train_config(epochs=2, checkpoint_every_steps=2)
    loop.train(cfg, sys.argv[1], sources=synthetic_sources(), final_eval=False, quiet=True)
    """
)


@pytest.mark.slow
def test_sigkill_then_resume(tmp_path, sources, reference):
    """SIGKILL right after step 6 (before its checkpoint): resumes from the epoch-1 end (step 5)."""
    _, ref = reference
    wd = tmp_path / "killed"
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    p = subprocess.run(
        [sys.executable, "-c", _KILL_SCRIPT, str(wd), "6"], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=300,
    )
    assert p.returncode == -9, p.stderr[-2000:]
    mngr = make_checkpoint_manager(wd / "checkpoints")
    assert mngr.latest_step() == 5
    mngr.close()
    resumed = train(CFG, wd, sources=sources, final_eval=False, quiet=True)
    _assert_same_run(resumed, ref)
