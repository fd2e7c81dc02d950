"""train/evaluation.py: the numbers the loop takes from a score file, on their own."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest

from train.evaluation import agreed_metrics, read_score_file, weighted_ce_from_scores
from train.step import weighted_ce


def test_weighted_ce_from_scores_is_the_weighted_ce_of_the_logits():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(16, 2)) * 3
    labels = rng.integers(0, 2, 16)
    weights = (0.1, 0.9)
    want, _, _ = weighted_ce(jnp.asarray(logits, jnp.float32), jnp.asarray(labels), jnp.asarray(weights, jnp.float32))
    got = weighted_ce_from_scores(logits[:, 1] - logits[:, 0], labels, weights)
    assert got == pytest.approx(float(want), rel=1e-5)
    assert math.isnan(weighted_ce_from_scores(np.zeros(0), np.zeros(0, np.int32), weights))


def test_read_score_file(tmp_path):
    path = tmp_path / "dev_scores.txt"
    path.write_text("U1 - bonafide 1.5\nU2 A01 spoof -0.25\n")
    labels, scores = read_score_file(path)
    assert labels.tolist() == [1, 0] and scores.tolist() == [1.5, -0.25]


def test_one_process_agrees_with_itself():
    dev = {"loss": 0.5, "eer": 0.1, "min_tdcf": None}
    assert agreed_metrics(dev) is dev
