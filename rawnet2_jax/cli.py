"""``rawnet2-jax``: score audio files, evaluate on a dataset split, compute metrics.

Thin layer over :mod:`rawnet2_jax.scoring`, :mod:`rawnet2_jax.evaluate` and :mod:`rawnet2_jax.metrics`: parse
arguments, call the library, print. User errors are one ``error:`` line on stderr, exit 1.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile

from rawnet2_jax.cliutil import (
    interrupt_status, nonneg_float, positive_float, positive_int, quiet_broken_pipe, sigterm_as_interrupt,
)

EPILOG = """\
score convention: log-odds = logit[1] - logit[0], HIGHER = MORE BONA FIDE (index 0 = spoof,
1 = bona fide); spoof probability = softmax[0]. Official score files hold the log-odds.

commands:
  score     score audio files or folders with a model directory
  evaluate  run a model on an ASVspoof 2019 LA / In-the-Wild split, write score file,
            per-attack EER / min t-DCF tables, DET and histogram PNGs, summary.json
  metrics   EER / min t-DCF of an existing score file (= python -m rawnet2_jax.metrics)
  benchmark every built evaluation set (2019 LA, 2021 LA, 2021 DF, In-the-Wild), one summary
  augment   RawBoost data augmentation of one file: K WAVs + spectrogram PNG (hear/see it)

Run `rawnet2-jax COMMAND --help` for each command's options.
"""

SCORE_HELP = """\
Score audio files with an anti-spoofing model. PATH may be files (any format libsndfile
reads: WAV, FLAC, OGG, MP3, ...; any sample rate; stereo is averaged to mono) or folders
(searched recursively for audio extensions). Audio is resampled to the model's rate; by
default the first num_samples (4 s at 16 kHz for the shipped presets) are scored, padded
like in training when shorter; --windows averages the log-odds over windows covering the
whole file.

Output per file: P(spoof) = softmax[0] and log-odds = logit[1] - logit[0] (> 0 leans bona
fide; 0 is not a calibrated threshold). A file that cannot be scored is reported on one
line on stderr and the others are still scored; the exit status is then 1. Without
--windows only the first window's frames are decoded (a 3-hour file costs its first
seconds); --max-seconds is still checked from the header.

Rows are written (and flushed) as each file is scored, in input order: to stdout, or with
--output to a new file beside it (.NAME.tmp-...), opened before anything else and renamed to
--output when the run ends, so an existing --output is replaced only by this run's rows. After
Ctrl-C or SIGTERM the finished rows stay (JSON is closed with "interrupted": true), stderr
says how many, and the exit status is 130 (143 for SIGTERM).

Degenerate audio is refused (one line, counted as failed): shorter than the model's
minimum input (config.min_num_samples, before padding), constant, DC only, below -90 dBFS,
peaks over 2 (full scale is 1: e.g. int16 values in a float file), or a WAV whose header
promises more audio than the file holds. --allow-degenerate scores
it anyway and fills the row's "warning" column (--allow-silent: only all-zero files).

examples:
  rawnet2-jax score --checkpoint models/caa_rawnet2 clip.wav other.flac
  rawnet2-jax score --checkpoint runs/demo recordings/ --windows --csv -o scores.csv
"""

EVALUATE_HELP = """\
Run a model on a built TFDS split (see `python -m rawnet2_jax.data build ...`) and write
into --out: scores_DATASET_SPLIT.txt (official CM format `utt_id attack_id key score`,
score = logit[1] - logit[0]), per_attack.txt / per_attack.csv, det.png,
det_per_attack.png, score_histogram.png and summary.json (EER in %, min t-DCF, per attack).

For the min t-DCF give --asv-scores: the organisers' ASV score file OF THE SAME SPLIT,
LA/ASVspoof2019_LA_asv_scores/ASVspoof2019.LA.asv.{dev,eval}.gi.trl.scores.txt.

ASVspoof 2021 (--dataset asvspoof2021_la|asvspoof2021_df, built with `python -m
rawnet2_jax.data build`): scores every trial into scores_DATASET.txt (the organisers'
`trial score` format), appending as it goes: a run stopped part-way continues from there
with the same command (--restart to start over). Then the eval package's tables for
--subset (eval/progress/hidden): tables_SUBSET.txt/.csv/.json, eer_by_condition_SUBSET.png,
summary_SUBSET.json. The keys come from the data dir (copied at build time).

Several processes or hosts (RAWNET2_DISTRIBUTED=1 and the JAX_* variables on every
process, as for training): each scores only its rows of every batch, process 0 writes --out
and prints the tables; --batch-size must divide by the number of processes (x devices).

example:
  rawnet2-jax evaluate --checkpoint models/caa_rawnet2 --split eval --data-dir ~/tfds \\
      --asv-scores LA/ASVspoof2019_LA_asv_scores/ASVspoof2019.LA.asv.eval.gi.trl.scores.txt \\
      --out results/eval
  rawnet2-jax evaluate --checkpoint models/caa_rawnet2 --dataset asvspoof2021_la --data-dir ~/tfds \\
      --out results/la2021
"""


BENCHMARK_HELP = """\
Evaluate one model on every evaluation set that is built in --data-dir: ASVspoof 2019 LA
eval, ASVspoof 2021 LA eval, ASVspoof 2021 DF eval, In-the-Wild. Writes into --out one
folder per dataset (score file, tables) and benchmark.md / benchmark.json (pooled EER, min
t-DCF where defined, worst condition) and benchmark.png (pooled EER per dataset). Datasets
not built are listed as skipped with the command that builds them. A run stopped part-way
continues where it was when started again (--restart scores anew). Across processes
(RAWNET2_DISTRIBUTED=1) like `evaluate`: each scores its shard, process 0 writes --out.

example:
  rawnet2-jax benchmark --checkpoint models/caa_rawnet2 --data-dir ~/tfds --out results/benchmark
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of usage + message
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="rawnet2-jax",
        description="RawNet2 speech anti-spoofing (JAX/Flax).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    _add_score_command(sub)
    _add_evaluate_command(sub)
    _add_benchmark_command(sub)
    # Listed for --help; `metrics` / `augment` arguments are parsed by their own CLIs.
    sub.add_parser("metrics", help="EER / min t-DCF of a score file", add_help=False)
    sub.add_parser("augment", help="RawBoost one audio file (WAVs + spectrogram PNG)", add_help=False)
    return p


def _add_score_command(sub) -> None:
    s = sub.add_parser("score", help="score audio files or folders", description=SCORE_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("--checkpoint", required=True, metavar="DIR",
                   help="model directory (converted or trained; a training workdir uses its best model)")
    s.add_argument("paths", nargs="+", metavar="PATH", help="audio files and/or folders")
    s.add_argument("--windows", action="store_true",
                   help="average the log-odds over windows covering the whole file")
    s.add_argument("--hop", type=positive_float, default=None, metavar="SECONDS",
                   help="window hop with --windows (default: window length, no overlap)")
    s.add_argument("--batch-size", type=positive_int, default=32, metavar="N", help="rows per model call (default 32)")
    s.add_argument("--allow-silent", action="store_true",
                   help="score all-zero (silent) files instead of reporting them as failed")
    s.add_argument("--allow-degenerate", action="store_true",
                   help="score degenerate audio (too short, constant, DC only, below -90 dBFS, truncated "
                        "WAV) with a warning column instead of reporting it as failed")
    s.add_argument("--max-seconds", type=nonneg_float, default=600.0, metavar="S",
                   help="skip (as failed) files longer than this (default 600; 0 = no limit)")
    fmt = s.add_mutually_exclusive_group()
    fmt.add_argument("--csv", action="store_const", dest="format", const="csv", help="CSV on stdout")
    fmt.add_argument("--json", action="store_const", dest="format", const="json", help="one JSON object on stdout")
    fmt.add_argument("--jsonl", action="store_const", dest="format", const="jsonl",
                     help="JSON lines on stdout: one object per file")
    s.add_argument("--output", "-o", metavar="FILE", help="write the table / CSV / JSON here instead of stdout")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.set_defaults(format="table")


def _add_evaluate_command(sub) -> None:
    e = sub.add_parser("evaluate", help="evaluate on a dataset split", description=EVALUATE_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    e.add_argument("--checkpoint", required=True, metavar="DIR", help="model directory")
    e.add_argument("--dataset", default="asvspoof2019_la",
                   choices=("asvspoof2019_la", "in_the_wild", "asvspoof2021_la", "asvspoof2021_df"),
                   help="the built TFDS dataset to score (default asvspoof2019_la)")
    e.add_argument("--split", help="dev or eval (train also works; in_the_wild: eval; 2021: eval, the default)")
    e.add_argument("--subset", choices=("eval", "progress", "hidden"), default="eval",
                   help="ASVspoof 2021: the subset of the organisers' tables (default eval)")
    e.add_argument("--restart", action="store_true",
                   help="ASVspoof 2021: score anew instead of continuing an existing score file")
    e.add_argument("--data-dir", required=True, metavar="DIR", help="TFDS data directory the dataset was built in")
    e.add_argument("--asv-scores", metavar="FILE", help="organisers' ASV scores of the same split (for min t-DCF)")
    e.add_argument("--t-dcf", dest="t_dcf", choices=("2019", "2021"), default=None,
                   help="t-DCF formulation of the min t-DCF that --asv-scores gives (default 2019)")
    e.add_argument("--out", required=True, metavar="DIR", help="output directory")
    e.add_argument("--batch-size", type=positive_int, default=32, metavar="N", help="batch size (default 32)")
    e.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_benchmark_command(sub) -> None:
    bm = sub.add_parser("benchmark", help="evaluate on every built dataset, one summary",
                        description=BENCHMARK_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    bm.add_argument("--checkpoint", required=True, metavar="DIR", help="model directory")
    bm.add_argument("--data-dir", required=True, metavar="DIR", help="TFDS data directory")
    bm.add_argument("--out", default="benchmark", metavar="DIR", help="output directory (default ./benchmark)")
    bm.add_argument("--asv-scores-2019", metavar="FILE",
                    help="ASVspoof2019.LA.asv.eval.gi.trl.scores.txt, for the 2019 LA min t-DCF")
    bm.add_argument("--batch-size", type=positive_int, default=32, metavar="N", help="batch size (default 32)")
    bm.add_argument("--restart", action="store_true", help="score anew instead of continuing earlier score files")
    bm.add_argument("--no-progress", action="store_true", help="no progress output")


def _err(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)


def _load_model(directory: str):
    from rawnet2_jax import load_pretrained

    return load_pretrained(directory)


def _open_output(path: str | None, inputs: list[str]):
    """``(stream, scratch)``: stdout, or a new file beside ``--output`` (``scratch``) opened
    before any work, which :func:`_close_output` renames to it. An existing ``--output`` is
    thus replaced only by rows of this run, never emptied by one that fails first."""
    from rawnet2_jax.errors import UserError
    from rawnet2_jax.fsutil import os_error_line, remove_stale_temps, temp_prefix

    if not path:
        return sys.stdout, None
    if os.path.exists(path) and any(os.path.exists(p) and os.path.samefile(p, path) for p in inputs):
        raise UserError(f"--output {path} is also an input file; write the scores to another file")
    parent, name = os.path.split(os.path.abspath(path))
    if os.path.isdir(path):
        raise UserError(f"--output {path} is a folder; give a file name")
    remove_stale_temps(parent, name)
    try:
        fd, scratch = tempfile.mkstemp(prefix=temp_prefix(name), dir=parent)
        return open(fd, "w", encoding="utf-8", newline=""), scratch
    except OSError as e:
        raise UserError(os_error_line(e, f"opening --output {path}").replace(" failed:", ":", 1)) from None


def _close_output(out, scratch: str | None, path: str | None, keep: bool) -> None:
    """Close the ``--output`` scratch file and rename it to ``path`` (``keep``) or delete it."""
    if scratch is None:
        return
    out.close()
    if keep:
        os.replace(scratch, path)
    else:
        os.unlink(scratch)  # nothing was scored: the old --output (if any) stays as it was


def cmd_score(args) -> int:
    from rawnet2_jax.score_output import ScoreWriter
    from rawnet2_jax.scoring import score_files

    if args.hop is not None and not args.windows:
        _err("--hop sets the hop of --windows; add --windows (without it one window of each file is scored)")
        return 1
    out, scratch = _open_output(args.output, args.paths)
    writer = ScoreWriter(out, args.format)
    total = 0

    def on_start(paths):
        nonlocal total
        total = len(paths)
        writer.start(paths)

    try:
        model = _load_model(args.checkpoint)
        try:
            score_files(
                model,
                args.paths,
                windows=args.windows,
                hop_seconds=args.hop,
                batch_size=args.batch_size,
                max_seconds=args.max_seconds or None,
                progress=not args.no_progress,
                on_error=lambda fs: _err(fs.error),
                allow_silent=args.allow_silent,
                allow_degenerate=args.allow_degenerate,
                on_start=on_start,
                on_result=writer.write,
            )
        except KeyboardInterrupt as e:
            writer.close(interrupted=True)
            rc, what = interrupt_status(e)
            done = len(writer.rows)
            where = args.output or "stdout"
            _err(f"{what} after {done} of {total} files ({sum(r.ok for r in writer.rows)} scored); "
                 f"their rows are in {where}; score the other files to finish")
            return rc
        writer.close()
    finally:
        _close_output(out, scratch, args.output, keep=writer.started)
    failed = sum(not r.ok for r in writer.rows)
    if failed:
        print(f"{failed} of {len(writer.rows)} files failed", file=sys.stderr)
    return 1 if failed else 0


def cmd_evaluate(args) -> int:
    from rawnet2_jax.evaluate import evaluate_split

    if args.dataset.startswith("asvspoof2021"):
        return cmd_evaluate_2021(args)
    if args.split is None:
        _err(f"--split is required for {args.dataset} (dev or eval)")
        return 1
    if args.t_dcf is not None and not args.asv_scores:
        _err("--t-dcf chooses how the min t-DCF is computed from --asv-scores; give the ASV score file too")
        return 1
    procs = _processes()
    model = _load_model(args.checkpoint)
    with _out_dir(args.out, procs, replace=True) as out_dir:
        outputs = evaluate_split(
            model,
            dataset=args.dataset,
            split=args.split,
            data_dir=args.data_dir,
            out_dir=out_dir,
            asv_scores=args.asv_scores,
            tdcf_version=args.t_dcf or "2019",
            batch_size=args.batch_size,
            progress=not args.no_progress,
            extra_summary={"checkpoint": os.path.abspath(args.checkpoint)},
            processes=procs,
            score_only=not _primary(procs),
        )
    if outputs is None:
        return 0
    for w in outputs.report.warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(outputs.report.format_table())
    print(f"\nwrote {os.path.join(args.out, outputs.score_file.name)}, {outputs.summary_json.name}, "
          f"per_attack.txt/.csv and PNGs in {args.out}")
    return 0


def _processes():
    """With ``RAWNET2_DISTRIBUTED=1`` (set up as for training, README "Several processes or
    hosts"): start ``jax.distributed``; each process then scores its shard of every split
    with its local devices and process 0 writes the files. None in a one-process run."""
    from rawnet2_jax import processes

    if not processes.distributed_requested():
        return None
    processes.maybe_initialize_distributed()
    return processes.Processes.current()


def _primary(procs) -> bool:
    return procs is None or procs.primary


@contextlib.contextmanager
def _out_dir(out: str, procs, *, replace: bool = False):
    """``--out`` on the primary, locked (a second run on it stops with one line); a scratch
    folder, removed afterwards, on the other processes (their copies of the score files are
    needed while scoring, never kept).

    ``replace``: the run writes into a hidden folder inside ``--out`` whose files replace the
    old ones only when it is complete, so a failed, killed or interrupted re-run leaves the
    earlier results as they were (for commands that do not resume)."""
    if _primary(procs):
        from rawnet2_jax.fsutil import DirLock, make_out_dir, make_temp_dir, remove_stale_temps

        target = make_out_dir(out)
        with DirLock(target, ".lock", subject=f"--out {target}", unwritable_fix="give a writable --out",
                     busy_fix="wait for that run to end (or stop it), or choose another --out"):
            if not replace:
                yield out
                return
            remove_stale_temps(target, "results")
            scratch = make_temp_dir(target, "results")
            try:
                yield scratch
                for f in sorted(scratch.iterdir()):
                    os.replace(f, target / f.name)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
        return
    from rawnet2_jax.processes import cleanup_on_abrupt_exit

    scratch = tempfile.mkdtemp(prefix=f"rawnet2-process{procs.index}-")
    remove = lambda: shutil.rmtree(scratch, ignore_errors=True)  # noqa: E731
    try:
        with cleanup_on_abrupt_exit(remove):
            yield scratch
    finally:
        remove()


def _run_id(checkpoint: str) -> str:
    """What a resumed score file must have been written by: the model's contents (a digest of its
    manifest, so a copied or moved model continues), else its path (models saved without one)."""
    import hashlib

    path = os.path.abspath(checkpoint)
    for m in (os.path.join(path, "manifest.json"), os.path.join(path, "best_model", "manifest.json")):
        if os.path.isfile(m):
            with open(m, "rb") as f:
                return f"the model with manifest sha256 {hashlib.sha256(f.read()).hexdigest()[:16]}"
    return path


def cmd_evaluate_2021(args) -> int:
    from rawnet2_jax.evaluate2021 import evaluate_asvspoof2021

    if args.split not in (None, "eval"):
        _err(f"{args.dataset} has one split, eval (choose the table subset with --subset)")
        return 1
    if args.asv_scores:
        _err(f"--asv-scores is for ASVspoof 2019; {args.dataset} takes its ASV scores from the keys it was built with")
        return 1
    procs = _processes()
    model = _load_model(args.checkpoint)
    with _out_dir(args.out, procs) as out_dir:
        o = evaluate_asvspoof2021(
            model, dataset=args.dataset, data_dir=args.data_dir, out_dir=out_dir,
            subset=args.subset, batch_size=args.batch_size, resume=not args.restart, progress=not args.no_progress,
            extra_summary={"checkpoint": os.path.abspath(args.checkpoint)}, run_id=_run_id(args.checkpoint),
            processes=procs, score_only=not _primary(procs),
        )
    if o is None:
        return 0
    for w in o.tables.warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(o.tables.format_text())
    resumed = f" (continued after {o.num_resumed:,} scored trials)" if o.num_resumed else ""
    print(f"\nwrote {o.score_file.name}{resumed}, {o.tables_txt.name}/.csv/.json, {o.heatmap_png.name} and "
          f"{o.summary_json.name} in {args.out}")
    return 0


def cmd_benchmark(args) -> int:
    from rawnet2_jax.benchmark import format_markdown, run_benchmark

    procs = _processes()
    model = _load_model(args.checkpoint)
    with _out_dir(args.out, procs) as out_dir:
        results = run_benchmark(
            model, args.data_dir, out_dir, batch_size=args.batch_size,
            resume=not args.restart, progress=not args.no_progress, asv_scores_2019=args.asv_scores_2019,
            extra={"checkpoint": os.path.abspath(args.checkpoint)}, run_id=_run_id(args.checkpoint),
            processes=procs,
        )
    if results is None:
        return 0
    print(format_markdown(results))
    print(f"\nwrote benchmark.md, benchmark.json, benchmark.png in {args.out}")
    return 0


@quiet_broken_pipe
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "metrics":
        from rawnet2_jax.metrics.__main__ import main as metrics_main

        return metrics_main(argv[1:], prog="rawnet2-jax metrics")
    if argv and argv[0] == "augment":
        from rawnet2_jax.augment_cli import main as augment_main  # imports JAX: only for this command

        return augment_main(argv[1:], prog="rawnet2-jax augment")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    from rawnet2_jax.errors import UserError, first_line, is_out_of_memory

    try:
        with sigterm_as_interrupt():  # a scheduler's SIGTERM ends it like Ctrl-C: what is done is kept, said
            if args.command == "score":
                return cmd_score(args)
            if args.command == "benchmark":
                return cmd_benchmark(args)
            return cmd_evaluate(args)
    except UserError as e:
        from rawnet2_jax.processes import report_failure

        report_failure(first_line(e))  # several processes: the others stop with this line at once
        _err(first_line(e))
        return 1
    except OSError as e:  # a full disk while writing the results
        from rawnet2_jax.fsutil import os_error_line

        where = getattr(args, "output", None) or getattr(args, "out", None)
        _err(os_error_line(e, f"writing {where}" if where else args.command))
        return 1
    except Exception as e:  # XLA's out of memory (jax.errors.JaxRuntimeError; jax is not imported here)
        if not is_out_of_memory(e):
            raise
        _err(f"out of memory at --batch-size {getattr(args, 'batch_size', '?')} "
             f"({' '.join(str(e).split())[:160]}); lower --batch-size")
        return 1
    except KeyboardInterrupt as e:
        rc, what = interrupt_status(e)
        _err(f"{what}; re-run the same command (an evaluation's earlier results in --out are kept until a run "
             "completes; benchmark and ASVspoof 2021 evaluations continue where they stopped)")
        return rc


if __name__ == "__main__":
    sys.exit(main())
