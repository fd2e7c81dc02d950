"""Streaming, resumable split scoring; `rawnet2-jax evaluate --dataset asvspoof2021_*`; `benchmark`."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("tensorflow_datasets")

from rawnet2_jax import cli  # noqa: E402
from rawnet2_jax.data import asvspoof2021_df, asvspoof2021_la, in_the_wild  # noqa: E402
from rawnet2_jax.errors import UserError  # noqa: E402
from rawnet2_jax.metrics.asvspoof2021 import evaluate_2021, read_trial_scores  # noqa: E402
from rawnet2_jax.split_eval import score_split  # noqa: E402
from tests.data_fixtures import (  # noqa: E402
    df21_key_lines,
    la21_asv_lines,
    la21_key_lines,
    write_2021_audio,
    write_2021_keys,
    write_wild_tree,
)
from tests.test_scoring import FakeModel, _records  # noqa: E402


class StopAfter(FakeModel):
    """FakeModel that is 'killed' (KeyboardInterrupt) on call number ``stop_at``."""

    def __init__(self, stop_at=None):
        super().__init__()
        self.calls, self.stop_at = 0, stop_at

    def logits(self, x):
        self.calls += 1
        if self.calls == self.stop_at:
            raise KeyboardInterrupt
        return super().logits(x)


@pytest.fixture()
def records():
    return _records(n_bona=8, attacks=("A07", "A08"), n_each=6)  # 20 records


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["asvspoof2021", "asvspoof2019"])
def test_interrupted_then_resumed_equals_uninterrupted(tmp_path, records, fmt):
    full = score_split(FakeModel(), records, batch_size=3, out_dir=tmp_path / "a", score_format=fmt, progress=False)
    want = full.score_file.read_bytes()
    assert full.num_records == 20 and len(want.splitlines()) == 20
    m = StopAfter(stop_at=6)  # 5 batches (15 lines) done, then stopped at ~80 %
    with pytest.raises(KeyboardInterrupt):
        score_split(m, records, batch_size=3, out_dir=tmp_path / "b", score_format=fmt, progress=False)
    part = tmp_path / "b" / "scores.txt"
    assert part.read_bytes() == b"".join(want.splitlines(keepends=True)[:15])  # flushed as it went
    with open(part, "ab") as f:
        f.write(want.splitlines(keepends=True)[15][:7])  # a line torn by the kill
    m2 = StopAfter()
    again = score_split(m2, records, batch_size=3, out_dir=tmp_path / "b", score_format=fmt, progress=False)
    assert part.read_bytes() == want and again.num_resumed == 15 and m2.calls == 2  # 5 left -> 2 batches
    done = score_split(StopAfter(stop_at=1), records, batch_size=3, out_dir=tmp_path / "b", score_format=fmt,
                       progress=False)
    assert done.num_resumed == 20 and part.read_bytes() == want  # complete: nothing re-scored
    score_split(FakeModel(), records, batch_size=3, out_dir=tmp_path / "b", score_format=fmt, resume=False,
                progress=False)
    assert part.read_bytes() == want


def test_resume_refuses_a_foreign_score_file(tmp_path, records):
    (tmp_path / "scores.txt").write_text("LA_E_0000001 0.5\n")
    with pytest.raises(UserError, match=r"scores.txt:1: trial LA_E_0000001 where this split has .*--restart") as e:
        score_split(FakeModel(), records, batch_size=4, out_dir=tmp_path, progress=False)
    assert "\n" not in str(e.value)


def test_resume_refuses_another_models_scores(tmp_path, records):
    with pytest.raises(KeyboardInterrupt):
        score_split(StopAfter(stop_at=3), records, batch_size=4, out_dir=tmp_path, progress=False, run_id="model A")
    with pytest.raises(UserError, match="holds scores of model A, not model B; pass --restart"):
        score_split(FakeModel(), records, batch_size=4, out_dir=tmp_path, progress=False, run_id="model B")
    score_split(FakeModel(), records, batch_size=4, out_dir=tmp_path, progress=False, run_id="model B", resume=False)
    assert (tmp_path / "scores.txt.run").read_text() == "model B\n"
    assert len((tmp_path / "scores.txt").read_text().splitlines()) == 20


def test_progress_lines_when_not_a_terminal(tmp_path, records):
    lines = []
    score_split(FakeModel(), records, batch_size=4, out_dir=tmp_path, progress=True, desc="demo", log_every=8,
                log=lines.append)
    assert lines[-1].startswith("demo: 20 / 20 files (100.0 %)") and 2 <= len(lines) <= 4, lines
    assert "files/s" in lines[0] and "ETA" in lines[0]


@pytest.fixture()
def la_data(tmp_path):
    lines = la21_key_lines(40, seed=8)
    write_2021_keys(tmp_path / "c", "LA", lines, la21_asv_lines(300, seed=8))
    write_2021_audio(tmp_path / "c", "LA", [ln.split()[1] for ln in lines], seed=8)
    asvspoof2021_la.build(tmp_path / "c", tmp_path / "data")
    return tmp_path / "data", tmp_path / "c" / "keys", lines


@pytest.mark.slow  # ~16 s on the busy 2-core machine (three heatmap PNGs)
def test_evaluate_la_2021_cli_stopped_and_continued(la_data, tmp_path, monkeypatch, capsys):
    data, keys, lines = la_data
    ref = tmp_path / "ref"
    monkeypatch.setattr(cli, "_load_model", lambda d: FakeModel())
    args = ["evaluate", "--checkpoint", "x", "--dataset", "asvspoof2021_la", "--data-dir", str(data),
            "--batch-size", "4", "--no-progress"]
    assert cli.main(args + ["--out", str(ref)]) == 0
    text = capsys.readouterr().out
    assert "min t-DCF" in text and "attack \\ codec" in text
    score_file = ref / "scores_asvspoof2021_la.txt"
    trials, _ = read_trial_scores(score_file)
    assert trials == [ln.split()[1] for ln in lines]  # every trial, all subsets, key order
    want = evaluate_2021(score_file, keys, "LA", "eval").to_dict()
    assert json.loads((ref / "tables_eval.json").read_text()) == want
    summary = json.loads((ref / "summary_eval.json").read_text())
    assert summary["pooled_eer"] == want["eer"]["Pooled"]["Pooled"]
    assert summary["pooled_min_tdcf"] == want["min_tdcf"]["Pooled"]["Pooled"]
    csv_rows = (ref / "tables_eval.csv").read_text().splitlines()
    assert csv_rows[0] == "table,attack,codec,n_bonafide,n_spoof,value" and len(csv_rows) == 1 + 2 * 14 * 8
    assert (ref / "eer_by_condition_eval.png").stat().st_size > 10000
    assert (ref / "tables_eval.txt").read_text().strip() == text.split("\n\nwrote")[0].strip()

    # Stopped at 80 % (8 of 10 batches), then the same command continues where it was.
    out = tmp_path / "out"
    monkeypatch.setattr(cli, "_load_model", lambda d: StopAfter(stop_at=9))
    assert cli.main(args + ["--out", str(out)]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert len((out / "scores_asvspoof2021_la.txt").read_text().splitlines()) == 32
    resumed = StopAfter()
    monkeypatch.setattr(cli, "_load_model", lambda d: resumed)
    assert cli.main(args + ["--out", str(out)]) == 0
    assert "continued after 32 scored trials" in capsys.readouterr().out and resumed.calls == 2
    assert (out / "scores_asvspoof2021_la.txt").read_bytes() == score_file.read_bytes()
    # Another subset's tables from the same score file, without re-scoring.
    monkeypatch.setattr(cli, "_load_model", lambda d: StopAfter(stop_at=1))
    assert cli.main(args + ["--out", str(out), "--subset", "progress"]) == 0
    assert json.loads((out / "tables_progress.json").read_text()) == evaluate_2021(
        score_file, keys, "LA", "progress").to_dict()


def test_evaluate_2021_errors(la_data, tmp_path, monkeypatch, capsys):
    data, _, _ = la_data
    monkeypatch.setattr(cli, "_load_model", lambda d: FakeModel())
    base = ["evaluate", "--checkpoint", "x", "--data-dir", str(data), "--out", str(tmp_path / "o"), "--no-progress"]
    assert cli.main(base + ["--dataset", "asvspoof2021_df"]) == 1
    err = capsys.readouterr().err
    assert "run: python -m rawnet2_jax.data build asvspoof2021_df" in err and err.count("\n") == 1
    assert cli.main(base + ["--dataset", "asvspoof2021_la", "--split", "dev"]) == 1
    assert "has one split, eval" in capsys.readouterr().err
    assert cli.main(base + ["--dataset", "asvspoof2021_la", "--asv-scores", "a.txt"]) == 1
    assert "takes its ASV scores from the keys" in capsys.readouterr().err
    assert cli.main(base + ["--dataset", "asvspoof2019_la"]) == 1
    assert "--split is required" in capsys.readouterr().err


@pytest.mark.slow
def test_benchmark_built_and_skipped(tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    la = la21_key_lines(30, seed=2)
    write_2021_keys(tmp_path / "c", "LA", la, la21_asv_lines(300, seed=2))
    write_2021_audio(tmp_path / "c", "LA", [ln.split()[1] for ln in la])
    df = df21_key_lines(30, seed=2)
    write_2021_keys(tmp_path / "c", "DF", df)
    write_2021_audio(tmp_path / "c", "DF", [ln.split()[1] for ln in df], parts=4)
    write_wild_tree(tmp_path / "c", count=6)
    for mod in (asvspoof2021_la, asvspoof2021_df, in_the_wild):
        mod.build(tmp_path / "c", data)
    monkeypatch.setattr(cli, "_load_model", lambda d: FakeModel())
    out = tmp_path / "bench"
    assert cli.main(["benchmark", "--checkpoint", "x", "--data-dir", str(data), "--out", str(out),
                     "--batch-size", "8", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert f"python -m rawnet2_jax.data build asvspoof2019_la --manual-dir DIR --data-dir {data}" in text
    res = {r["dataset"]: r for r in json.loads((out / "benchmark.json").read_text())["results"]}
    assert list(res) == ["asvspoof2019_la", "asvspoof2021_la", "asvspoof2021_df", "in_the_wild"]
    assert res["asvspoof2019_la"]["status"] == "skipped"
    la_tables = evaluate_2021(out / "asvspoof2021_la" / "scores_asvspoof2021_la.txt", tmp_path / "c" / "keys", "LA")
    assert res["asvspoof2021_la"]["eer"] == 100 * la_tables.pooled_eer
    assert res["asvspoof2021_la"]["min_tdcf"] == la_tables.pooled_min_tdcf
    worst = la_tables.worst_condition()
    assert res["asvspoof2021_la"]["worst_condition"] == worst[0] and res["asvspoof2021_la"]["worst_eer"] == 100 * worst[1]
    assert res["asvspoof2021_df"]["min_tdcf"] is None and res["asvspoof2021_df"]["eer"] is not None
    assert res["in_the_wild"]["num_trials"] == 6 and res["in_the_wild"]["min_tdcf"] is None
    md = (out / "benchmark.md").read_text()
    assert md.startswith("| dataset | trials | pooled EER (%) |") and "| asvspoof2019_la | - | - | - | not built |" in md
    assert (out / "benchmark.png").stat().st_size > 5000
    assert np.isfinite(res["in_the_wild"]["eer"])
    # Nothing built there (a mistyped --data-dir): one error line, not an empty "finished" table.
    assert cli.main(["benchmark", "--checkpoint", "x", "--data-dir", str(tmp_path / "typo"), "--out",
                     str(tmp_path / "bench2"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: none of asvspoof2019_la, ") and "is built in" in err and err.count("\n") == 1, err
