"""ScoreWriter / format_file_scores: the table, CSV and JSON of file scores."""

import json

from rawnet2_jax.score_output import format_file_scores
from rawnet2_jax.scoring import FileScore, spoof_probability


def test_formats():
    res = [
        FileScore("a.wav", log_odds=2.0, spoof_probability=float(spoof_probability(2.0)), num_windows=1, duration_s=1.0),
        FileScore("b c.wav", error="b c.wav: audio file not found"),
    ]
    table = format_file_scores(res, "table")
    assert "bona fide" in table and "FAILED" in table and "1 scored, 1 failed" in table
    csv_text = format_file_scores(res, "csv").splitlines()
    assert csv_text[0].startswith("path,spoof_probability,log_odds")
    assert csv_text[1].startswith("a.wav,") and csv_text[2].startswith("b c.wav,,,")
    js = json.loads(format_file_scores(res, "json"))
    assert js["num_failed"] == 1 and js["files"][0]["log_odds"] == 2.0
    assert set(js["files"][0]) >= {"path", "spoof_probability", "log_odds", "error"}
