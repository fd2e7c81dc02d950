"""``bench/device_check.sh --smoke``: the GPU check's code runs end to end on CPU and writes
a complete report (every kind of row, ratios that are the ratios of its rows, the table)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import import_torch

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_device_check_smoke(tmp_path):
    import_torch()
    pytest.importorskip("grain")
    env = {**os.environ, "PY": sys.executable}
    env.pop("RAWNET2_OFFICIAL_MODEL_PY", None)
    proc = subprocess.run(["bash", str(REPO / "bench" / "device_check.sh"), "--smoke", "--out-dir", str(tmp_path),
                           "--budget-s", "3000"], env=env, capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / "device_check_smoke.json").read_text())
    md = (tmp_path / "device_check_smoke.md").read_text()
    assert report["smoke"] and not report["errors"] and not report["skipped"], (report["errors"], report["skipped"])
    assert report["jax"]["backend"] == "cpu"

    train = {(r["preset"], r["dtype"], r["batch"]): r for r in report["train"]}
    assert set(train) == {("caa_rawnet2", "bfloat16", 2), ("tak2021", "bfloat16", 2)}
    for (p, d, b), r in train.items():
        assert r["utt_per_s"] == pytest.approx(1e3 * b / r["step_ms"]), r
        assert math.isfinite(r["loss"]) and r["compile_s"] > 0 and r["xla_temp_mb"] > 0, r
        assert f"| {p} | train | {d} | {b} |" in md
    assert [(r["preset"], r["dtype"]) for r in report["eval"]] == [("caa_rawnet2", "bfloat16")]
    assert all(r["utt_per_s"] > 0 for r in report["eval"])

    (remat,) = report["remat"]
    assert remat["remat"] == "blocks" and remat["batch"] == 2 and math.isfinite(remat["loss"])
    assert "| caa_rawnet2 | float32 | 2 | blocks |" in md

    (other,) = report["gru_impl"]  # CPU: auto picks the one-GEMM backward, so the row is the scan's
    assert other["gru_impl"] == "scan" and train[("tak2021", "bfloat16", 2)]["gru_impl"] == "gemm", other
    assert (other["preset"], other["dtype"], other["batch"]) == ("tak2021", "bfloat16", 2) and other["step_ms"] > 0
    assert "| tak2021 | bfloat16 | 2 | scan |" in md

    (gru,) = report["gru_share"]
    assert gru["gru_share"] == pytest.approx(1 - gru["step_ms_projection_only"] / gru["step_ms"])
    assert gru["step_ms"] == train[("caa_rawnet2", "bfloat16", 2)]["step_ms"]  # the train row, reused
    assert gru["step_ms_projection_only"] > 0 and "GRU share of the step" in md

    assert report["pipeline"]["utt_per_s"] > 0 and "utterances/s" in md
    torch_rows = report["torch"]["train"]
    assert [r["batch"] for r in torch_rows] == [2] and "reference.py" in report["torch"]["which"]
    (ratio,) = report["ratios"]
    assert ratio["ratio"] == pytest.approx(train[("tak2021", "bfloat16", 2)]["utt_per_s"] / torch_rows[0]["utt_per_s"])
    assert "JAX / torch" in md
