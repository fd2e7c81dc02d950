"""Scoring a train state on a split, for the training loop.

The dev split after every epoch and the eval split at the end go through the function behind
``rawnet2-jax evaluate`` (:func:`rawnet2_jax.split_eval.score_split`) with :class:`StateModel`,
the model view of a train state: each process scores its shard of every batch over the mesh.
The numbers come from the score file afterwards (weighted-CE loss from the scores alone, EER,
min t-DCF), and :func:`agreed_metrics` makes them the primary's on every process, so that the
schedule, early-stopping and best-model decisions cannot differ between processes.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import jax
import numpy as np
from jax.sharding import PartitionSpec as P

from rawnet2_jax.processes import distributed_timeout
from train import sharding as shd
from train.state import TrainState


class _RunView(Protocol):
    """What scoring needs of the loop's run record (``train.loop._Run``)."""

    cfg: Any  # TrainConfig: model, eval_batch_size, class_weights
    mesh: Any
    eval_step: Any
    sources: Mapping[str, Any]
    scores_dir: Path
    progress: bool
    log: Any  # RunLogger: info, warn


class StateModel:
    """What ``rawnet2_jax.split_eval.score_split`` needs of a model (``config``, ``logits``),
    from a train state: batches are split over the mesh. On several processes each one
    passes its rows of the global batch (its shard of the split) and gets their logits."""

    def __init__(self, run: _RunView, state: TrainState):
        self.config = run.cfg.model
        self._run, self._state = run, state

    def logits(self, audio: np.ndarray) -> np.ndarray:
        mesh = self._run.mesh
        x = np.asarray(audio, np.float32)
        if jax.process_count() == 1:
            return np.asarray(self._run.eval_step(self._state, {"audio": jax.device_put(x, shd.batch_sharding(mesh))})["logits"])
        gx = shd.shard_batch({"audio": x}, mesh)
        logits = self._run.eval_step(self._state, gx)["logits"]
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.global_array_to_host_local_array(logits, mesh, P(shd.DATA_AXIS)))


def split_processes():
    """This run's processes for :func:`score_split` (None in a one-process run)."""
    from rawnet2_jax.processes import Processes

    return Processes.current(timeout_s=distributed_timeout()) if jax.process_count() > 1 else None


def weighted_ce_from_scores(scores: np.ndarray, labels: np.ndarray, weights) -> float:
    """torch's weighted-mean CE of 2-class logits given only ``s = logit[1] - logit[0]``:
    ``-log softmax[y] = softplus(-s)`` for bona fide (1) and ``softplus(s)`` for spoof (0)."""
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels)
    nll = np.logaddexp(0.0, np.where(y == 1, -s, s))
    w = np.asarray(weights, np.float64)[y]
    return float(np.sum(w * nll) / np.sum(w)) if len(s) else float("nan")


def evaluate_source(run: _RunView, state: TrainState, split: str, asv_path: str | None) -> dict[str, Any]:
    """Scores of one split through ``rawnet2_jax.split_eval.score_split`` (the function
    behind ``rawnet2-jax evaluate``) into ``scores/<split>_scores.txt``, then the weighted
    loss, EER and min t-DCF computed from that file."""
    from rawnet2_jax.metrics import compute_eer, evaluate_scores, read_asv_scores, read_cm_scores
    from rawnet2_jax.split_eval import score_split

    scored = score_split(
        StateModel(run, state), run.sources[split], batch_size=run.cfg.eval_batch_size,
        out_dir=run.scores_dir, score_file=f"{split}_scores.txt", score_format="asvspoof2019",
        resume=False, progress=run.progress, desc=split, log=run.log.info, processes=split_processes(),
    )
    labels, scores = read_score_file(scored.score_file)
    out: dict[str, Any] = {"scores": scores, "labels": labels}
    out["loss"] = weighted_ce_from_scores(scores, labels, run.cfg.class_weights)
    bona, spoof = scores[labels == 1], scores[labels == 0]
    out["eer"] = compute_eer(bona, spoof)[0] if len(bona) and len(spoof) else float("nan")
    if asv_path and len(bona) and len(spoof):
        # The same report as `rawnet2-jax metrics`: the ASV file of another split is refused at
        # the first dev evaluation, not after the last epoch (it gave a dev t-DCF every epoch).
        report = evaluate_scores(read_cm_scores(scored.score_file), read_asv_scores(asv_path))
        out["min_tdcf"] = report.min_tdcf
        for w in report.warnings:
            if "(pooled)" in w or "ASV" in w:  # not the per-attack ones, every epoch
                run.log.warn(f"warning: {split}: {w}")
    return out


def agreed_metrics(dev: dict[str, Any]) -> dict[str, Any]:
    """The primary's dev loss / EER / min t-DCF on every process.

    Every process reads the same gathered score file, so the numbers are equal already; taking the primary's makes the plateau, early-stopping and best-model
    decisions identical by construction (a disagreement would deadlock the next save).
    """
    if jax.process_count() == 1:
        return dev
    from jax.experimental import multihost_utils

    names = ("loss", "eer", "min_tdcf")
    mine = np.asarray([np.nan if dev.get(k) is None else float(dev[k]) for k in names], np.float64)
    # The float64 bits as int32 words: integers cross every backend's collectives exactly.
    words = np.asarray(multihost_utils.broadcast_one_to_all(mine.view(np.int32)), np.int32)
    values = words.view(np.float64)
    out = dict(dev)
    for k, v in zip(names, values):
        out[k] = None if k == "min_tdcf" and np.isnan(v) else float(v)
    return out


def read_score_file(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(labels, scores) of an official 4-column CM score file."""
    from rawnet2_jax.metrics import read_cm_scores

    cm = read_cm_scores(path)
    labels = np.asarray([1 if k == "bonafide" else 0 for k in cm.keys], np.int32)
    return labels, np.asarray(cm.scores, np.float64)
