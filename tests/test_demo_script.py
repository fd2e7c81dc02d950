"""scripts/demo.sh rebuilds a dataset whose build was interrupted (TFDS's completion marker,
dataset_info.json in the version folder, decides; not the folder's existence)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rawnet2_jax.data import demo
from tests.test_demo import TINY

REPO = Path(__file__).resolve().parents[1]


def _run_demo_data(out: Path, **extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DEMO_PYTHON": sys.executable, "DEMO_ONLY_DATA": "1", "DEMO_OUT": str(out),
           "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu", **extra}
    return subprocess.run(["bash", str(REPO / "scripts" / "demo.sh")], env=env, capture_output=True, text=True,
                          timeout=600, cwd=REPO)


@pytest.mark.slow
def test_demo_rebuilds_an_interrupted_dataset(tmp_path):
    out = tmp_path / "demo_out"
    demo.make_demo_corpus(out, TINY, progress=False)
    ds = out / "tfds" / "asvspoof2019_la"
    # What a build killed half-way leaves: the dataset folder, a version folder with a shard,
    # and TFDS's incomplete.* folder, but no dataset_info.json.
    (ds / "1.0.0").mkdir(parents=True)
    (ds / "1.0.0" / "asvspoof2019_la-train.array_record-00000-of-00001").write_bytes(b"\0" * 100)
    (ds / "incomplete.abc123_1.0.0").mkdir()
    r = _run_demo_data(out)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "rawnet2_jax.data build asvspoof2019_la" in r.stdout, r.stdout
    assert "rawnet2_jax.data demo" not in r.stdout  # the complete corpus is reused
    assert (ds / "1.0.0" / "dataset_info.json").is_file()
    assert not list(ds.glob("incomplete.*"))
    r = _run_demo_data(out)  # now complete: reused
    assert r.returncode == 0, r.stderr[-2000:]
    assert "rawnet2_jax.data build" not in r.stdout and "ready" in r.stdout


@pytest.mark.slow  # writes a corpus and builds it: ~15 s on a busy 2-core machine
def test_demo_rewrites_an_interrupted_corpus(tmp_path):
    out = tmp_path / "demo_out"
    la = demo.make_demo_corpus(out, TINY, progress=False)
    (la / "ASVspoof2019_LA_asv_scores" / "ASVspoof2019.LA.asv.eval.gi.trl.scores.txt").unlink()  # killed late
    args = f"--num-train {TINY.num_train} --num-dev {TINY.num_dev} --num-eval {TINY.num_eval} --seconds 0.5"
    r = _run_demo_data(out, DEMO_CORPUS_ARGS=args)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "rawnet2_jax.data demo" in r.stdout and "rawnet2_jax.data build" in r.stdout
    assert (la / "ASVspoof2019_LA_asv_scores" / "ASVspoof2019.LA.asv.eval.gi.trl.scores.txt").is_file()
    assert list((out / "tfds" / "asvspoof2019_la").glob("[0-9]*/dataset_info.json"))
