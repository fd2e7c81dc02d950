"""The training loop under faults and at accelerator habits: no host sync between log
points, workdir lock, SIGTERM, kill -9 at each point of the save sequence, disk full,
damaged checkpoints, exact metrics after resume, progress lines in batch jobs."""

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import jax

import train.loop as loop
from rawnet2_jax.errors import UserError
from train.checkpointing import BROKEN_DIR, CheckpointError
from train.guards import WorkdirLock
from train.loop import make_checkpoint_manager, read_metrics, train
from train.testing import HostSyncError, strict_no_host_sync, synthetic_sources, tiny_train_config

pytestmark = pytest.mark.long_file  # scheduled first in a parallel run (conftest)

ROOT = Path(__file__).resolve().parents[1]
# 20 train records / batch 4 = 5 steps per epoch.
CFG = tiny_train_config(epochs=2, checkpoint_every_steps=2)


@pytest.fixture(scope="module")
def sources():
    return synthetic_sources()


@pytest.fixture(scope="module")
def reference(tmp_path_factory, sources):
    wd = tmp_path_factory.mktemp("reference")
    return wd, train(CFG, wd, sources=sources, final_eval=False, quiet=True)


def _records(wd):
    return [(r["type"], r.get("epoch"), r["step"]) for r in read_metrics(Path(wd) / "metrics.jsonl")]


def _same_params(a, b):
    for x, y in zip(jax.tree.leaves(a.final_state.params), jax.tree.leaves(b.final_state.params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.slow
def test_no_host_sync_between_log_points(tmp_path, sources, monkeypatch, reference):
    entered = []

    def guard():
        entered.append(1)
        return strict_no_host_sync()

    monkeypatch.setattr(loop, "no_host_sync", guard)
    res = train(CFG.replace(log_every_steps=5, checkpoint_every_steps=0), tmp_path, sources=sources,
                final_eval=False, quiet=True)
    assert len(entered) == res.steps_done == 10
    _same_params(res, reference[1])  # logging/checkpoint cadence does not change the numbers


@pytest.mark.slow
def test_the_sync_guard_catches_a_sync(tmp_path, sources, monkeypatch):
    """The guard of the test above is not blind: a step that reads a metric is refused."""
    monkeypatch.setattr(loop, "no_host_sync", strict_no_host_sync)
    original = loop.make_train_step

    def syncing(*a, **k):
        step = original(*a, **k)
        return lambda state, batch, rng=None: (lambda out: (float(out[1]["loss"]), out)[1])(step(state, batch, rng))

    monkeypatch.setattr(loop, "make_train_step", syncing)
    monkeypatch.setattr(loop, "_COMPILED", {})
    with pytest.raises(HostSyncError):
        train(CFG, tmp_path, sources=sources, final_eval=False, quiet=True)


@pytest.mark.slow
def test_resume_keeps_metrics_exact(tmp_path, sources, reference):
    ref_wd, ref = reference
    train(CFG, tmp_path, sources=sources, stop_after_steps=3, final_eval=False, quiet=True)  # dies at step 3
    resumed = train(CFG, tmp_path, sources=sources, final_eval=False, quiet=True)
    _same_params(resumed, ref)
    assert _records(tmp_path) == _records(ref_wd)  # no duplicates, nothing missing
    want = {r["epoch"]: r["train_loss"] for r in read_metrics(ref_wd / "metrics.jsonl") if r["type"] == "epoch"}
    got = {r["epoch"]: r["train_loss"] for r in read_metrics(tmp_path / "metrics.jsonl") if r["type"] == "epoch"}
    assert got == want  # the epoch mean covers the batches before the resume too


def test_second_run_on_a_workdir_is_refused(tmp_path, capsys):
    from train.__main__ import main

    with WorkdirLock(tmp_path):
        with pytest.raises(UserError) as e:
            train(CFG, tmp_path, sources=synthetic_sources(), final_eval=False, quiet=True)
    msg = str(e.value)
    assert "\n" not in msg and f"PID {os.getpid()}" in msg and "in use" in msg
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "metrics.jsonl").exists()
    # A wrong --data-dir creates nothing (checked before the workdir is touched).
    rc = main(["--config", "demo", "--workdir", str(tmp_path / "new"), "--data-dir", str(tmp_path / "nowhere")])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and err.startswith("error: ") and "\n" not in err
    assert not (tmp_path / "new").exists() and not (tmp_path / "nowhere").exists()


@pytest.mark.slow
def test_disk_full_during_save_is_one_line_and_resumable(tmp_path, sources, monkeypatch, reference):
    import orbax.checkpoint as ocp

    real_save = ocp.CheckpointManager.save

    def full_disk(self, step, *a, **k):
        if step == 4:
            (Path(self.directory) / f"{step}.orbax-checkpoint-tmp-1").mkdir()  # a torn write
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(self, step, *a, **k)

    monkeypatch.setattr(ocp.CheckpointManager, "save", full_disk)
    with pytest.raises(CheckpointError) as e:
        train(CFG, tmp_path, sources=sources, final_eval=False, quiet=True)
    msg = str(e.value)
    assert "\n" not in msg and "No space left on device" in msg and "checkpoint 2 is kept" in msg
    monkeypatch.setattr(ocp.CheckpointManager, "save", real_save)
    resumed = train(CFG, tmp_path, sources=sources, final_eval=False, quiet=True)
    _same_params(resumed, reference[1])


@pytest.mark.slow
def test_disk_full_writing_a_manifest_keeps_the_checkpoint_and_says_so(tmp_path, sources, monkeypatch, reference):
    real = Path.write_text

    def full_disk(self, text, *a, **k):
        if self.name == ".manifest.json.tmp" and self.parent.name == "4":
            real(self, text[:6], *a, **k)  # torn, as a full disk leaves it
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, text, *a, **k)

    monkeypatch.setattr(Path, "write_text", full_disk)
    with pytest.raises(CheckpointError) as e:
        train(CFG, tmp_path, sources=sources, final_eval=False, quiet=True)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("checkpoint 4 in ") and "(No space left on device)" in msg, msg
    four = tmp_path / "checkpoints" / "4"
    assert not (four / "manifest.json").exists() and not (four / ".manifest.json.tmp").exists()
    monkeypatch.setattr(Path, "write_text", real)
    resumed = train(CFG, tmp_path, sources=sources, final_eval=False, quiet=True)  # from 4, unchecked
    _same_params(resumed, reference[1])


@pytest.mark.slow
def test_damaged_latest_checkpoint_falls_back(tmp_path, sources, reference, capsys):
    ref_wd, ref = reference
    train(CFG, tmp_path, sources=sources, stop_after_steps=9, final_eval=False, quiet=True)  # latest = 8
    ckpt = tmp_path / "checkpoints" / "8" / "state"
    files = sorted((p for p in ckpt.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    biggest = files[-1]
    biggest.write_bytes(biggest.read_bytes()[: biggest.stat().st_size // 2])  # truncated
    resumed = train(CFG, tmp_path, sources=sources, final_eval=False, quiet=False)
    err = capsys.readouterr().err
    assert "checkpoint 8" in err and "cannot be read" in err and "newest valid checkpoint" in err
    assert any((tmp_path / BROKEN_DIR).iterdir())
    _same_params(resumed, ref)


@pytest.mark.slow
def test_flipped_bytes_in_a_checkpoint_are_caught_by_its_manifest(tmp_path, sources, reference, capsys):
    """orbax reads changed bytes back as numbers (NaN losses later, blamed on the learning rate);
    the SHA-256 manifest written after each save catches them and an earlier checkpoint is used."""
    ref_wd, ref = reference
    train(CFG, tmp_path, sources=sources, stop_after_steps=9, final_eval=False, quiet=True)  # latest = 8
    assert (tmp_path / "checkpoints" / "8" / "manifest.json").is_file()
    ckpt = tmp_path / "checkpoints" / "8" / "state"
    biggest = max((p for p in ckpt.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    data = bytearray(biggest.read_bytes())
    data[len(data) // 2: len(data) // 2 + 64] = bytes(b ^ 0xFF for b in data[len(data) // 2: len(data) // 2 + 64])
    biggest.write_bytes(bytes(data))  # same size, other bytes
    resumed = train(CFG, tmp_path, sources=sources, final_eval=False, quiet=False)
    err = capsys.readouterr().err
    assert "checkpoint 8" in err and "SHA-256 differs" in err and "newest valid checkpoint" in err, err
    _same_params(resumed, ref)


@pytest.mark.slow
def test_progress_lines_without_a_terminal(tmp_path, sources, monkeypatch, capsys):
    monkeypatch.setattr(loop.RunLogger, "progress_seconds", 0.0)
    train(CFG.replace(epochs=1), tmp_path, sources=sources, final_eval=False, progress=False)
    out = capsys.readouterr().out
    lines = [l for l in out.splitlines() if l.startswith("epoch 1/1 step")]
    assert len(lines) >= 3, out
    assert "utt/s" in lines[0] and "loss" in lines[0] and "ETA" in lines[0]
    log = (tmp_path / "train.log").read_text()
    assert "utt/s" in log and "dev EER" in log


_FAULT_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    import train.loop as loop
    from train.testing import synthetic_sources, tiny_train_config
    point, at, sig = sys.argv[2], int(sys.argv[3]), getattr(signal, sys.argv[4])
    if point == "step":
        orig = loop.make_train_step
        def make(*a, **k):
            fn = orig(*a, **k)
            def wrapped(state, batch, rng=None):
                out = fn(state, batch, rng)
                if int(out[0].step) == at:
                    os.kill(os.getpid(), sig)
                return out
            return wrapped
        loop.make_train_step = make
    else:
        def fault(name, step):
            if name == point and step == at:
                os.kill(os.getpid(), sig)
        loop._fault_point = fault
    from train.__main__ import run
    cfg = tiny_train_config(epochs=2, checkpoint_every_steps=2)
    sys.exit(run(cfg, sys.argv[1], sources=synthetic_sources(), final_eval=False, quiet=True))
    """
)


def _run_fault(wd, point, at, sig):
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-c", _FAULT_SCRIPT, str(wd), point, str(at), sig], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_sigterm_saves_and_stops(tmp_path, sources, reference):
    p = _run_fault(tmp_path, "step", 3, "SIGTERM")
    assert p.returncode == 128 + signal.SIGTERM, p.stderr[-2000:]
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("stopped: SIGTERM received: saved checkpoint 3"), p.stderr[-2000:]
    assert "Traceback" not in p.stderr
    assert (tmp_path / "train.log").read_text().splitlines()[-1].endswith(last)  # the batch job's log says why
    mngr = make_checkpoint_manager(tmp_path / "checkpoints")
    assert mngr.latest_step() == 3
    mngr.close()
    resumed = train(CFG, tmp_path, sources=sources, final_eval=False, quiet=True)
    _same_params(resumed, reference[1])
    assert _records(tmp_path) == _records(reference[0])


@pytest.mark.slow
@pytest.mark.parametrize("point", ["after_best_model", "after_checkpoint"])
def test_kill_during_the_epoch_end_save_sequence(tmp_path, sources, reference, point):
    """kill -9 between best_model/ and its checkpoint, or right after the checkpoint: after
    the resume, best_model/ holds the recorded best step and the run equals the reference."""
    p = _run_fault(tmp_path, point, 5, "SIGKILL")
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    resumed = train(CFG, tmp_path, sources=sources, final_eval=False, quiet=True)
    _same_params(resumed, reference[1])
    meta = json.loads((tmp_path / "best_model" / "metadata.json").read_text())
    assert meta["step"] == resumed.best_step == reference[1].best_step


@pytest.mark.slow
def test_stale_best_model_is_repaired_on_resume(tmp_path, sources, capsys):
    """The reported case: the checkpoints say the best is epoch 2, best_model/ holds epoch 1."""
    cfg = CFG.replace(epochs=2)
    first = train(cfg.replace(epochs=1), tmp_path, sources=sources, final_eval=False, quiet=True)
    import shutil

    stale = tmp_path.parent / f"{tmp_path.name}_epoch1_best"
    shutil.copytree(tmp_path / "best_model", stale)
    res = train(cfg.replace(epochs=2, early_stopping_patience=None), tmp_path, sources=sources,
                final_eval=False, quiet=True)
    if res.best_step == first.best_step:
        pytest.skip("epoch 2 did not improve on this data; nothing to repair")
    # Make best_model/ stale again (as a kill after the checkpoint of epoch 2 would have).
    shutil.rmtree(tmp_path / "best_model")
    shutil.copytree(stale, tmp_path / "best_model")
    again = train(cfg, tmp_path, sources=sources, final_eval=False, quiet=False)
    assert again.steps_done == res.steps_done
    assert "rewritten" in capsys.readouterr().err
    meta = json.loads((tmp_path / "best_model" / "metadata.json").read_text())
    assert meta["step"] == res.best_step


@pytest.mark.slow
def test_init_from_a_training_workdir(reference):
    """--init-from RUN takes RUN/best_model/; how the model is computed may differ, the
    architecture may not."""
    import argparse

    from rawnet2_jax.checkpoint import load_pretrained
    from train.__main__ import _init_variables

    wd, _ = reference
    args = argparse.Namespace(init_from=str(wd))
    got = _init_variables(args, CFG.replace(model=CFG.model.replace(remat="blocks")))
    want = load_pretrained(wd / "best_model").variables
    for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    with pytest.raises(UserError, match=r"holds another network than this run's model .* \(gru_hidden 8 there, 16 here\); "
                                        r"match it with --set model\.gru_hidden=8, or start without --init-from"):
        _init_variables(args, CFG.replace(model=CFG.model.replace(gru_hidden=16)))


def test_a_restart_with_other_state_shapes_is_refused_and_keeps_everything(tmp_path, sources, reference):
    """Changing a model field (or the optimizer chain) on a run's workdir would make every
    checkpoint fail to restore and look damaged: refused first, nothing moved or rewritten."""
    import shutil

    wd = tmp_path / "run"
    shutil.copytree(reference[0], wd)
    saved = (wd / "config.json").read_text()
    steps = sorted(p.name for p in (wd / "checkpoints").iterdir())
    other = CFG.replace(model=CFG.model.replace(gru_hidden=2 * CFG.model.gru_hidden), epochs=3)
    decayed = CFG.replace(weight_decay=0.0 if CFG.weight_decay else 1e-4, epochs=3)  # another optimizer chain
    for changed, field in ((other, "model.gru_hidden"), (decayed, "weight_decay")):
        with pytest.raises(UserError) as e:
            train(changed, wd, sources=sources, final_eval=False, quiet=True)
        msg = str(e.value)
        assert "\n" not in msg and "other shapes" in msg and field in msg and "another --workdir" in msg, msg
    assert (wd / "config.json").read_text() == saved
    assert sorted(p.name for p in (wd / "checkpoints").iterdir()) == steps
    assert not (wd / BROKEN_DIR).exists()
    # The run's own settings (more epochs only) still resume.
    res = train(CFG.replace(epochs=3), wd, sources=sources, final_eval=False, quiet=True)
    assert res.epochs_done == 3
    note = f"note: settings that differ from the run's saved in {wd / 'config.json'}: epochs; using this command's"
    assert note in (wd / "train.log").read_text()
    import json

    (record,) = [json.loads(line) for line in (wd / "config_history.jsonl").read_text().splitlines()]
    assert record["config"] == json.loads(saved) and record["trained_to_step"] == max(int(s) for s in steps)
    assert json.loads((wd / "config.json").read_text())["epochs"] == 3


def test_an_unusable_workdir_is_one_line(tmp_path, sources, monkeypatch):
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(UserError, match="is a file, not a directory"):
        train(CFG, afile, sources=sources, final_eval=False, quiet=True)
    with pytest.raises(UserError, match=r"cannot create it \(Not a directory\)"):
        train(CFG, afile / "run", sources=sources, final_eval=False, quiet=True)
    real_open = os.open

    def read_only(path, *a, **k):  # what a read-only file system answers (root ignores chmod)
        if str(path).endswith(".lock"):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, *a, **k)

    monkeypatch.setattr(os, "open", read_only)
    with pytest.raises(UserError) as e:
        train(CFG, tmp_path / "ro", sources=sources, final_eval=False, quiet=True)
    assert "cannot write its lock file .lock (Read-only file system)" in str(e.value) and "\n" not in str(e.value)
    monkeypatch.setattr(os, "open", real_open)

    def full(fd, data, offset):  # the disk fills up as the holder is written
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "pwrite", full)
    with pytest.raises(UserError, match=r"cannot write its lock file \.lock \(No space left on device\)"):
        train(CFG, tmp_path / "full", sources=sources, final_eval=False, quiet=True)


def test_run_outputs_that_cannot_be_written(tmp_path, capsys):
    """metrics.jsonl is the run's record: a failed write stops the run with one line; train.log
    and TensorBoard are views of it: their lines still reach the terminal, said once."""
    from rawnet2_jax.errors import TrainingError
    from train.runlog import RunLogger

    blocked = tmp_path / "blocked"
    blocked.write_text("a file where a folder should be")
    log = RunLogger(blocked / "metrics.jsonl", tmp_path / "tb", quiet=False)
    log.info("epoch 1/1: one")
    log.info("epoch 1/1: two")
    out = capsys.readouterr()
    assert out.out.splitlines() == ["epoch 1/1: one", "epoch 1/1: two"]
    assert out.err.count("warning: cannot write") == 1 and "train.log" in out.err
    with pytest.raises(TrainingError) as e:
        log.log({"loss": 1.0, "step": 1}, tb_prefix="train", tb_step=1)
    assert "could not write" in str(e.value) and "resumes from the last checkpoint" in str(e.value)
    log.close()


def test_store_errors_name_their_os_cause():
    from train.checkpointing import _reason

    full = ValueError('RESOURCE_EXHAUSTED: Error writing "params.fc.bias/0" in OCDBT database at local file '
                      '"/run/checkpoints/12.orbax-checkpoint-tmp/state/ocdbt.process_0/d/x": Failed writing')
    assert _reason(full) == "No space left on device"
    assert _reason(RuntimeError("open failed: Read-only file system")) == "Read-only file system"
    assert _reason(OSError(errno.ENOSPC, "No space left on device")) == "No space left on device"


def test_closed_event_loop_errors_of_the_store_are_dropped():
    from rawnet2_jax.cliutil import quiet_store_shutdown

    class Raises:
        def __init__(self, e):
            self.e = e

        def __del__(self):
            raise self.e

    before, reported = sys.unraisablehook, []
    try:
        sys.unraisablehook = lambda u: reported.append(str(u.exc_value))  # what the default hook gets
        quiet_store_shutdown()
        Raises(RuntimeError("Event loop is closed"))
        Raises(ValueError("something else"))
    finally:
        sys.unraisablehook = before
    assert reported == ["something else"]


def test_a_batch_larger_than_the_train_split_fails_before_compiling(tmp_path, sources, monkeypatch):
    from rawnet2_jax.errors import DataError

    def compiled(*a, **k):
        raise AssertionError("compiled before the batch size was checked")

    monkeypatch.setattr(loop, "_compiled", compiled)
    n = len(sources["train"])
    with pytest.raises(DataError, match=rf"fewer than one batch of {4 * n}; lower --batch-size \(to at most {n}\)"):
        train(CFG.replace(batch_size=4 * n), tmp_path / "wd", sources=sources, final_eval=False, quiet=True)
    wd = tmp_path / "wd"  # holds no run (a restart with a smaller batch sees no changed settings): the error line only
    assert sorted(p.name for p in wd.iterdir()) == [".lock", "train.log"], sorted(wd.iterdir())


def test_dev_min_tdcf_and_an_asv_file_of_another_split(tmp_path, sources):
    """The dev min t-DCF is the metrics report's (the same numbers as computing it directly);
    an ASV file of another split stops the run at the first dev evaluation, in one line."""
    from rawnet2_jax.metrics import asv_error_rates, min_tdcf, read_asv_scores
    from rawnet2_jax.metrics.report import MetricsError
    from train.evaluation import read_score_file

    rng = np.random.default_rng(0)

    def asv_file(name, attack):
        lines = ([f"bonafide target {rng.normal(3, 1):.3f}" for _ in range(30)]
                 + [f"bonafide nontarget {rng.normal(-2, 1):.3f}" for _ in range(30)]
                 + [f"{attack} spoof {rng.normal(0, 2):.3f}" for _ in range(30)])
        (tmp_path / name).write_text("\n".join(lines) + "\n")
        return tmp_path / name

    cfg = tiny_train_config(epochs=1, checkpoint_every_steps=0)
    same = asv_file("dev_asv.txt", "A01")  # the synthetic dev split's attack
    train(cfg, tmp_path / "ok", sources=sources, asv_scores={"dev": str(same)}, final_eval=False, quiet=True)
    (rec,) = [r for r in read_metrics(tmp_path / "ok" / "metrics.jsonl") if r["type"] == "epoch"]
    labels, scores = read_score_file(tmp_path / "ok" / "scores" / "dev_scores.txt")
    asv = read_asv_scores(same)
    want = min_tdcf(scores[labels == 1], scores[labels == 0],
                    asv_error_rates(asv.of_key("target"), asv.of_key("nontarget"), asv.of_key("spoof")))[0]
    assert rec["dev_min_tdcf"] == pytest.approx(want, rel=1e-12), (rec["dev_min_tdcf"], want)

    other = asv_file("eval_asv.txt", "A07")
    with pytest.raises(MetricsError) as e:
        train(cfg, tmp_path / "bad", sources=sources, asv_scores={"dev": str(other)}, final_eval=False, quiet=True)
    msg = str(e.value)
    assert "\n" not in msg and "none of the CM attacks (A01)" in msg and "another split" in msg, msg


def test_final_json_holds_the_model_selection_without_a_final_eval(tmp_path, sources):
    import json

    cfg = tiny_train_config(epochs=1, checkpoint_every_steps=0)
    res = train(cfg, tmp_path, sources=sources, final_eval=False, quiet=True)
    final = json.loads((tmp_path / "final.json").read_text())
    assert final == {"best_epoch": res.best_epoch, "best_step": res.best_step, "best_dev_eer": res.best_dev_eer,
                     "eval": None}
    scored = train(cfg, tmp_path, sources=sources, final_eval=True, quiet=True)  # not taken as already scored
    final = json.loads((tmp_path / "final.json").read_text())
    assert final["eval"]["eer"] == scored.eval["eer"] and final["best_step"] == res.best_step
    train(cfg, tmp_path, sources=sources, final_eval=False, quiet=True)  # keeps the eval of the same best step
    assert json.loads((tmp_path / "final.json").read_text()) == final
