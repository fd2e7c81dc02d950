"""`rawnet2-jax score|evaluate|metrics`: in-process with a fake model, plus one end-to-end
run of `score` on a tiny real model directory."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from rawnet2_jax import cli, data, scoring
from tests.test_scoring import SR, T, FakeModel, _records


@pytest.fixture()
def fake_model(monkeypatch):
    model = FakeModel()
    monkeypatch.setattr(cli, "_load_model", lambda d: model)
    return model


@pytest.fixture()
def wavs(tmp_path):
    d = tmp_path / "wavs"
    d.mkdir()
    sf.write(d / "good.wav", np.full(T, 0.2, np.float32) + 0.01 * np.sin(np.arange(T)).astype(np.float32), SR,
             subtype="FLOAT")
    sf.write(d / "nan.wav", np.array([0.1, np.nan] * T, np.float32), SR, subtype="FLOAT")
    (d / "corrupt.flac").write_bytes(b"fLaC\x00\x00\x00garbage")
    return d


def test_score_json_and_bad_files(fake_model, wavs, tmp_path, capsys):
    rc = cli.main(["score", "--checkpoint", "x", str(wavs), str(tmp_path / "missing.wav"), "--json", "--no-progress"])
    cap = capsys.readouterr()
    assert rc == 1
    out = json.loads(cap.out)
    assert out["num_scored"] == 1 and out["num_failed"] == 3
    good = [f for f in out["files"] if f["path"].endswith("good.wav")][0]
    assert good["log_odds"] > 0 and 0 <= good["spoof_probability"] < 0.5
    err_lines = [l for l in cap.err.splitlines() if l.startswith("error: ")]
    assert len(err_lines) == 3
    assert any("nan.wav" in l for l in err_lines) and any("corrupt.flac" in l for l in err_lines)
    assert any("missing.wav" in l for l in err_lines)


def test_score_table_csv_output_file_all_good(fake_model, wavs, tmp_path, capsys):
    good = str(wavs / "good.wav")
    assert cli.main(["score", "--checkpoint", "x", good, "--no-progress"]) == 0
    assert "bona fide" in capsys.readouterr().out
    out = tmp_path / "s.csv"
    assert cli.main(["score", "--checkpoint", "x", good, "--csv", "--windows", "-o", str(out), "--no-progress"]) == 0
    rows = out.read_text().splitlines()
    assert rows[0].startswith("path,spoof_probability,log_odds") and rows[1].startswith(good)


def test_score_output_to_missing_folder(fake_model, wavs, tmp_path, capsys):
    rc = cli.main(["score", "--checkpoint", "x", str(wavs / "good.wav"), "-o", str(tmp_path / "no" / "s.txt"),
                   "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("error: ") and "s.txt" in err and err.count("\n") == 1


def test_score_checkpoint_error_is_one_line(tmp_path, wavs, capsys):
    rc = cli.main(["score", "--checkpoint", str(tmp_path / "no_model"), str(wavs / "good.wav"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("error: ") and err.count("\n") == 1


@pytest.mark.slow
def test_evaluate_with_fake_source(fake_model, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(data, "data_source", lambda dataset, split, data_dir: _records())
    out = tmp_path / "out"
    rc = cli.main(["evaluate", "--checkpoint", "x", "--split", "dev", "--data-dir", str(tmp_path),
                   "--out", str(out), "--batch-size", "4", "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    assert "EER:" in capsys.readouterr().out
    names = set(os.listdir(out))
    assert {"scores_asvspoof2019_la_dev.txt", "summary.json", "per_attack.txt", "per_attack.csv",
            "det.png", "det_per_attack.png", "score_histogram.png"} <= names
    summary = json.loads((out / "summary.json").read_text())
    assert summary["checkpoint"].endswith("x") and "min_tdcf" not in summary
    # An ASV file of the other split is flagged.
    asv = tmp_path / "ASVspoof2019.LA.asv.eval.gi.trl.scores.txt"
    asv.write_text("bonafide target 3\nbonafide target 2\nbonafide nontarget -1\nbonafide nontarget 2.5\n"
                   "A07 spoof 1\nA08 spoof 4\n")
    rc = cli.main(["evaluate", "--checkpoint", "x", "--split", "dev", "--data-dir", str(tmp_path),
                   "--out", str(out), "--batch-size", "4", "--no-progress", "--asv-scores", str(asv)])
    cap = capsys.readouterr()
    assert rc == 0 and "another split" in cap.err and "min t-DCF:" in cap.out
    # The written score file goes through the metrics alias unchanged.
    assert cli.main(["metrics", str(out / "scores_asvspoof2019_la_dev.txt"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["eer"] == pytest.approx(summary["eer"])


def test_evaluate_missing_data_dir(fake_model, tmp_path, capsys):
    rc = cli.main(["evaluate", "--checkpoint", "x", "--split", "dev", "--data-dir", str(tmp_path / "nope"),
                   "--out", str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and "does not exist" in err and err.count("\n") == 1


def test_flags_that_would_do_nothing_are_refused(fake_model, wavs, tmp_path, capsys):
    rc = cli.main(["score", "--checkpoint", "x", "--hop", "0.5", "--no-progress", str(wavs / "good.wav")])
    err = capsys.readouterr().err
    assert rc == 1 and "--hop" in err and "--windows" in err and err.count("\n") == 1
    rc = cli.main(["evaluate", "--checkpoint", "x", "--split", "dev", "--data-dir", str(tmp_path), "--t-dcf", "2021",
                   "--out", str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and "--asv-scores" in err and err.count("\n") == 1 and not (tmp_path / "o").exists()


def test_metrics_alias_and_usage(tmp_path, capsys):
    p = tmp_path / "s.txt"
    p.write_text("a - bonafide 1\nb A01 spoof 0\nc A01 spoof 0.5\n")
    assert cli.main(["metrics", str(p), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["eer"] == 0.0
    assert cli.main(["metrics", str(tmp_path / "none.txt")]) == 1
    with pytest.raises(SystemExit) as e:
        cli.main(["metrics", "--help"])
    assert e.value.code == 0 and "rawnet2-jax metrics" in capsys.readouterr().out
    assert cli.main([]) == 2
    with pytest.raises(SystemExit) as e:
        cli.main(["score"])  # --checkpoint and PATH missing
    assert e.value.code == 2 and capsys.readouterr().err.count("\n") == 1


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """A tiny real model directory saved by checkpoint.py."""
    from rawnet2_jax import checkpoint as ck
    from rawnet2_jax.model import init_variables
    from train.testing import tiny_model

    cfg = tiny_model("caa_rawnet2", num_samples=2200)
    d = tmp_path_factory.mktemp("model") / "model"
    ck.save_model(d, init_variables(cfg, 0, num_samples=cfg.num_samples), cfg)
    return d


@pytest.mark.slow
def test_score_end_to_end_with_real_model(tmp_path, tiny_model_dir):
    """`rawnet2-jax score` in a subprocess on a real (tiny) model directory."""
    from rawnet2_jax import checkpoint as ck

    rng = np.random.default_rng(0)
    sf.write(tmp_path / "a.wav", (0.1 * rng.standard_normal(3000)).astype(np.float32), 16000)
    sf.write(tmp_path / "b.flac", (0.1 * rng.standard_normal((5000, 2))).astype(np.float32), 22050)
    (tmp_path / "broken.wav").write_bytes(b"RIFFxxxxWAVEjunk")
    res = subprocess.run(
        [sys.executable, "-m", "rawnet2_jax.cli", "score", "--checkpoint", str(tiny_model_dir),
         str(tmp_path), "--json", "--no-progress", "--windows"],
        capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 1, res.stderr
    out = json.loads(res.stdout)
    assert out["num_scored"] == 2 and out["num_failed"] == 1
    for f in out["files"]:
        if f["error"] is None:
            assert np.isfinite(f["log_odds"])
            assert f["spoof_probability"] == pytest.approx(1 / (1 + np.exp(f["log_odds"])))
    assert "broken.wav" in [l for l in res.stderr.splitlines() if l.startswith("error:")][0]
    # Same numbers as the library on the same model.
    m = ck.load_pretrained(tiny_model_dir)
    lib = scoring.score_files(m, [tmp_path / "a.wav"], windows=True, progress=False)[0]
    cli_a = [f for f in out["files"] if f["path"].endswith("a.wav")][0]
    assert cli_a["log_odds"] == pytest.approx(lib.log_odds, rel=1e-5, abs=1e-6)


@pytest.mark.slow
def test_evaluate_end_to_end_on_built_tfds_split(tmp_path, tiny_model_dir, capsys):
    """`rawnet2-jax evaluate` on a tiny ASVspoof 2019 LA tree built with the real TFDS builder."""
    from rawnet2_jax import checkpoint as ck
    from rawnet2_jax.data import asvspoof2019_la
    from rawnet2_jax.metrics import read_cm_scores
    from tests.data_fixtures import write_la_tree

    expected = write_la_tree(tmp_path / "corpus", n={"train": 3, "dev": 3, "eval": 9})
    asvspoof2019_la.build(tmp_path / "corpus", tmp_path / "data")
    asv = tmp_path / "asv_eval.txt"
    rng = np.random.default_rng(0)
    asv.write_text("\n".join(
        [f"bonafide target {rng.normal(3, 1):.3f}" for _ in range(20)]
        + [f"bonafide nontarget {rng.normal(-2, 1):.3f}" for _ in range(20)]
        + [f"{a} spoof {rng.normal(0, 2):.3f}" for a in ("A07", "A10", "A16") for _ in range(5)]
    ) + "\n")
    out = tmp_path / "out"
    rc = cli.main(["evaluate", "--checkpoint", str(tiny_model_dir), "--split", "eval", "--data-dir",
                   str(tmp_path / "data"), "--asv-scores", str(asv), "--out", str(out), "--batch-size", "4",
                   "--no-progress"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    cm = read_cm_scores(out / "scores_asvspoof2019_la_eval.txt")
    recs = expected["eval"]
    assert cm.utt_ids == [r["utt_id"] for r in recs]
    assert cm.attacks == [r["attack"] for r in recs]
    assert cm.keys == ["bonafide" if r["label"] else "spoof" for r in recs]
    # Scores = logit[1] - logit[0] of the model on the padded/cut audio, as in training.
    from rawnet2_jax.audio import fit_length, pcm16_to_float

    m = ck.load_pretrained(tiny_model_dir)
    x = np.stack([fit_length(pcm16_to_float(r["pcm"]), m.config.num_samples, m.config.pad_mode) for r in recs])
    np.testing.assert_allclose(cm.scores, m.scores(x), rtol=1e-4, atol=1e-5)
    summary = json.loads((out / "summary.json").read_text())
    assert {"eer", "min_tdcf", "per_attack"} <= set(summary)
    assert set(summary["per_attack"]) == {r["attack"] for r in recs if r["attack"] != "-"}
    # A re-run into the same --out that fails after scoring (ASV scores of another split) keeps
    # the earlier results whole; one that completes replaces them; a second run at once is refused.
    files = lambda: {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != ".lock"}  # noqa: E731
    before = files()
    other = tmp_path / "asv_other.txt"
    other.write_text("bonafide target 1.0\nbonafide nontarget -1.0\nA01 spoof 0.5\n")
    argv = ["evaluate", "--checkpoint", str(tiny_model_dir), "--split", "eval", "--data-dir", str(tmp_path / "data"),
            "--out", str(out), "--batch-size", "4", "--no-progress"]
    assert cli.main(argv + ["--asv-scores", str(other)]) == 1
    assert capsys.readouterr().err.count("\n") == 1
    assert files() == before and not [p for p in out.iterdir() if p.is_dir()]
    from rawnet2_jax.fsutil import DirLock

    with DirLock(out, ".lock", subject="x", busy_fix="", unwritable_fix=""):
        assert cli.main(argv) == 1
    assert "is in use by PID" in capsys.readouterr().err and files() == before
    assert cli.main(argv) == 0  # without --asv-scores: no min t-DCF in the new summary
    capsys.readouterr()
    assert json.loads(before["summary.json"]).get("min_tdcf") is not None
    assert json.loads((out / "summary.json").read_text()).get("min_tdcf") is None


@pytest.mark.slow
def test_evaluate_end_to_end_on_in_the_wild(tmp_path, tiny_model_dir, capsys):
    """`rawnet2-jax evaluate --dataset in_the_wild`: every file scored once, labels from meta.csv."""
    from rawnet2_jax.data import in_the_wild
    from rawnet2_jax.metrics import read_cm_scores
    from tests.data_fixtures import write_wild_tree

    recs = write_wild_tree(tmp_path / "corpus", count=6)
    in_the_wild.build(tmp_path / "corpus", tmp_path / "data")
    out = tmp_path / "out"
    rc = cli.main(["evaluate", "--checkpoint", str(tiny_model_dir), "--dataset", "in_the_wild",
                   "--split", "eval", "--data-dir", str(tmp_path / "data"), "--out", str(out),
                   "--batch-size", "4", "--no-progress"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    score_files = list(out.glob("scores_in_the_wild_eval.txt"))
    assert score_files, sorted(p.name for p in out.iterdir())
    cm = read_cm_scores(score_files[0])
    want = {r["utt_id"]: ("bonafide" if r["label"] else "spoof") for r in recs}
    got = dict(zip(cm.utt_ids, cm.keys))
    assert len(cm.utt_ids) == len(recs) and got == want
    assert np.all(np.isfinite(cm.scores))
    summary = json.loads((out / "summary.json").read_text())
    assert "eer" in summary and "min_tdcf" not in summary


def test_out_of_memory_says_to_lower_the_batch_size(monkeypatch, capsys):
    def oom(args):
        raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 256441601200 bytes.\nmore")

    monkeypatch.setattr(cli, "cmd_evaluate", oom)
    rc = cli.main(["evaluate", "--checkpoint", "m", "--split", "eval", "--data-dir", "d", "--out", "o",
                   "--batch-size", "100000"])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("error: out of memory at --batch-size 100000 (RESOURCE_EXHAUSTED: Out of memory") and \
        err.rstrip().endswith("; lower --batch-size"), err

    def other(args):
        raise RuntimeError("something else")

    monkeypatch.setattr(cli, "cmd_evaluate", other)
    with pytest.raises(RuntimeError, match="something else"):  # not swallowed
        cli.main(["evaluate", "--checkpoint", "m", "--split", "eval", "--data-dir", "d", "--out", "o"])



def test_a_resumed_score_file_belongs_to_the_models_contents_not_its_path(tmp_path):
    import shutil

    a = tmp_path / "a"
    a.mkdir()
    (a / "manifest.json").write_text('{"files": {"x": 1}}')
    shutil.copytree(a, tmp_path / "copy")
    assert cli._run_id(str(a)) == cli._run_id(str(tmp_path / "copy")) != str(a)  # a copy or a move continues
    (tmp_path / "copy" / "manifest.json").write_text('{"files": {"x": 2}}')
    assert cli._run_id(str(a)) != cli._run_id(str(tmp_path / "copy"))  # other weights: --restart
    (tmp_path / "run" / "best_model").mkdir(parents=True)
    shutil.copy(a / "manifest.json", tmp_path / "run" / "best_model" / "manifest.json")
    assert cli._run_id(str(tmp_path / "run")) == cli._run_id(str(a))  # a workdir: its best model
    assert cli._run_id(str(tmp_path / "none")) == str(tmp_path / "none")  # no manifest: the path


def test_asv_scores_folder_finds_both_files_and_warns_of_a_missing_one(tmp_path, capsys):
    from rawnet2_jax.errors import UserError
    from train.__main__ import find_asv_scores

    d = tmp_path / "LA" / "ASVspoof2019_LA_asv_scores"
    d.mkdir(parents=True)
    (d / "ASVspoof2019.LA.asv.dev.gi.trl.scores.txt").write_text("x\n")
    assert find_asv_scores(str(tmp_path)) == {"dev": str(d / "ASVspoof2019.LA.asv.dev.gi.trl.scores.txt")}
    assert capsys.readouterr().err == (f"warning: no ASVspoof2019.LA.asv.eval.gi.trl.scores.txt in {d}: the eval "
                                       "split gets no min t-DCF\n")
    (d / "ASVspoof2019.LA.asv.eval.gi.trl.scores.txt").write_text("x\n")
    assert sorted(find_asv_scores(str(d))) == ["dev", "eval"] and capsys.readouterr().err == ""
    with pytest.raises(UserError, match="no ASVspoof2019.LA.asv"):
        find_asv_scores(str(tmp_path / "nowhere"))
