"""``python -m train --config PRESET [--workdir DIR] [--data-dir DIR] [overrides]``.

Examples::

    # the demo: synthetic corpus -> TFDS -> train (minutes on a laptop CPU)
    python -m rawnet2_jax.data demo demo_out
    python -m rawnet2_jax.data build asvspoof2019_la --manual-dir demo_out --data-dir demo_out/tfds
    python -m train --config demo --data-dir demo_out/tfds --asv-scores demo_out --workdir runs/demo

    # the seed recipe on ASVspoof 2019 LA
    python -m train --config caa_plateau --data-dir ~/tfds --asv-scores /data/LA --workdir runs/caa

Re-running the same command in the same workdir resumes from the latest checkpoint.

What WORKDIR holds:
    config.json          the run's settings, this command's
    config_history.jsonl the settings each changed command replaced, with the step they trained to
    train.log            every line the run printed, ending with how it stopped
    metrics.jsonl        one JSON record per log interval, epoch (dev loss, EER, min t-DCF), eval
    tensorboard/         the same records for TensorBoard
    checkpoints/<step>/  the latest and the best (by dev EER) checkpoints, for resuming
    best_model/          the best model: rawnet2-jax score/evaluate --checkpoint, load_pretrained
    final.json           best epoch, step, dev EER and the eval split's results (null with --no-final-eval)
    scores/              dev and eval score files; the eval's per-attack tables, DET and histogram PNGs
    learning_curves.png  train and dev loss, dev EER (and min t-DCF), learning rate per epoch
    compile_cache/       compiled programs, so that a restart starts sooner
"""

from __future__ import annotations

import argparse
import os
import sys

from rawnet2_jax.cliutil import (
    OneLineParser, nonneg_float, nonneg_int, positive_float, positive_int, quiet_store_shutdown, unit_interval,
)
from rawnet2_jax.errors import UserError
from train.guards import Stopped


def build_parser() -> argparse.ArgumentParser:
    from train.configs import PRESETS

    ap = OneLineParser(
        prog="python -m train",
        description="Train RawNet2 (JAX/Flax) with a named recipe; resumes from WORKDIR if it holds checkpoints.",
        epilog=__doc__.split("Examples::", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--config", required=True, choices=sorted(PRESETS),
                    help="training preset: caa_plateau (the seed recipe, caa_rawnet2 model), tak2021 (the "
                         "official RawNet2 recipe), tak2021_rawboost (the same with RawBoost 5), demo (a small "
                         "model for the synthetic demo corpus, minutes on a CPU)")
    ap.add_argument("--workdir", help="run directory (default runs/<preset>)")
    ap.add_argument("--data-dir", help="TFDS data dir holding the built dataset (default: TFDS's, "
                                         "~/tensorflow_datasets)")
    ap.add_argument(
        "--asv-scores",
        help="the ASVspoof 2019 ASV score files for min t-DCF: a directory holding them, their "
             "ASVspoof2019_LA_asv_scores folder or the LA/ folder above it (default: no t-DCF)",
    )
    ap.add_argument("--init-from", help="start from a model dir (load_pretrained) instead of a fresh init")
    o = ap.add_argument_group("overrides", "each replaces the preset's value (unset: the preset's)")
    _add_recipe_overrides(o)
    _add_compute_overrides(o)
    _add_augmentation_overrides(o)
    o.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="any TrainConfig / ModelConfig field, dotted and type-checked, e.g. --set "
                        "model.fms_mode=mul --set plateau.patience=5 (applied after the flags above)")
    ap.add_argument("--no-final-eval", action="store_true", help="skip scoring the eval split at the end")
    ap.add_argument("--distributed", action="store_true", help="call jax.distributed.initialize (multi-host)")
    ap.add_argument("--quiet", action="store_true", help="print warnings and errors only (train.log keeps every line)")
    return ap


def _add_recipe_overrides(o) -> None:
    """The optimisation recipe and its bookkeeping: epochs, batches, learning rate, stopping, seeds."""
    o.add_argument("--epochs", type=positive_int, help="epochs in all (a resumed run trains up to this many)")
    o.add_argument("--batch-size", type=positive_int, help="global batch size (all devices, all hosts)")
    o.add_argument("--eval-batch-size", type=positive_int, help="global batch size of the dev / eval scoring")
    o.add_argument("--lr", "--learning-rate", dest="learning_rate", type=positive_float, help="initial learning rate (Adam)")
    o.add_argument("--weight-decay", type=nonneg_float, help="coupled L2 added to the gradients, as torch's Adam")
    o.add_argument("--grad-clip", dest="grad_clip_norm", type=nonneg_float, help="global-norm clip; 0 disables clipping")
    o.add_argument("--class-weights", type=positive_float, nargs=2, metavar=("SPOOF", "BONAFIDE"),
                   help="cross-entropy weights of the two classes")
    o.add_argument("--early-stopping", dest="early_stopping_patience", type=nonneg_int, help="epochs without dev-EER improvement; 0 disables")
    o.add_argument("--plateau-patience", type=nonneg_int,
                   help="epochs without dev-loss improvement before the learning rate drops (ReduceLROnPlateau)")
    o.add_argument("--seed", type=nonneg_int, help="seed of the model init and the step keys")
    o.add_argument("--shuffle-seed", type=nonneg_int, help="seed of the training order")
    o.add_argument("--checkpoint-every", dest="checkpoint_every_steps", type=nonneg_int, help="steps; 0 = epoch ends only")
    o.add_argument("--max-steps-per-epoch", type=positive_int, help="cut every epoch to this many steps (quick trials)")
    o.add_argument("--log-every", dest="log_every_steps", type=positive_int, help="steps between metric fetches / train records")


def _add_compute_overrides(o) -> None:
    """How the steps compute (never what the model is)."""
    o.add_argument("--bf16", action="store_true",
                   help="compute in bfloat16; parameters, optimizer state and BatchNorm statistics stay float32")
    o.add_argument("--matmul-precision", choices=("default", "high", "highest"),
                   help="matmul/conv precision in the steps: default = the backend's (TF32 on recent NVIDIA "
                        "GPUs, bf16 passes on TPU), highest = full float32")


def _add_augmentation_overrides(o) -> None:
    """Data augmentation: RawBoost on the device, codecs in the input pipeline."""
    o.add_argument("--rawboost", type=int, choices=range(0, 9), metavar="ALGO",
                   help="RawBoost augmentation of training batches on the device: 0 off, 1 LnL, 2 ISD, 3 SSI, "
                        "4 = 1+2+3, 5 = 1+2, 6 = 1+3, 7 = 2+3, 8 = 1 and 2 in parallel")
    o.add_argument("--codec-prob", type=unit_interval, metavar="P",
                   help="codec/channel augmentation of training utterances in the input pipeline: each one "
                        "goes through a codec round trip (MP3, Vorbis, Opus, GSM, G.711, G.721, 8 kHz "
                        "telephone band) with probability P; 0 = off (default)")
    o.add_argument("--codec-cache", metavar="DIR",
                   help="keep the codec encoders' output in DIR and decode it again on later epochs (the "
                        "same rows; 2-80x less CPU per MP3/Vorbis/Opus/GSM/G.721 round trip once warm; "
                        "~250 KB per 4 s utterance over every codec)")


def config_from_args(args: argparse.Namespace):
    import dataclasses

    from train.configs import get_train_config

    cfg = get_train_config(args.config)
    changes = {}
    for name in (
        "epochs", "batch_size", "eval_batch_size", "learning_rate", "weight_decay", "seed", "shuffle_seed",
        "checkpoint_every_steps", "max_steps_per_epoch", "log_every_steps",
    ):
        v = getattr(args, name)
        if v is not None:
            changes[name] = v
    if args.grad_clip_norm is not None:
        changes["grad_clip_norm"] = args.grad_clip_norm or None
    if args.early_stopping_patience is not None:
        changes["early_stopping_patience"] = args.early_stopping_patience or None
    if args.class_weights is not None:
        changes["class_weights"] = tuple(args.class_weights)
    if args.plateau_patience is not None:
        if cfg.plateau is None:
            from train.configs import PlateauConfig

            changes["plateau"] = PlateauConfig(patience=args.plateau_patience)
        else:
            changes["plateau"] = dataclasses.replace(cfg.plateau, patience=args.plateau_patience)
    if args.bf16:
        changes["compute_dtype"] = "bfloat16"
    if args.matmul_precision is not None:
        changes["matmul_precision"] = args.matmul_precision
    if args.rawboost is not None:
        changes["rawboost"] = args.rawboost
    if args.codec_prob is not None:
        changes["codec_augment"] = dataclasses.replace(cfg.codec_augment, prob=args.codec_prob)
    if args.codec_cache is not None:
        changes["codec_augment"] = dataclasses.replace(changes.get("codec_augment", cfg.codec_augment),
                                                       cache_dir=_writable_dir(args.codec_cache, "--codec-cache"))
    try:
        cfg = cfg.replace(**changes) if changes else cfg
    except ValueError as e:
        raise UserError(f"bad override: {e}") from None
    return cfg.with_overrides(args.overrides) if args.overrides else cfg


def _writable_dir(path: str, flag: str) -> str:
    import os

    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise UserError(f"{flag} {path}: cannot create it ({e.strerror}); give a writable directory") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {path}: not writable; give a writable directory")
    return os.path.abspath(path)


def find_asv_scores(path: str | None) -> dict[str, str]:
    if not path:
        return {}
    from pathlib import Path

    p = Path(path)
    names = {s: f"ASVspoof2019.LA.asv.{s}.gi.trl.scores.txt" for s in ("dev", "eval")}
    for cand in (p, p / "ASVspoof2019_LA_asv_scores", p / "LA" / "ASVspoof2019_LA_asv_scores"):
        found = {s: str(cand / n) for s, n in names.items() if (cand / n).is_file()}
        if found:
            for s in sorted(set(names) - set(found)):  # said at the start, not noticed in final.json
                print(f"warning: no {names[s]} in {cand}: the {s} split gets no min t-DCF", file=sys.stderr)
            return found
    raise UserError(f"no ASVspoof2019.LA.asv.{{dev,eval}}.gi.trl.scores.txt under {path}; pass the folder holding LA/")


def run(cfg, workdir, **train_kwargs) -> int:
    """``train.loop.train`` as a command: one line and an exit code for every way it ends."""
    try:
        from train.loop import train

        result = train(cfg, workdir, **train_kwargs)
    except Stopped as e:
        print(f"stopped: {e}", file=sys.stderr)
        return 128 + e.signum
    except UserError as e:
        from rawnet2_jax.processes import report_failure

        report_failure(str(e))  # several processes: the others stop with this line at once
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; re-run the same command to resume from the latest checkpoint", file=sys.stderr)
        return 130
    if result.best_dev_eer is not None and not train_kwargs.get("quiet"):
        print(f"best dev EER {100 * result.best_dev_eer:.2f}% at epoch {result.best_epoch}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_store_shutdown()
    try:
        from rawnet2_jax.processes import maybe_initialize_distributed

        maybe_initialize_distributed(args.distributed)
        cfg = config_from_args(args)
        workdir = args.workdir or os.path.join("runs", cfg.name)
        _use_run_cache(workdir, args.quiet)  # before anything compiles (the --init-from load)
        init = _init_variables(args, cfg) if args.init_from else None
        asv = find_asv_scores(args.asv_scores)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return run(cfg, workdir, data_dir=args.data_dir, asv_scores=asv, init_variables=init, quiet=args.quiet,
               final_eval=not args.no_final_eval)


def _use_run_cache(workdir: str, quiet: bool) -> None:
    from train.compile_cache import use_run_cache

    use_run_cache(workdir, info=lambda line: None if quiet else print(line, file=sys.stderr))


def _init_variables(args, cfg):
    from rawnet2_jax.checkpoint import load_pretrained
    from rawnet2_jax.overrides import override_text

    pre = load_pretrained(args.init_from)
    # name and how things are computed (sinc_conv_impl, remat) do not change the model
    theirs, ours = pre.config.architecture(), cfg.model.architecture()
    if theirs != ours:
        diff = [k for k in sorted(set(theirs) | set(ours)) if theirs.get(k) != ours.get(k)]
        shown = ", ".join(f"{k} {theirs.get(k)!r} there, {ours.get(k)!r} here" for k in diff[:4])
        sets = " ".join(f"--set model.{k}={override_text(theirs.get(k))}" for k in diff[:4])
        raise UserError(f"{args.init_from} holds another network than this run's model {cfg.model.name!r} ({shown}"
                        f"{', ...' if len(diff) > 4 else ''}); match it with {sets}, or start without --init-from")
    return pre.variables



if __name__ == "__main__":
    sys.exit(main())
