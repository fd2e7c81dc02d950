"""The training program: epochs, dev evaluation, model selection, checkpoints, logging.

``train(cfg, workdir, data_dir)`` runs (or resumes) one training run in ``workdir``::

    workdir/
      .lock                  held while a run is active (PID and host of the holder)
      config.json            the TrainConfig of the run (this command's)
      config_history.jsonl   the TrainConfigs that changed commands replaced, with their last step
      checkpoints/<step>/    orbax CheckpointManager: the LATEST and the BEST (by dev EER)
                             checkpoints (arrays: params, batch_stats, buffers, opt_state,
                             rng, step, epoch; JSON: plateau, early stopping, data position,
                             partial epoch sums)
      best_model/            the best model as a ``load_pretrained`` model dir
      metrics.jsonl          one JSON record per log interval / epoch / final eval
      tensorboard/           tensorboardX event files
      learning_curves.png    at the end
      scores/                the eval split's score file, per-attack tables, DET and
                             histogram plots (``rawnet2_jax.evaluate.evaluate_split``)
      final.json             dev/eval results of the best checkpoint

Semantics:

* the step loop never waits for the device: metrics stay on the device and are fetched
  every ``log_every_steps`` steps, at checkpoints and at the epoch end (a non-finite loss
  anywhere in the interval is caught then, naming the step); the state is donated; the
  next batch is already on the devices (:class:`train.prefetch.DevicePrefetcher`);
* each epoch ends with a dev evaluation (weighted-CE dev loss, EER, min t-DCF when ASV
  scores are given) through the same function as ``rawnet2-jax evaluate``
  (``rawnet2_jax.split_eval.score_split``); the plateau scheduler is stepped with the dev
  loss; model selection and early stopping use the dev EER only (strict improvement);
* checkpoints are written at every epoch end and every ``checkpoint_every_steps`` steps
  mid-epoch. A run killed at any point restarts from its newest valid checkpoint and,
  because the data order is a pure function of (seed, epoch, step) and the step RNG is
  ``fold_in(rng, step)``, ends with bit-identical parameters (CPU); ``metrics.jsonl`` is
  cut back to the restored step and epoch means cover the whole epoch;
* ``best_model/`` is written before the checkpoint that records it, and repaired from the
  recorded best checkpoint on resume, so the two always agree;
* SIGTERM or SIGINT: save a checkpoint, stop with a one-line message (re-run to resume);
* a non-finite training or dev loss stops the run with a one-line ``TrainingError``
  before anything is saved, so the last good checkpoint stays the latest;
* the eval split is scored ONCE at the end, with the best checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import signal
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from rawnet2_jax.errors import DataError, TrainingError, UserError, first_line
from rawnet2_jax.model import init_variables as fresh_variables  # `init_variables` names train()'s argument
from rawnet2_jax.processes import looks_like_lost_peer, note_peer_lost, peer_lost, preemption_service_on
from train import sharding as shd
from train.checkpointing import (  # noqa: F401  (make_checkpoint_manager: public via this module)
    CheckpointError,
    make_checkpoint_manager,
    restore_checkpoint,
    restore_newest_valid,
    save_checkpoint,
)
from train.configs import TrainConfig
from train.evaluation import (
    StateModel,
    agreed_metrics,
    evaluate_source,
    read_score_file,
    split_processes,
    weighted_ce_from_scores,
)
from train.fit import batch_spec, choose_remat, with_blocks_estimate
from train.guards import StopRequest, Stopped, WorkdirLock
from train.optim import early_stop_update, get_learning_rate, plateau_step, set_learning_rate, should_stop
from train.prefetch import DevicePrefetcher
from train.runlog import (  # noqa: F401  (epoch_records, read_metrics: public via this module)
    LOG_FILE, RunLogger, append_log_line, epoch_records, read_metrics, truncate_metrics,
)
from train.state import HostState, TrainState, create_train_state, initial_host_state
from train.step import build_model, make_eval_step, make_train_step, step_shardings

CHECKPOINT_DIR = "checkpoints"
BEST_MODEL_DIR = "best_model"
METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "learning_curves.png"
SCORES_DIR = "scores"
FINAL_FILE = "final.json"


def _fault_point(name: str, step: int) -> None:
    """No-op in production; fault-injection tests replace it to kill the process here."""


def no_host_sync():
    """The context of the steps between two log points: nothing may wait for the device.

    On accelerators JAX's device-to-host transfer guard turns any implicit fetch into an
    error; on CPU (where device memory is host memory) tests replace this function with a
    stricter guard that refuses every conversion of a device array to a host value.
    """
    return jax.transfer_guard_device_to_host("disallow")


# --------------------------------------------------------------------------- data


def load_sources(cfg: TrainConfig, data_dir: str | os.PathLike | None, splits=("train", "dev", "eval")) -> dict[str, Any]:
    """Random-access record sources of the TFDS builder ``cfg.dataset``."""
    from rawnet2_jax.data import data_source

    data_dir = os.path.expanduser("~/tensorflow_datasets") if data_dir is None else os.fspath(data_dir)
    if not os.path.isdir(data_dir):
        raise DataError(f"--data-dir {data_dir} does not exist; build the dataset there first "
                        f"(python -m rawnet2_jax.data build {cfg.dataset} --manual-dir DIR --data-dir {data_dir})")
    return {split: data_source(cfg.dataset, split, data_dir) for split in splits}


# --------------------------------------------------------------------------- compiled steps

_COMPILED: dict[Any, Any] = {}


def _compiled(cfg: TrainConfig, mesh, state: TrainState, log: RunLogger | None = None):
    """Model, donated train step with explicit shardings, eval step and init, built once per
    (what the compiled code depends on, global batch, mesh, state structure) in a process."""
    key_cfg = TrainConfig(
        name="", model=cfg.model, class_weights=cfg.class_weights, compute_dtype=cfg.compute_dtype,
        matmul_precision=cfg.matmul_precision, rawboost=cfg.rawboost, rawboost_config=cfg.rawboost_config,
    )
    key = (key_cfg.to_json(), cfg.batch_size, tuple(d.id for d in mesh.devices.flat), jax.tree.structure(state))
    if key not in _COMPILED:
        _COMPILED[key] = _build_steps(key_cfg, cfg.batch_size, mesh, state)
    model, train_step, eval_step, choice = _COMPILED[key]
    if choice is not None and log is not None:
        (log.warn if choice.blocks_too_big else log.info)(choice.message())
    return model, train_step, eval_step


def _build_steps(cfg: TrainConfig, global_batch: int, mesh, state: TrainState):
    """(model, train step, eval step, RematChoice or None); ``remat="auto"`` is decided here."""
    shardings = step_shardings(state, mesh)
    choice = None
    if cfg.model.remat == "auto":
        without = dataclasses.replace(cfg, model=cfg.model.replace(remat="none"))
        step = make_train_step(build_model(without), without, donate=True, shardings=shardings)
        spec = batch_spec(global_batch, cfg.model.num_samples, shd.batch_sharding(mesh))
        choice = choose_remat(step, state, spec, mesh.devices.flat[0])
        if choice.remat == "none":
            model = build_model(cfg)  # "auto" computes as "none"
            return model, step, make_eval_step(model, cfg), choice
        cfg = dataclasses.replace(cfg, model=cfg.model.replace(remat=choice.remat))
    model = build_model(cfg)
    step = make_train_step(model, cfg, donate=True, shardings=shardings)
    if choice is not None:  # the rematerialised step is compiled anyway: its estimate is free
        choice = with_blocks_estimate(choice, step, state, spec)
    return model, step, make_eval_step(model, cfg), choice


def _init_variables(cfg: TrainConfig) -> dict[str, Any]:
    return dict(fresh_variables(cfg.model, cfg.seed))  # the same for --bf16 and every computation field


# --------------------------------------------------------------------------- one run


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


@dataclasses.dataclass
class _Run:
    """Everything one training run holds; the pieces of :func:`train` take and update it."""

    cfg: TrainConfig
    workdir: Path
    log: RunLogger
    mesh: Any
    sources: Mapping[str, Any]
    asv_scores: Mapping[str, str]
    mngr: Any
    train_step: Any
    eval_step: Any
    state: TrainState
    host: HostState
    step: int  # = state.step, kept on the host so the loop never reads it from the device
    epoch: int  # = state.epoch
    steps_per_epoch: int
    progress: bool
    stop: StopRequest
    scores_dir: Path  # workdir/scores on the primary; a private scratch folder on the others
    steps_this_call: int = 0


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
    Raises:
      Stopped: after SIGTERM / SIGINT, once the checkpoint is saved.
    """
    logging.getLogger("absl").setLevel(logging.WARNING)
    if sources is None:  # before creating anything in workdir: a wrong --data-dir fails first
        sources = load_sources(cfg, data_dir, splits=("train", "dev", "eval") if final_eval else ("train", "dev"))
    workdir = Path(workdir).absolute()
    if workdir.exists() and not workdir.is_dir():
        raise UserError(f"workdir {workdir} is a file, not a directory; choose another --workdir")
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"workdir {workdir}: cannot create it ({e.strerror or e}); give a writable --workdir") from None
    if progress is None:
        progress = sys.stderr.isatty() and not quiet
    primary = shd.is_primary()
    # Several processes: JAX's preemption notifier owns SIGTERM (see _check_preemption);
    # SIGINT (Ctrl-C) is passed on to it as a SIGTERM, so that all save the same step too.
    signals = None if jax.process_count() == 1 else ()
    forward = signals == () and preemption_service_on()
    with WorkdirLock(workdir, enabled=primary), StopRequest(signals, forward=forward) as stop:
        run = None
        try:
            run = _start_run(cfg, workdir, sources, asv_scores, init_variables, progress, quiet, stop)
            interrupted = _train_epochs(run, stop_after_steps)
            result = _result(run, interrupted)
            if not interrupted:
                if final_eval:
                    result.eval = _final_eval(run)
                else:  # an eval scored earlier for this same best checkpoint is kept
                    done = _read_json(workdir / FINAL_FILE) or {}
                    _write_final(run, done.get("eval") if done.get("best_step") == run.host.early_stop.best_step
                                 else None)
                _write_outputs(run)
        except jax.errors.JaxRuntimeError as e:
            # The collectives (gloo, the coordination service) fail this way when a peer is
            # gone; anything else (out of memory, a bad program) stays what it is.
            if jax.process_count() == 1 or not looks_like_lost_peer(e):
                raise
            e = _peer_lost(run, e)
            _log_end(workdir, e, primary)
            raise e from None
        except UserError as e:  # Stopped too: the line the command prints ends train.log as well
            _log_end(workdir, e, primary)
            raise
        finally:
            if run is not None:
                if not peer_lost():  # closing waits for peers that are gone
                    run.mngr.close()
                run.log.close()
                if not primary:
                    shutil.rmtree(run.scores_dir, ignore_errors=True)
    return result


def _log_end(workdir: Path, e: UserError, primary: bool) -> None:
    """How the run ended (``python -m train`` prints the same line) at the end of train.log,
    so that a batch job's log says why it stopped."""
    if primary:
        try:
            append_log_line(workdir / LOG_FILE, f"{'stopped' if isinstance(e, Stopped) else 'error'}: {e}")
        except OSError:  # a full disk: the line is on stderr
            pass


def _start_run(cfg, workdir, sources, asv_scores, init_variables, progress, quiet, stop) -> _Run:
    """Config file, mesh, state (fresh or restored), compiled steps, checked best model."""
    mesh = shd.make_mesh()  # the batch checks first: a batch that cannot work leaves the workdir as it was
    shd.check_batch_size(cfg.batch_size, mesh)
    shd.check_batch_size(cfg.eval_batch_size, mesh, "eval batch size")
    spe = _steps_per_epoch(cfg, sources["train"])  # before compiling: a batch larger than the split fails at once
    log = RunLogger(workdir / METRICS_FILE, workdir / "tensorboard", quiet=quiet, progress_bar=progress)
    mngr = make_checkpoint_manager(workdir / CHECKPOINT_DIR)
    restarting = bool(mngr.all_steps())
    if restarting:
        _refuse_another_state_layout(cfg, workdir)  # before the config or a checkpoint is touched
    _write_config(cfg, workdir, log, mngr.latest_step())
    state = _first_state(cfg, mesh, init_variables, restarting)
    (model, train_step, eval_step), (mngr, state, host, step) = _compile_and_restore(cfg, mesh, mngr, state, log,
                                                                                     restarting)
    epoch = int(state.epoch)  # read once here; a host counter from then on
    if host is None:
        host, step = initial_host_state(cfg), 0
    else:
        where = (f"{host.batches_in_epoch} batches into epoch {epoch + 1}" if host.batches_in_epoch
                 else f"{epoch} epoch{'' if epoch == 1 else 's'} done")
        log.info(f"resumed from {workdir / CHECKPOINT_DIR / str(step)}: step {step}, {where}")
        truncate_metrics(workdir / METRICS_FILE, step, epoch)
    # Every process gets the whole score files; only the primary's are the run's.
    scores_dir = workdir / SCORES_DIR if shd.is_primary() else Path(tempfile.mkdtemp(prefix="rawnet2-scores-"))
    run = _Run(cfg, workdir, log, mesh, sources, dict(asv_scores or {}), mngr, train_step, eval_step,
               state, host.replace(stopped_reason=None), step, epoch, spe, progress, stop,
               scores_dir)
    if step:
        _repair_best_model(run)
    return run


def _compile_and_restore(cfg: TrainConfig, mesh, mngr, state: TrainState, log: RunLogger, restarting: bool):
    """(the compiled steps, :func:`restore_newest_valid`'s result). A restart of one process
    reads its checkpoint on a thread while the steps are traced and compiled: tak2021's first
    step starts 0.35-0.6 s sooner on 2 cores (README "Restarts load their compiled programs").
    Several processes do one after the other: each part is a sequence of collectives that
    every process must issue in the same order."""
    if not restarting or jax.process_count() > 1:
        steps = _compiled(cfg, mesh, state, log)
        return steps, restore_newest_valid(mngr, state, warn=log.warn)
    warnings: list[str] = []  # said from this thread, after the compile's own line
    try:
        with ThreadPoolExecutor(1, thread_name_prefix="restore") as pool:
            pending = pool.submit(restore_newest_valid, mngr, state, warnings.append)
            steps = _compiled(cfg, mesh, state, log)  # a failure here still waits for the read
            restored = pending.result()
    finally:
        for line in warnings:
            log.warn(line)
    return steps, restored


def _first_state(cfg: TrainConfig, mesh, init_variables, restarting: bool) -> TrainState:
    """The state the run starts from, replicated over ``mesh``. A restart's is abstract (shapes,
    dtypes, placements): its arrays come from the checkpoint, and a fresh init and optimizer
    state would cost 1-2 s of every restart for nothing."""
    if restarting and init_variables is None:
        abstract = _abstract_state(cfg)
        placed = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=shd.replicated(mesh),
                                                             weak_type=a.weak_type), abstract.arrays())
        return abstract.with_arrays(placed)
    variables = _init_variables(cfg) if init_variables is None else dict(init_variables)
    state = create_train_state(jax.tree.map(jnp.asarray, variables), cfg)
    return state.with_arrays(shd.replicate(state.arrays(), mesh))


def _abstract_state(cfg: TrainConfig) -> TrainState:
    """``cfg``'s fresh train state as shapes and dtypes (traced, not computed)."""
    return jax.eval_shape(lambda: create_train_state(_init_variables(cfg), cfg))


def _state_layout(cfg: TrainConfig) -> tuple:
    """The tree structure, shapes and dtypes of ``cfg``'s train state."""
    arrays = _abstract_state(cfg).arrays()
    return jax.tree.structure(arrays), [(a.shape, a.dtype) for a in jax.tree.leaves(arrays)]


def _changed_fields(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted names of the fields that differ between two config dicts."""
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _changed_fields(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}")
    return out


def _refuse_another_state_layout(cfg: TrainConfig, workdir: Path) -> None:
    """A restart whose settings give the state other shapes (a model field, the optimizer
    chain) could restore none of the run's checkpoints, which would then look damaged and be
    moved aside: refuse first, with the fields that changed. (Without a readable saved
    config there is nothing to compare.)"""
    try:
        old = TrainConfig.from_dict(json.loads((workdir / "config.json").read_text()))
    except (OSError, ValueError, TypeError):
        return
    if old == cfg or _state_layout(old) == _state_layout(cfg):
        return
    changed = ", ".join(_changed_fields(old.to_dict(), cfg.to_dict()))
    raise UserError(f"workdir {workdir} holds checkpoints of a model or optimizer with other shapes than this "
                    f"command's (settings that differ from the run's: {changed}); re-run with the run's settings "
                    "to resume it, or choose another --workdir")


CONFIG_HISTORY_FILE = "config_history.jsonl"


def _write_config(cfg: TrainConfig, workdir: Path, log: RunLogger, latest_step: int | None) -> None:
    """``config.json`` = this command's settings; the settings it replaces are appended to
    ``config_history.jsonl`` with the step they had trained to, so the record of what trained
    each part of a run survives a restart with other settings."""
    path = workdir / "config.json"
    new = json.loads(cfg.to_json())
    old = None
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except ValueError:
            old = {}
        if old != new:
            changed = ", ".join(_changed_fields(old, new))
            log.info(f"note: settings that differ from the run's saved in {path}: {changed}; using this command's")
    if jax.process_index() != 0:
        return
    if old and old != new:
        record = {"replaced_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "trained_to_step": latest_step, "config": old}
        with open(workdir / CONFIG_HISTORY_FILE, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
    _write_json(path, new)


def _steps_per_epoch(cfg: TrainConfig, source: Any) -> int:
    from rawnet2_jax.data.pipeline import steps_per_epoch

    spe = steps_per_epoch(len(source), cfg.batch_size)
    if spe == 0:
        raise DataError(f"the train split has {len(source)} utterances, fewer than one batch of {cfg.batch_size}; "
                        f"lower --batch-size (to at most {len(source)})")
    return min(spe, cfg.max_steps_per_epoch) if cfg.max_steps_per_epoch else spe


def _train_epochs(run: _Run, stop_after_steps: int | None) -> bool:
    """Epochs until done; True when the testing hook ``stop_after_steps`` cut the run short.

    The stop conditions are re-evaluated from the (possibly changed) config, so a finished
    run continues when --epochs or the early-stopping patience is raised.
    """
    cfg = run.cfg
    while run.epoch < cfg.epochs and not should_stop(run.host.early_stop, cfg.early_stopping_patience):
        t0 = time.time()
        if not _run_epoch(run, stop_after_steps):
            return True
        _end_epoch(run, t0, time.time() - t0)
    return False


# --------------------------------------------------------------------------- one epoch


class _MetricWindow:
    """Per-step metrics since the last fetch, still on the device (no sync to collect them)."""

    def __init__(self, first_step: int):
        self.first_step = first_step  # global step number of the first entry
        self.items: list[dict[str, jax.Array]] = []

    def fetch(self) -> dict[str, np.ndarray]:
        """One transfer for the whole window: ``{name: (n,) float64}``."""
        host = jax.device_get(self.items)
        return {k: np.asarray([float(m[k]) for m in host]) for k in host[0]} if host else {}


def _run_epoch(run: _Run, stop_after_steps: int | None) -> bool:
    """The rest of epoch ``run.epoch``; False when the testing hook cut it short."""
    from rawnet2_jax.data.pipeline import train_batches

    cfg, spe, start = run.cfg, run.steps_per_epoch, run.host.batches_in_epoch
    host_batches = train_batches(run.sources["train"], cfg.model, cfg.batch_size, cfg.shuffle_seed,
                                 start_epoch=run.epoch, start_step=start, num_epochs=1, codec_augment=cfg.codec_augment)
    if cfg.max_steps_per_epoch:
        host_batches = _first(host_batches, spe - start)
    window = _MetricWindow(run.step + 1)
    run.log.start_epoch(run.epoch, cfg.epochs, start, spe, cfg.batch_size)
    with DevicePrefetcher(host_batches, lambda b: shd.shard_batch(b, run.mesh)) as batches:
        for b in range(start, spe):
            with no_host_sync():
                run.state, metrics = run.train_step(run.state, next(batches))
                window.items.append(metrics)
            run.step += 1
            run.steps_this_call += 1
            _check_preemption(run)
            run.log.step_done()
            last = b + 1 == spe
            checkpoint_due = bool(cfg.checkpoint_every_steps) and run.step % cfg.checkpoint_every_steps == 0
            cut = stop_after_steps is not None and run.steps_this_call >= stop_after_steps and not last
            log_due = bool(cfg.log_every_steps) and run.step % cfg.log_every_steps == 0
            if log_due or checkpoint_due or last or cut or run.stop.requested or run.log.progress_due():
                _flush(run, window, b + 1, log_record=log_due)
                window = _MetricWindow(run.step + 1)
            if run.stop.requested and not last:
                _save(run)
                _raise_stopped(run)
            if checkpoint_due and not last:
                _save(run)
            if cut:
                return False
    run.log.end_epoch()
    return True


def _check_preemption(run: _Run) -> None:
    """Multi-process: has the step where every process saves after a SIGTERM come?

    JAX's preemption notifier catches SIGTERM on any process and the processes agree on a
    step past every one's current step; each one calls this once per step (a local check,
    no device sync) and all of them see True at that same step.
    """
    if jax.process_count() == 1 or run.stop.requested or not preemption_service_on():
        return
    from jax.experimental import multihost_utils
    if multihost_utils.reached_preemption_sync_point(run.step):
        run.stop.note(run.stop.forwarded or signal.SIGTERM)


def _first(it, n: int):
    for _ in range(n):
        yield next(it)
    close = getattr(it, "close", None)
    if close is not None:
        close()


def _flush(run: _Run, window: _MetricWindow, batches_done: int, *, log_record: bool) -> None:
    """Fetch the window's metrics (the one sync), check them, add them to the epoch sums."""
    values = window.fetch()
    if not values:
        return
    bad = np.flatnonzero(~np.isfinite(values["loss"]))
    if len(bad):
        _raise_non_finite(run, window.first_step + int(bad[0]), window.first_step, values["loss"][bad[0]])
    sums = dict(run.host.epoch_sums)
    for k, v in values.items():
        sums[k] = sums.get(k, 0.0) + float(np.sum(v))
    sums["n"] = sums.get("n", 0.0) + len(values["loss"])
    run.host = run.host.replace(batches_in_epoch=batches_done, epoch_done=False, epoch_sums=sums,
                                data_position={"epoch": run.epoch, "step": batches_done})
    means = {k: float(np.mean(v)) for k, v in values.items()}
    if log_record:
        run.log.log({**means, "type": "train", "epoch": run.epoch + 1, "step": run.step}, "train", run.step)
    run.log.progress(run.step, means["loss"])


def _raise_non_finite(run: _Run, bad_step: int, first_step: int, value: float) -> None:
    last = run.mngr.latest_step()
    where = f"step {last} in {run.workdir / CHECKPOINT_DIR}" if last is not None else "none saved yet"
    run.log.log({"type": "error", "epoch": run.epoch + 1, "step": bad_step, "loss": value})
    span = f"step {bad_step}" + (f" (checked steps {first_step}-{run.step})" if run.step > first_step else "")
    raise TrainingError(
        f"non-finite training loss ({value}) at epoch {run.epoch + 1}, {span}; stopped (last good "
        f"checkpoint: {where}); lower the learning rate or check the data"
    )


def _save(run: _Run) -> None:
    save_checkpoint(run.mngr, run.state, run.host, run.step)
    _fault_point("after_checkpoint", run.step)


def _peer_lost(run: _Run | None, e: Exception) -> TrainingError:
    """A collective failed because another process is gone: one line, then a quick exit
    (``rawnet2_jax.processes.note_peer_lost`` makes the process skip JAX's shutdown barrier). ``run`` is
    None when it happened while the run was being set up."""
    note_peer_lost()
    if run is None:
        when, where = "while the run was set up", "the latest checkpoint"
    else:
        last = run.mngr.latest_step()
        when = f"at step {run.step}"
        where = f"checkpoint {last}" if last is not None else "the start (no checkpoint yet)"
    return TrainingError(
        f"process {jax.process_index()}: another process stopped answering {when} "
        f"({first_line(e)}); check the other processes' logs and hosts (crash, kill, preemption, "
        f"network), then re-run the same command on every process to resume from {where}"
    )


def _raise_stopped(run: _Run) -> None:
    name = run.stop.name()
    raise Stopped(
        f"{name} received: saved checkpoint {run.step} in {run.workdir / CHECKPOINT_DIR}; "
        "re-run the same command to resume", run.stop.signum,
    )


# --------------------------------------------------------------------------- end of epoch


def _end_epoch(run: _Run, t0: float, train_seconds: float) -> None:
    """Dev evaluation, schedule, selection, best model, checkpoint, epoch record."""
    cfg, epoch = run.cfg, run.epoch
    dev = _dev_metrics(run)
    lr_used = get_learning_rate(run.state.opt_state)
    plateau = _next_plateau(run, dev["loss"])
    es, improved = early_stop_update(run.host.early_stop, dev["eer"], epoch + 1, run.step)
    stop_reason = _stop_reason(cfg, es, epoch + 1)
    sums = run.host.epoch_sums
    run.host = run.host.replace(plateau=plateau, early_stop=es, batches_in_epoch=0, epoch_done=True,
                                data_position={"epoch": epoch + 1, "step": 0}, stopped_reason=stop_reason,
                                epoch_sums={})
    run.state = run.state.replace(epoch=run.state.epoch + 1)
    run.epoch += 1
    rec = {
        "type": "epoch", "epoch": epoch + 1, "step": run.step,
        "train_loss": sums["loss"] / sums["n"], "train_accuracy": sums["accuracy"] / sums["n"],
        "dev_loss": dev["loss"], "dev_eer": 100.0 * dev["eer"], "dev_min_tdcf": dev.get("min_tdcf"),
        "lr": lr_used, "next_lr": get_learning_rate(run.state.opt_state),
        "best_dev_eer": None if es.best is None else 100.0 * es.best, "best_epoch": es.best_epoch,
        "improved": improved, "epoch_seconds": time.time() - t0, "train_seconds": train_seconds,
    }
    run.log.log(rec, "epoch", epoch + 1)
    _log_epoch_line(run, rec, dev)
    # The best model first, then the checkpoint that records it: a kill in between leaves
    # an older checkpoint whose best step disagrees with best_model/, repaired on resume.
    if improved:
        _fault_point("before_best_model", run.step)
        _save_best_model(run, run.state, epoch + 1, dev)
        _fault_point("after_best_model", run.step)
    _save(run)
    if stop_reason:
        run.log.info(stop_reason)
    if run.stop.requested and run.epoch < cfg.epochs and not should_stop(es, cfg.early_stopping_patience):
        _raise_stopped(run)


def _dev_metrics(run: _Run) -> dict:
    """The dev split's loss / EER (/ min t-DCF), the same on every process; a non-finite loss stops the run."""
    dev = agreed_metrics(evaluate_source(run, run.state, "dev", run.asv_scores.get("dev")))
    if not math.isfinite(dev["loss"]):
        raise TrainingError(
            f"non-finite dev loss at the end of epoch {run.epoch + 1}; stopped (last good checkpoint: step "
            f"{run.mngr.latest_step()} in {run.workdir / CHECKPOINT_DIR}); lower the learning rate"
        )
    return dev


def _next_plateau(run: _Run, dev_loss: float):
    """The plateau schedule after this epoch's dev loss (None without one); a lowered
    learning rate goes into the optimizer state at once, for the next epoch."""
    before = run.host.plateau
    if before is None:
        return None
    plateau = plateau_step(before, dev_loss, run.cfg.plateau)
    if plateau.lr != before.lr:
        run.state = run.state.replace(opt_state=set_learning_rate(run.state.opt_state, plateau.lr))
        run.log.info(f"epoch {run.epoch + 1}: dev loss plateau, learning rate {before.lr:.3g} -> {plateau.lr:.3g}")
    return plateau


def _stop_reason(cfg: TrainConfig, es, epochs_done: int) -> str | None:
    """Why training ends after this epoch (early stopping, the last epoch), or None."""
    if should_stop(es, cfg.early_stopping_patience):
        return f"early stopping: no dev EER improvement in {es.epochs_without_improvement} epochs"
    if epochs_done >= cfg.epochs:
        return f"reached {cfg.epochs} epochs"
    return None


def _log_epoch_line(run: _Run, rec: dict, dev: dict) -> None:
    tdcf = f", min t-DCF {dev['min_tdcf']:.4f}" if dev.get("min_tdcf") is not None else ""
    run.log.info(
        f"epoch {rec['epoch']}/{run.cfg.epochs}: train loss {rec['train_loss']:.4f}, dev loss {dev['loss']:.4f}, "
        f"dev EER {100 * dev['eer']:.2f}%{tdcf}, lr {rec['lr']:.3g}" + (" (best)" if rec["improved"] else "")
        + f" [{rec['epoch_seconds']:.0f}s]"
    )


# --------------------------------------------------------------------------- evaluation
# (scoring a state on a split: train/evaluation.py)


def _final_eval(run: _Run) -> dict[str, Any] | None:
    """The eval split, once, with the best checkpoint (skipped when final.json has it)."""
    best_step = run.host.early_stop.best_step
    if best_step is None:
        return None
    final_path = run.workdir / FINAL_FILE
    done = _read_json(final_path)
    if _primary_says(done is not None and done.get("best_step") == best_step and done.get("eval") is not None):
        run.log.info(f"eval split already scored for the best checkpoint (see {final_path})")
        return (done or {}).get("eval")
    from rawnet2_jax.evaluate import evaluate_split

    best, _ = restore_checkpoint(run.mngr, run.state, best_step)
    outputs = evaluate_split(
        StateModel(run, best), dataset=run.cfg.dataset, split="eval", data_dir="",
        out_dir=run.scores_dir, asv_scores=run.asv_scores.get("eval"), source=run.sources["eval"],
        batch_size=run.cfg.eval_batch_size, progress=run.progress, processes=split_processes(), plots=shd.is_primary(),
        extra_summary={"best_step": best_step, "best_epoch": run.host.early_stop.best_epoch},
    )
    report = outputs.report
    cm = read_score_file(outputs.score_file)
    ev = {"eer": report.eer, "min_tdcf": report.min_tdcf,
          "loss": weighted_ce_from_scores(cm[1], cm[0], run.cfg.class_weights),
          "num_trials": int(len(cm[1])), "score_file": str(outputs.score_file)}
    run.log.log({"type": "eval", "epoch": run.host.early_stop.best_epoch, "step": best_step,
                 "eval_eer": 100.0 * ev["eer"], "eval_min_tdcf": ev["min_tdcf"], "eval_loss": ev["loss"]},
                "eval", best_step)  # TensorBoard too, at the best checkpoint's step
    _write_final(run, ev)
    tdcf = f", min t-DCF {ev['min_tdcf']:.4f}" if ev.get("min_tdcf") is not None else ""
    run.log.info(f"eval (best epoch {run.host.early_stop.best_epoch}): EER {100 * ev['eer']:.2f}%{tdcf}")
    return ev


def _write_final(run: _Run, ev: dict[str, Any] | None) -> None:
    """``final.json``: the best checkpoint's epoch, step and dev EER, and its eval results
    (null with ``final_eval=False``: the model selection is there for scripts all the same)."""
    best_step = run.host.early_stop.best_step
    if jax.process_index() == 0 and best_step is not None:
        _write_json(run.workdir / FINAL_FILE, {"best_epoch": run.host.early_stop.best_epoch, "best_step": best_step,
                                               "best_dev_eer": run.host.early_stop.best, "eval": ev})


# --------------------------------------------------------------------------- outputs


def _result(run: _Run, interrupted: bool) -> TrainResult:
    host = run.host
    if not interrupted and host.stopped_reason is None:
        if should_stop(host.early_stop, run.cfg.early_stopping_patience):
            host = host.replace(stopped_reason="early stopping (already reached)")
        elif run.epoch >= run.cfg.epochs:
            host = host.replace(stopped_reason=f"reached {run.cfg.epochs} epochs")
    run.host = host
    return TrainResult(
        workdir=run.workdir, best_epoch=host.early_stop.best_epoch, best_step=host.early_stop.best_step,
        best_dev_eer=host.early_stop.best, epochs_done=run.epoch, steps_done=run.step,
        stopped_reason=host.stopped_reason, interrupted=interrupted, final_state=run.state,
    )


def _save_best_model(run: _Run, state: TrainState, epoch: int, dev: Mapping[str, Any]) -> None:
    if jax.process_index() != 0:
        return
    from rawnet2_jax.checkpoint import save_model

    # Replicated arrays: this host's copy (works on multi-host meshes too).
    variables = jax.tree.map(lambda a: np.asarray(a.addressable_data(0)), state.variables())
    variables = {c: variables.get(c, {}) for c in ("params", "batch_stats", "buffers")}
    meta = {"source": "train", "train_config": run.cfg.name, "epoch": epoch, "step": int(state.step),
            "dev_eer": float(dev["eer"]), "dev_loss": float(dev["loss"]), "dev_min_tdcf": dev.get("min_tdcf")}
    try:
        save_model(run.workdir / BEST_MODEL_DIR, variables, run.cfg.model, meta)
    except OSError as e:
        raise CheckpointError(f"could not write {run.workdir / BEST_MODEL_DIR} ({e.strerror or e}); "
                              "fix that and re-run the same command to resume") from None


def _repair_best_model(run: _Run) -> None:
    """Make ``best_model/`` hold the recorded best step (a kill can leave it behind or ahead)."""
    best_step = run.host.early_stop.best_step
    meta = _read_json(run.workdir / BEST_MODEL_DIR / "metadata.json") or {}
    # The primary decides (it writes best_model/); the others join the checkpoint restore.
    if not _primary_says(best_step is not None and meta.get("step") != best_step):
        return
    if best_step not in run.mngr.all_steps():
        run.log.warn(f"warning: best checkpoint {best_step} is gone; {BEST_MODEL_DIR}/ not repaired")
        return
    best, _ = restore_checkpoint(run.mngr, run.state, best_step)
    dev = {"eer": run.host.early_stop.best, "loss": float("nan")}
    run.log.warn(f"note: {BEST_MODEL_DIR}/ held step {meta.get('step')}, the run's best is step {best_step}: rewritten")
    _save_best_model(run, best, run.host.early_stop.best_epoch, dev)


def _primary_says(flag: bool) -> bool:
    """The primary's ``flag`` on every process (a decision that leads to a collective)."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils

    return bool(np.asarray(multihost_utils.broadcast_one_to_all(np.int32(flag))))


def _write_outputs(run: _Run) -> None:
    if jax.process_index() != 0:
        return
    curves = run.workdir / CURVES_FILE
    try:
        from rawnet2_jax.plots import plot_learning_curves

        recs = epoch_records(read_metrics(run.workdir / METRICS_FILE))
        if recs:
            plot_learning_curves(recs, curves, title=run.cfg.name)
    except Exception as e:  # a plot must never fail a finished run
        run.log.warn(f"warning: learning curves not plotted: {e}")
    log = run.log
    log.info(f"checkpoints: {run.workdir / CHECKPOINT_DIR} (latest: step {run.mngr.latest_step()}, best: step "
             f"{run.host.early_stop.best_step})")
    log.info(f"best model:  {run.workdir / BEST_MODEL_DIR}  (load_pretrained)")
    log.info(f"metrics:     {run.workdir / METRICS_FILE}, TensorBoard {run.workdir / 'tensorboard'}")
    if curves.exists():
        log.info(f"plots:       {curves}")
    if (run.workdir / SCORES_DIR).is_dir():
        log.info(f"scores:      {run.workdir / SCORES_DIR}")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_json(path: Path, obj: Any) -> None:
    from train.runlog import jsonable

    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=jsonable) + "\n")
    os.replace(tmp, path)
