"""The training program: epochs, dev evaluation, model selection, checkpoints, logging.

``train(cfg, workdir, data_dir)`` runs (or resumes) one training run in ``workdir``::

    workdir/
      config.json            the TrainConfig of the run
      checkpoints/<step>/    orbax CheckpointManager: the LATEST and the BEST (by dev EER)
                             checkpoints (arrays: params, batch_stats, buffers, opt_state,
                             rng, step, epoch; JSON: plateau, early stopping, data position)
      best_model/            the best model as a ``load_pretrained`` model dir
      metrics.jsonl          one JSON record per log interval / epoch / final eval
      tensorboard/           tensorboardX event files
      learning_curves.png    at the end
      scores/eval_scores.txt official 4-column CM score file of the eval split (best model)
      final.json             dev/eval results of the best checkpoint

Semantics:

* each epoch ends with a dev evaluation (weighted-CE dev loss, EER, min t-DCF when ASV
  scores are given); the plateau scheduler is stepped with the dev loss; model selection
  and early stopping use the dev EER only (strict improvement);
* checkpoints are written at every epoch end and every ``checkpoint_every_steps`` steps
  mid-epoch. A run killed at any point restarts from its latest checkpoint and, because
  the data order is a pure function of (seed, epoch, step) and the step RNG is
  ``fold_in(rng, step)``, ends with bit-identical parameters (CPU);
* a non-finite training or dev loss stops the run with a one-line ``TrainingError``
  before anything is saved, so the last good checkpoint stays the latest;
* the eval split is scored ONCE at the end, with the best checkpoint.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from rawnet2_jax.errors import DataError, TrainingError, UserError
from train import sharding as shd
from train.configs import TrainConfig
from train.optim import (
    early_stop_update,
    get_learning_rate,
    plateau_step,
    set_learning_rate,
    should_stop,
)
from train.state import HostState, TrainState, create_train_state
from train.step import build_model, make_eval_step, make_train_step

CHECKPOINT_DIR = "checkpoints"
BEST_MODEL_DIR = "best_model"
METRICS_FILE = "metrics.jsonl"
TB_DIR = "tensorboard"
CURVES_FILE = "learning_curves.png"
SCORES_DIR = "scores"
FINAL_FILE = "final.json"


# --------------------------------------------------------------------------- checkpoints


class LatestAndBest:
    """Orbax preservation policy: keep the latest checkpoint and the best one.

    Every save carries ``metrics={"best_step": s}`` (the step of the best end-of-epoch
    checkpoint so far, -1 if none). The latest checkpoint is never deleted; the step named
    by the newest checkpoint's ``best_step`` is kept too. Ties and ordering are therefore
    decided by the training loop (strict improvement of dev EER), not by orbax sorting.
    """

    def should_preserve(self, checkpoints, *, context=None):
        if not checkpoints:
            return []
        latest = max(range(len(checkpoints)), key=lambda i: checkpoints[i].step)
        m = checkpoints[latest].metrics or {}
        best = int(m.get("best_step", -1))
        return [i == latest or c.step == best for i, c in enumerate(checkpoints)]


def make_checkpoint_manager(directory: str | os.PathLike):
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(
        preservation_policy=LatestAndBest(),
        enable_async_checkpointing=False,  # a save is complete when save() returns
        create=True,
        cleanup_tmp_directories=True,  # leftovers of a run killed mid-save
    )
    return ocp.CheckpointManager(
        Path(directory).absolute(), options=options, item_names=("state", "host")
    )


def save_checkpoint(mngr, state: TrainState) -> int:
    import orbax.checkpoint as ocp

    step = int(state.step)
    best_step = state.host.early_stop.best_step
    mngr.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state.arrays()),
            host=ocp.args.JsonSave(state.host.to_json()),
        ),
        metrics={"best_step": -1 if best_step is None else int(best_step)},
        force=True,
    )
    mngr.wait_until_finished()
    return step


def restore_checkpoint(mngr, state: TrainState, step: int) -> TrainState:
    """``state`` with arrays and host state of checkpoint ``step`` (shardings kept)."""
    import orbax.checkpoint as ocp

    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state.arrays())
    restored = mngr.restore(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), host=ocp.args.JsonRestore()),
    )
    arrays = restored["state"]
    # Keep the optimizer-state pytree classes (NamedTuples) of the live state.
    arrays["opt_state"] = jax.tree.unflatten(
        jax.tree.structure(state.opt_state), jax.tree.leaves(arrays["opt_state"])
    )
    return state.with_arrays(arrays).replace(host=HostState.from_json(restored["host"]))


# --------------------------------------------------------------------------- logging


class RunLogger:
    """JSON lines + TensorBoard (tensorboardX) + stdout, on process 0 only."""

    def __init__(self, workdir: Path, enabled: bool = True, quiet: bool = False):
        self.enabled = enabled and jax.process_index() == 0
        self.quiet = quiet
        self.path = workdir / METRICS_FILE
        self._tb = None
        if self.enabled:
            try:
                from tensorboardX import SummaryWriter

                self._tb = SummaryWriter(str(workdir / TB_DIR))
            except Exception as e:  # pragma: no cover - tensorboardX optional at runtime
                print(f"warning: TensorBoard logging off ({e})", file=sys.stderr)

    def log(self, record: dict[str, Any], tb_prefix: str | None = None, tb_step: int | None = None) -> None:
        if not self.enabled:
            return
        record = {k: _jsonable(v) for k, v in record.items()}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
        if self._tb is not None and tb_prefix is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("epoch", "step"):
                    if math.isfinite(float(v)):
                        self._tb.add_scalar(f"{tb_prefix}/{k}", float(v), tb_step)
            self._tb.flush()

    def info(self, msg: str) -> None:
        if self.enabled and not self.quiet:
            print(msg, flush=True)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def _jsonable(v: Any) -> Any:
    if isinstance(v, (np.generic, jax.Array)):
        v = np.asarray(v).item()
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else (1e308 if v > 0 else -1e308)
    return v


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All records of a metrics.jsonl (later records of the same epoch win: resumed runs)."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def epoch_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_epoch: dict[int, dict[str, Any]] = {}
    for r in records:
        if r.get("type") == "epoch":
            by_epoch[int(r["epoch"])] = r
    return [by_epoch[e] for e in sorted(by_epoch)]


# --------------------------------------------------------------------------- data


def load_sources(cfg: TrainConfig, data_dir: str | os.PathLike | None, splits=("train", "dev", "eval")) -> dict[str, Any]:
    """Random-access record sources of the TFDS builder ``cfg.dataset``."""
    if cfg.dataset == "asvspoof2019_la":
        import rawnet2_jax.data.asvspoof2019_la  # noqa: F401  (registers the builder)
    else:
        raise DataError(f"unknown dataset {cfg.dataset!r}; use asvspoof2019_la")
    import tensorflow_datasets as tfds

    out = {}
    for split in splits:
        try:
            out[split] = tfds.data_source(cfg.dataset, split=split, data_dir=None if data_dir is None else str(data_dir))
        except Exception as e:  # TFDS raises assorted errors for a missing / unbuilt dataset
            where = data_dir or "the default TFDS data dir"
            raise DataError(
                f"cannot open {cfg.dataset}/{split} in {where} ({type(e).__name__}); build it first with "
                f"`python -m rawnet2_jax.data build {cfg.dataset} --manual-dir DIR --data-dir DATA_DIR` "
                "and pass --data-dir DATA_DIR"
            ) from None
    return out


def _attack_of(rec: Mapping[str, Any]) -> str:
    a = rec.get("attack", "-")
    return a.decode() if isinstance(a, bytes) else str(a)


# --------------------------------------------------------------------------- evaluation


def evaluate(
    eval_step: Callable,
    state: TrainState,
    source: Any,
    cfg: TrainConfig,
    mesh,
    *,
    asv=None,
    desc: str = "dev",
    progress: bool = False,
) -> dict[str, Any]:
    """Scores + weighted dev loss + EER (+ min t-DCF) of one split."""
    from rawnet2_jax.data.pipeline import eval_batches
    from rawnet2_jax.metrics import asv_error_rates, compute_eer, min_tdcf

    try:
        batches = eval_batches(source, cfg.model, cfg.eval_batch_size)
    except ValueError as e:
        raise UserError(f"eval batches: {e}") from None
    scores, labels, utts = [], [], []
    num = den = 0.0
    it = batches
    if progress:
        from tqdm import tqdm

        it = tqdm(batches, desc=desc, leave=False, dynamic_ncols=True)
    for batch in it:
        gb = shd.shard_batch(batch, mesh)
        out = eval_step(state, gb)
        mask = shd.gather_to_host(gb["mask"]).astype(bool)
        scores.append(shd.gather_to_host(out["score"])[mask])
        labels.append(shd.gather_to_host(gb["label"])[mask])
        if jax.process_count() == 1:  # utterance ids are host-local (see gaps in the docs)
            utts.extend(np.asarray(batch["utt_id"])[np.asarray(batch["mask"])].tolist())
        num += float(out["loss_num"])
        den += float(out["loss_den"])
    scores_a = np.concatenate(scores) if scores else np.zeros(0)
    labels_a = np.concatenate(labels) if labels else np.zeros(0, np.int32)
    result: dict[str, Any] = {"scores": scores_a, "labels": labels_a, "utt_ids": utts}
    result["loss"] = num / den if den > 0 else float("nan")
    bona, spoof = scores_a[labels_a == 1], scores_a[labels_a == 0]
    if len(bona) and len(spoof) and np.all(np.isfinite(scores_a)):
        result["eer"] = compute_eer(bona, spoof)[0]
        if asv is not None:
            rates = asv_error_rates(asv.of_key("target"), asv.of_key("nontarget"), asv.of_key("spoof"))
            try:
                result["min_tdcf"] = min_tdcf(bona, spoof, rates)[0]
            except UserError as e:
                print(f"warning: min t-DCF not computed: {e}", file=sys.stderr)
    else:
        result["eer"] = float("nan")
    return result


# --------------------------------------------------------------------------- the run


def _step_key(cfg: TrainConfig) -> TrainConfig:
    """The part of a config the compiled steps depend on (model, loss weights, dtype)."""
    return TrainConfig(name="", model=cfg.model, class_weights=cfg.class_weights, compute_dtype=cfg.compute_dtype)


def _model_and_steps(cfg: TrainConfig):
    return _cached_model_and_steps(_step_key(cfg))


@functools.lru_cache(maxsize=4)
def _cached_model_and_steps(key: TrainConfig):
    """Model + jitted steps, shared by runs in one process (no recompiles)."""
    model = build_model(key)
    return model, make_train_step(model, key), make_eval_step(model, key)


def _init_fn(cfg: TrainConfig):
    return _cached_init_fn(_step_key(cfg))


@functools.lru_cache(maxsize=4)
def _cached_init_fn(key: TrainConfig):
    """Jitted ``model.init`` (same as ``rawnet2_jax.model.init_variables``), compiled once."""
    model = _cached_model_and_steps(key)[0]
    x = jnp.zeros((1, key.model.num_samples), jnp.float32)
    return jax.jit(lambda rng: model.init(rng, x, train=False))


@dataclasses.dataclass
class TrainResult:
    workdir: Path
    best_epoch: int | None
    best_step: int | None
    best_dev_eer: float | None  # fraction
    epochs_done: int
    steps_done: int
    stopped_reason: str | None
    interrupted: bool = False
    eval: dict[str, Any] | None = None
    final_state: TrainState | None = None


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n")
    os.replace(tmp, path)


def train(
    cfg: TrainConfig,
    workdir: str | os.PathLike,
    data_dir: str | os.PathLike | None = None,
    *,
    sources: Mapping[str, Any] | None = None,
    asv_scores: Mapping[str, str | os.PathLike] | None = None,
    init_variables: Mapping[str, Any] | None = None,
    stop_after_steps: int | None = None,
    progress: bool | None = None,
    quiet: bool = False,
    final_eval: bool = True,
) -> TrainResult:
    """Train (or resume) ``cfg`` in ``workdir``.

    Args:
      sources: ``{"train", "dev", "eval"}`` random-access record sources (default: the
        TFDS builder ``cfg.dataset`` in ``data_dir``).
      asv_scores: ``{"dev": path, "eval": path}`` organiser ASV score files for min t-DCF.
      init_variables: start from these model variables instead of a fresh init.
      stop_after_steps: testing hook that simulates a kill: return (without saving) after
        this many optimizer steps in THIS call.
      final_eval: score the eval split with the best checkpoint at the end.
    """
    logging.getLogger("absl").setLevel(logging.WARNING)
    workdir = Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    if progress is None:
        progress = sys.stderr.isatty() and not quiet
    log = RunLogger(workdir, quiet=quiet)

    cfg_path = workdir / "config.json"
    if cfg_path.exists():
        old = json.loads(cfg_path.read_text())
        if old != json.loads(cfg.to_json()):
            changed = sorted(k for k in set(old) | set(cfg.to_dict()) if old.get(k) != json.loads(cfg.to_json()).get(k))
            log.info(f"note: config differs from the one saved in {cfg_path} ({', '.join(changed)}); using the new one")
    if jax.process_index() == 0:
        cfg_path.write_text(cfg.to_json() + "\n")

    if sources is None:
        sources = load_sources(cfg, data_dir, splits=("train", "dev", "eval") if final_eval else ("train", "dev"))
    asv = {}
    if asv_scores:
        from rawnet2_jax.metrics import read_asv_scores

        asv = {k: read_asv_scores(v) for k, v in asv_scores.items() if v}

    mesh = shd.make_mesh()
    shd.check_batch_size(cfg.batch_size, mesh)
    shd.check_batch_size(cfg.eval_batch_size, mesh, "eval batch size")

    model, train_step, eval_step = _model_and_steps(cfg)
    if init_variables is None:
        variables = _init_fn(cfg)(jax.random.PRNGKey(cfg.seed))
    else:
        variables = init_variables
    variables = jax.tree.map(jnp.asarray, dict(variables))
    state = create_train_state(variables, cfg)
    state = state.with_arrays(shd.replicate(state.arrays(), mesh))

    mngr = make_checkpoint_manager(workdir / CHECKPOINT_DIR)
    latest = mngr.latest_step()
    if latest is not None:
        state = restore_checkpoint(mngr, state, latest)
        log.info(
            f"resumed from {workdir / CHECKPOINT_DIR / str(latest)}: epoch {int(state.epoch)}, "
            f"step {int(state.step)}, {state.host.batches_in_epoch} batches into the epoch"
        )

    from rawnet2_jax.data.pipeline import steps_per_epoch, train_batches

    n_train = len(sources["train"])
    spe = steps_per_epoch(n_train, cfg.batch_size)
    if spe == 0:
        raise DataError(f"the train split has {n_train} utterances, fewer than one batch of {cfg.batch_size}")
    if cfg.max_steps_per_epoch:
        spe = min(spe, cfg.max_steps_per_epoch)

    steps_this_call = 0
    interrupted = False
    host = state.host.replace(stopped_reason=None)
    state = state.replace(host=host)
    try:
        # The stop conditions are re-evaluated from the (possibly changed) config, so a finished
        # run continues when --epochs or the early-stopping patience is raised.
        while int(state.epoch) < cfg.epochs and not should_stop(host.early_stop, cfg.early_stopping_patience):
            epoch = int(state.epoch)
            start = host.batches_in_epoch
            t_epoch = time.time()
            it = train_batches(
                sources["train"], cfg.model, cfg.batch_size, cfg.shuffle_seed, start_epoch=epoch, start_step=start,
                num_epochs=1,
            )
            bar = None
            if progress:
                from tqdm import tqdm

                bar = tqdm(total=spe, initial=start, desc=f"epoch {epoch + 1}/{cfg.epochs}", dynamic_ncols=True, leave=False)
            window: list[dict[str, float]] = []
            epoch_loss_sum = 0.0
            for b in range(start, spe):
                batch = next(it)
                state, metrics = train_step(state, shd.shard_batch(batch, mesh))
                m = {k: float(v) for k, v in metrics.items()}
                step = int(state.step)
                if not math.isfinite(m["loss"]):
                    last = mngr.latest_step()
                    where = f"step {last} in {workdir / CHECKPOINT_DIR}" if last is not None else "none saved yet"
                    log.log({"type": "error", "epoch": epoch + 1, "step": step, "loss": m["loss"]})
                    raise TrainingError(
                        f"non-finite training loss ({m['loss']}) at epoch {epoch + 1}, step {step}; "
                        f"stopped (last good checkpoint: {where}); lower the learning rate or check the data"
                    )
                host = host.replace(batches_in_epoch=b + 1, data_position=it.state, epoch_done=False)
                state = state.replace(host=host)
                window.append(m)
                epoch_loss_sum += m["loss"]
                steps_this_call += 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{m['loss']:.4f}")
                if cfg.log_every_steps and step % cfg.log_every_steps == 0:
                    rec = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
                    rec.update(type="train", epoch=epoch + 1, step=step)
                    log.log(rec, "train", step)
                    window = []
                last_batch = b + 1 == spe
                if cfg.checkpoint_every_steps and step % cfg.checkpoint_every_steps == 0 and not last_batch:
                    save_checkpoint(mngr, state)
                if stop_after_steps is not None and steps_this_call >= stop_after_steps and not last_batch:
                    interrupted = True
                    break
            if bar is not None:
                bar.close()
            if interrupted:
                break

            # ---- end of epoch: dev evaluation, schedule, selection, checkpoint.
            train_time = time.time() - t_epoch
            dev = evaluate(eval_step, state, sources["dev"], cfg, mesh, asv=asv.get("dev"), progress=progress)
            if not math.isfinite(dev["loss"]):
                raise TrainingError(
                    f"non-finite dev loss at the end of epoch {epoch + 1}; stopped (last good checkpoint: step "
                    f"{mngr.latest_step()} in {workdir / CHECKPOINT_DIR}); lower the learning rate"
                )
            lr_used = get_learning_rate(state.opt_state)
            plateau = host.plateau
            if plateau is not None:
                old_lr = plateau.lr
                plateau = plateau_step(plateau, dev["loss"], cfg.plateau)
                if plateau.lr != old_lr:
                    state = state.replace(opt_state=set_learning_rate(state.opt_state, plateau.lr))
                    log.info(f"epoch {epoch + 1}: dev loss plateau, learning rate {old_lr:.3g} -> {plateau.lr:.3g}")
            step = int(state.step)
            es, improved = early_stop_update(host.early_stop, dev["eer"], epoch + 1, step)
            stop_reason = None
            if should_stop(es, cfg.early_stopping_patience):
                stop_reason = f"early stopping: no dev EER improvement in {es.epochs_without_improvement} epochs"
            elif epoch + 1 >= cfg.epochs:
                stop_reason = f"reached {cfg.epochs} epochs"
            host = host.replace(
                plateau=plateau,
                early_stop=es,
                batches_in_epoch=0,
                data_position={"epoch": epoch + 1, "step": 0},
                epoch_done=True,
                stopped_reason=stop_reason,
            )
            state = state.replace(epoch=state.epoch + 1, host=host)
            n_done = spe - start
            rec = {
                "type": "epoch",
                "epoch": epoch + 1,
                "step": step,
                "train_loss": epoch_loss_sum / max(n_done, 1) if n_done == spe else None,
                "dev_loss": dev["loss"],
                "dev_eer": 100.0 * dev["eer"],  # percent
                "dev_min_tdcf": dev.get("min_tdcf"),
                "lr": lr_used,
                "next_lr": get_learning_rate(state.opt_state),
                "best_dev_eer": None if es.best is None else 100.0 * es.best,
                "best_epoch": es.best_epoch,
                "improved": improved,
                "epoch_seconds": time.time() - t_epoch,
                "train_seconds": train_time,
            }
            if n_done != spe:
                # Resumed mid-epoch: the mean over the batches run in this call only.
                rec["train_loss"] = epoch_loss_sum / max(n_done, 1)
                rec["train_loss_partial"] = True
            log.log(rec, "epoch", epoch + 1)
            tdcf = f", min t-DCF {dev['min_tdcf']:.4f}" if "min_tdcf" in dev else ""
            log.info(
                f"epoch {epoch + 1}/{cfg.epochs}: train loss {rec['train_loss']:.4f}, dev loss {dev['loss']:.4f}, "
                f"dev EER {100 * dev['eer']:.2f}%{tdcf}, lr {lr_used:.3g}"
                + (" (best)" if improved else "")
                + f" [{rec['epoch_seconds']:.0f}s]"
            )
            save_checkpoint(mngr, state)
            if improved and jax.process_index() == 0:
                _save_best_model(workdir, state, cfg, epoch + 1, dev)
            if stop_reason:
                log.info(stop_reason)
    finally:
        mngr.wait_until_finished()

    if not interrupted and host.stopped_reason is None:
        if should_stop(host.early_stop, cfg.early_stopping_patience):
            host = host.replace(stopped_reason="early stopping (already reached)")
        elif int(state.epoch) >= cfg.epochs:
            host = host.replace(stopped_reason=f"reached {cfg.epochs} epochs")
    result = TrainResult(
        workdir=workdir,
        best_epoch=host.early_stop.best_epoch,
        best_step=host.early_stop.best_step,
        best_dev_eer=host.early_stop.best,
        epochs_done=int(state.epoch),
        steps_done=int(state.step),
        stopped_reason=host.stopped_reason,
        interrupted=interrupted,
        final_state=state,
    )
    if interrupted:
        mngr.close()
        log.close()
        return result

    # ---- the end: eval split once, with the best checkpoint.
    final_path = workdir / FINAL_FILE
    if final_eval and host.early_stop.best_step is not None:
        done = json.loads(final_path.read_text()) if final_path.exists() else None
        if done is not None and done.get("best_step") == host.early_stop.best_step:
            result.eval = done.get("eval")
            log.info(f"eval split already scored for the best checkpoint (see {final_path})")
        else:
            best = restore_checkpoint(mngr, state, host.early_stop.best_step)
            ev = evaluate(eval_step, best, sources["eval"], cfg, mesh, asv=asv.get("eval"), desc="eval", progress=progress)
            score_path = workdir / SCORES_DIR / "eval_scores.txt"
            _write_scores(score_path, ev, sources["eval"])
            result.eval = {
                "eer": ev["eer"],
                "min_tdcf": ev.get("min_tdcf"),
                "loss": ev["loss"],
                "num_trials": int(len(ev["scores"])),
                "score_file": str(score_path),
            }
            log.log({"type": "eval", "epoch": host.early_stop.best_epoch, "step": host.early_stop.best_step,
                     "eval_eer": 100.0 * ev["eer"], "eval_min_tdcf": ev.get("min_tdcf"), "eval_loss": ev["loss"]})
            if jax.process_index() == 0:
                _write_json(final_path, {
                    "best_epoch": host.early_stop.best_epoch,
                    "best_step": host.early_stop.best_step,
                    "best_dev_eer": host.early_stop.best,
                    "eval": result.eval,
                })
            tdcf = f", min t-DCF {ev['min_tdcf']:.4f}" if ev.get("min_tdcf") is not None else ""
            log.info(f"eval (best epoch {host.early_stop.best_epoch}): EER {100 * ev['eer']:.2f}%{tdcf}")

    if jax.process_index() == 0:
        curves = workdir / CURVES_FILE
        try:
            from rawnet2_jax.plots import plot_learning_curves

            recs = epoch_records(read_metrics(workdir / METRICS_FILE))
            if recs:
                plot_learning_curves(recs, curves, title=cfg.name)
        except Exception as e:  # a plot must never fail a finished run
            print(f"warning: learning curves not plotted: {e}", file=sys.stderr)
        log.info(f"checkpoints: {workdir / CHECKPOINT_DIR} (latest + best, step {host.early_stop.best_step})")
        log.info(f"best model:  {workdir / BEST_MODEL_DIR}  (load_pretrained)")
        log.info(f"metrics:     {workdir / METRICS_FILE}, TensorBoard {workdir / TB_DIR}")
        if curves.exists():
            log.info(f"plots:       {curves}")
        if result.eval:
            log.info(f"scores:      {result.eval['score_file']}")
    mngr.close()
    log.close()
    return result


def _save_best_model(workdir: Path, state: TrainState, cfg: TrainConfig, epoch: int, dev: dict[str, Any]) -> None:
    from rawnet2_jax.checkpoint import save_model

    # Replicated arrays: this host's copy (works on multi-host meshes too).
    variables = jax.tree.map(lambda a: np.asarray(a.addressable_data(0)), state.variables())
    variables = {c: variables.get(c, {}) for c in ("params", "batch_stats", "buffers")}
    save_model(
        workdir / BEST_MODEL_DIR,
        variables,
        cfg.model,
        {
            "source": "train",
            "train_config": cfg.name,
            "epoch": epoch,
            "step": int(state.step),
            "dev_eer": float(dev["eer"]),
            "dev_loss": float(dev["loss"]),
            "dev_min_tdcf": dev.get("min_tdcf"),
        },
    )


def _write_scores(path: Path, ev: dict[str, Any], source: Any) -> None:
    if jax.process_index() != 0 or not ev["utt_ids"]:
        return
    from rawnet2_jax.metrics import write_cm_scores

    attacks = _attacks_by_utt(source, ev["utt_ids"])
    write_cm_scores(
        path,
        ev["utt_ids"],
        [attacks.get(u, "-") for u in ev["utt_ids"]],
        [int(y) for y in ev["labels"]],
        [float(s) for s in ev["scores"]],
    )


def _attacks_by_utt(source: Any, utt_ids: list[str]) -> dict[str, str]:
    """Attack ids of the eval records (read once, at the end; records without one: '-')."""
    out: dict[str, str] = {}
    try:
        n = len(source)
        for i in range(n):
            rec = source[i]
            u = rec.get("utt_id", "")
            u = u.decode() if isinstance(u, bytes) else str(u)
            out[u] = _attack_of(rec)
    except Exception:
        return {}
    return out
