"""evaluate_split: a split -> official score file, per-attack tables, plots, summary.json."""

import json

import numpy as np
import pytest

from rawnet2_jax.data import data_source
from rawnet2_jax.errors import DataError
from rawnet2_jax.evaluate import evaluate_split
from rawnet2_jax.scoring import log_odds
from tests.test_scoring import T, FakeModel, _records


@pytest.mark.slow
def test_evaluate_split_writes_everything(tmp_path):
    from rawnet2_jax.metrics import compute_eer, read_cm_scores

    recs = _records()
    asv = tmp_path / "asv.txt"
    rng = np.random.default_rng(1)
    lines = [f"bonafide target {rng.normal(3, 1):.3f}" for _ in range(30)]
    lines += [f"bonafide nontarget {rng.normal(-2, 1):.3f}" for _ in range(30)]
    lines += [f"A0{7 + k} spoof {rng.normal(k, 2):.3f}" for k in range(2) for _ in range(10)]
    asv.write_text("\n".join(lines) + "\n")
    model = FakeModel()
    out = evaluate_split(
        model, dataset="asvspoof2019_la", split="eval", data_dir=tmp_path, out_dir=tmp_path / "out",
        asv_scores=asv, batch_size=4, progress=False, source=recs,
    )
    cm = read_cm_scores(out.score_file)
    assert out.score_file.name == "scores_asvspoof2019_la_eval.txt"
    assert cm.utt_ids == [r["utt_id"].decode() for r in recs]  # every utterance once, in order
    assert cm.attacks == ["-"] * 6 + ["A07"] * 5 + ["A08"] * 5
    # Scores are logit[1] - logit[0] of the first num_samples, padded like training.
    from rawnet2_jax.audio import fit_length, pcm16_to_float

    x = np.stack([fit_length(pcm16_to_float(r["audio"]), T, "zero") for r in recs])
    assert np.allclose(cm.scores, log_odds(FakeModel().logits(x)), atol=1e-5)
    assert all(s == (4, T) for s in model.shapes)
    summary = json.loads(out.summary_json.read_text())
    assert {"eer", "min_tdcf", "per_attack", "dataset", "split", "num_utterances"} <= set(summary)
    assert summary["num_utterances"] == 16 and set(summary["per_attack"]) == {"A07", "A08"}
    assert summary["eer"] == pytest.approx(100 * compute_eer(cm.bonafide_scores(), cm.spoof_scores())[0])
    for p in (out.det_png, out.histogram_png, out.det_per_attack_png):
        assert p.read_bytes()[:4] == b"\x89PNG"
    assert "A07" in out.per_attack_txt.read_text()
    assert out.per_attack_csv.read_text().splitlines()[1].startswith("pooled,10,")


def test_evaluate_split_bad_inputs(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        evaluate_split(FakeModel(), dataset="asvspoof2019_la", split="dev",
                               data_dir=tmp_path / "nope", out_dir=tmp_path / "o", progress=False)
    with pytest.raises(DataError, match="unknown dataset"):
        data_source("librispeech", "dev", tmp_path)
    with pytest.raises(DataError, match="build it with"):
        data_source("asvspoof2019_la", "dev", tmp_path)
    from rawnet2_jax.metrics import ScoreFileError

    with pytest.raises(ScoreFileError):
        evaluate_split(FakeModel(), dataset="asvspoof2019_la", split="dev", data_dir=tmp_path,
                               out_dir=tmp_path / "o", asv_scores=tmp_path / "missing_asv.txt",
                               source=_records(), progress=False)


def test_evaluate_split_bad_record(tmp_path):
    recs = _records()
    recs[3] = {"audio": b"", "label": 1, "attack": b"-", "utt_id": b"LA_E_empty"}
    with pytest.raises(DataError, match="unusable record"):
        evaluate_split(FakeModel(), dataset="asvspoof2019_la", split="dev", data_dir=tmp_path,
                               out_dir=tmp_path / "o", source=recs, progress=False)
