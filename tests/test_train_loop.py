"""Training loop: model selection, early stopping, checkpoints, non-finite loss, outputs, CLI."""

import json
from pathlib import Path

import numpy as np
import pytest

from rawnet2_jax.errors import TrainingError
from train.configs import PRESETS, get_train_config
from train.loop import make_checkpoint_manager, read_metrics, train
from train.testing import synthetic_sources, tiny_train_config


def _epochs(wd):
    return [r for r in read_metrics(Path(wd) / "metrics.jsonl") if r["type"] == "epoch"]


def test_presets():
    caa = get_train_config("caa_plateau")
    assert caa.batch_size == 32 and caa.learning_rate == 1e-4 and caa.weight_decay == 2e-4
    assert caa.grad_clip_norm == 1.0 and caa.plateau.patience == 3 and caa.plateau.factor == 0.1
    assert caa.epochs == 60 and caa.early_stopping_patience == 15 and caa.class_weights == (8.837, 1.0)
    assert caa.model.num_samples == 64000 and caa.model.pad_mode == "zero"
    tak = get_train_config("tak2021")
    assert tak.weight_decay == 1e-4 and tak.class_weights == (1.0, 9.0) and tak.epochs == 100
    assert tak.model.num_samples == 64600 and tak.model.pad_mode == "repeat" and tak.model.name == "tak2021"
    assert set(PRESETS) == {"caa_plateau", "tak2021", "tak2021_rawboost", "demo"}
    assert PRESETS["tak2021_rawboost"] == tak.replace(name="tak2021_rawboost", rawboost=5)
    assert all(c.rawboost == 0 for n, c in PRESETS.items() if n != "tak2021_rawboost")
    for cfg in PRESETS.values():
        assert type(cfg).from_dict(json.loads(cfg.to_json())) == cfg


@pytest.mark.slow
def test_selection_early_stopping_and_outputs(tmp_path):
    cfg = tiny_train_config(epochs=6, early_stopping_patience=2, learning_rate=3e-3)
    res = train(cfg, tmp_path, sources=synthetic_sources(), quiet=True)
    recs = _epochs(tmp_path)
    eers = [r["dev_eer"] for r in recs]
    # Best = first strict minimum; stop after `patience` epochs without improvement (or at max).
    best_i = int(np.argmin(eers))
    assert res.best_epoch == best_i + 1 and res.best_step == recs[best_i]["step"]
    assert res.best_dev_eer == pytest.approx(eers[best_i] / 100)
    after = len(eers) - 1 - best_i
    if len(eers) < cfg.epochs:
        assert after == 2 and "early stopping" in res.stopped_reason
    else:
        assert after <= 2
    # Checkpoints: exactly the latest and the best are kept.
    steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert set(steps) == {recs[-1]["step"], res.best_step}
    # The best model dir is load_pretrained-compatible and from the best epoch.
    from rawnet2_jax.checkpoint import load_pretrained

    pre = load_pretrained(tmp_path / "best_model")
    assert pre.metadata["epoch"] == res.best_epoch
    assert pre.metadata["dev_eer"] == pytest.approx(res.best_dev_eer)
    # Eval split scored once, with the best checkpoint; score file + curves written.
    final = json.loads((tmp_path / "final.json").read_text())
    assert final["best_step"] == res.best_step
    lines = Path(final["eval"]["score_file"]).read_text().splitlines()
    assert Path(final["eval"]["score_file"]).parent == tmp_path / "scores"
    for name in ("per_attack.txt", "summary.json", "det.png", "score_histogram.png"):  # as rawnet2-jax evaluate
        assert (tmp_path / "scores" / name).stat().st_size > 0
    assert len(lines) == 10 and lines[0].split()[2] in ("bonafide", "spoof")
    assert (tmp_path / "learning_curves.png").stat().st_size > 0
    events = [p for p in (tmp_path / "tensorboard").iterdir() if p.name.startswith("events")]
    assert events and b"eval/eval_eer" in b"".join(p.read_bytes() for p in events)  # the final eval too
    # The scores in the file are those of the best model.
    x = np.stack([np.asarray(r["audio"], np.float32) / 32768.0 for r in synthetic_sources()["eval"]])[:, :810]
    s = pre.scores(x)
    np.testing.assert_allclose(s, [float(l.split()[3]) for l in lines], rtol=1e-5, atol=1e-5)
    # Re-running a finished run does not train or score again.
    again = train(cfg, tmp_path, sources=synthetic_sources(), quiet=True)
    assert again.steps_done == res.steps_done
    assert len([r for r in read_metrics(tmp_path / "metrics.jsonl") if r["type"] == "eval"]) == 1


@pytest.mark.slow
def test_non_finite_loss_stops_cleanly(tmp_path):
    cfg = tiny_train_config(epochs=3)
    src = synthetic_sources()
    first = train(cfg.replace(epochs=1), tmp_path, sources=src, final_eval=False, quiet=True)
    assert first.epochs_done == 1
    bad = dict(src)
    bad["train"] = [dict(r, audio=np.full(900, np.nan, np.float32)) for r in src["train"]]
    with pytest.raises(TrainingError) as e:
        train(cfg, tmp_path, sources=bad, final_eval=False, quiet=True)
    msg = str(e.value)
    assert "\n" not in msg and "non-finite training loss" in msg and f"step {first.steps_done}" in msg
    mngr = make_checkpoint_manager(tmp_path / "checkpoints")
    assert mngr.latest_step() == first.steps_done  # nothing saved after the bad step
    mngr.close()
    err = [r for r in read_metrics(tmp_path / "metrics.jsonl") if r["type"] == "error"]
    assert len(err) == 1


def test_cli_errors_are_one_line(tmp_path, capsys):
    from train.__main__ import main

    rc = main(["--config", "demo", "--workdir", str(tmp_path / "w"), "--data-dir", str(tmp_path / "nothing")])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and err.startswith("error: ") and "\n" not in err
    with pytest.raises(SystemExit) as e:  # refused by argparse, before anything runs
        main(["--config", "demo", "--workdir", str(tmp_path / "w"), "--batch-size", "0"])
    assert e.value.code == 2 and capsys.readouterr().err.startswith("error: argument --batch-size")


def test_cli_overrides():
    from train.__main__ import build_parser, config_from_args

    args = build_parser().parse_args(
        ["--config", "caa_plateau", "--epochs", "3", "--batch-size", "16", "--class-weights", "1", "8.837",
         "--grad-clip", "0", "--plateau-patience", "5", "--bf16"]
    )
    cfg = config_from_args(args)
    assert cfg.epochs == 3 and cfg.batch_size == 16 and cfg.class_weights == (1.0, 8.837)
    assert cfg.grad_clip_norm is None and cfg.plateau.patience == 5 and cfg.compute_dtype == "bfloat16"
    assert cfg.weight_decay == 2e-4  # untouched
    args = build_parser().parse_args(
        ["--config", "demo", "--rawboost", "5", "--matmul-precision", "highest", "--set", "model.fms_mode=mul",
         "--set", "rawboost_config.snr_min=5", "--set", "plateau.patience=7"]
    )
    cfg = config_from_args(args)
    assert cfg.rawboost == 5 and cfg.matmul_precision == "highest" and cfg.model.fms_mode == "mul"
    assert cfg.rawboost_config.snr_min == 5.0 and cfg.plateau.patience == 7


@pytest.mark.parametrize("argv", [["--lr", "-1"], ["--epochs", "0"], ["--rawboost", "9"],
                                  ["--set", "model.fms_mode=nope"], ["--set", "nosuch=1"]])
def test_cli_refuses_bad_values_in_one_line(argv, capsys):
    from train.__main__ import main

    try:
        rc = main(["--config", "demo", *argv])
    except SystemExit as e:  # argparse range checks
        rc = e.code
    err = capsys.readouterr().err.strip()
    assert rc != 0 and err.startswith("error: ") and "\n" not in err, err


def test_tensorboard_logging_does_not_import_torch(tmp_path):
    """tensorboardX tries `import torch` (1.8 s of start-up); the run's logger keeps it out and
    still writes the scalars, and torch stays importable."""
    import os
    import subprocess
    import sys
    import textwrap

    pytest.importorskip("torch")  # without torch there is nothing to keep out
    script = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        from train.runlog import RunLogger
        wd = Path(sys.argv[1])
        log = RunLogger(wd / "metrics.jsonl", wd / "tensorboard", quiet=True)
        log.log({"loss": 0.25, "step": 3}, tb_prefix="train", tb_step=3)
        print("torch loaded:", "torch" in sys.modules)
        import torch
        print("torch imported:", torch.ones(2).sum().item())
        """
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=root, capture_output=True, text=True,
                         timeout=120, env={**os.environ, "PYTHONPATH": str(root)})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "torch loaded: False" in out.stdout and "torch imported: 2.0" in out.stdout, out.stdout
    events = [p for p in (tmp_path / "tensorboard").iterdir() if p.name.startswith("events")]
    assert events and b"train/loss" in events[0].read_bytes()


def test_help_says_what_the_workdir_holds():
    from train.__main__ import build_parser
    from train.loop import BEST_MODEL_DIR, CHECKPOINT_DIR, CURVES_FILE, FINAL_FILE, METRICS_FILE, SCORES_DIR

    text = build_parser().format_help()
    for name in ("config.json", "train.log", METRICS_FILE, "tensorboard/", CHECKPOINT_DIR, BEST_MODEL_DIR,
                 FINAL_FILE, SCORES_DIR, CURVES_FILE, "compile_cache/"):
        assert name in text.split("What WORKDIR holds:")[1], name
