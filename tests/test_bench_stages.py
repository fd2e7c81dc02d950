"""bench/bench_stages.py at its --quick size: every stage of the model timed, the table printed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import bench_stages  # noqa: E402
import common  # noqa: E402


def test_stage_shapes_follow_the_model():
    cfg = common.bench_config("tak2021")
    shapes = bench_stages.stage_shapes(cfg, 4)
    assert shapes["front"] == (4, 64600)
    assert shapes["block0"] == (4, (64600 - 128) // 3, 128)
    assert shapes["block2"] == (4, (64600 - 128) // 3 // 9, 128)
    assert shapes["gru"] == (4, 29, 512)  # the GRU's 29 steps


@pytest.mark.slow
def test_quick_jax_run_prints_every_stage(capsys):
    bench_stages.main(["--quick", "--reps", "1", "--batch", "2", "--threads", "0"])  # 0: the test process stays unpinned
    out = capsys.readouterr().out
    for stage in ("front", *(f"block{i}" for i in range(6)), "gru", "total"):
        assert f"| {stage} |" in out
