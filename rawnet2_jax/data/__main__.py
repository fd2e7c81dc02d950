"""Command line: make the demo corpus, build TFDS datasets.

    python -m rawnet2_jax.data demo OUT_DIR [--seed 0] [--num-train 400] ...
    python -m rawnet2_jax.data build asvspoof2019_la --manual-dir DIR --data-dir DATA_DIR
    python -m rawnet2_jax.data build in_the_wild --manual-dir DIR --data-dir DATA_DIR
    python -m rawnet2_jax.data build asvspoof2021_la|asvspoof2021_df --manual-dir DIR --data-dir DATA_DIR
"""

from __future__ import annotations

import argparse
import errno
import os
import sys

from rawnet2_jax.cliutil import (
    OneLineParser, float_range, fraction, interrupt_status, nonneg_int, one_line_warnings, positive_int,
    sigterm_as_interrupt,
)
from rawnet2_jax.data import DATASETS, build_dataset
from rawnet2_jax.errors import UserError
from rawnet2_jax.fsutil import os_error_line

_EPILOG = """examples:
  # 1. a small synthetic corpus in the ASVspoof 2019 LA layout (seconds on a laptop)
  python -m rawnet2_jax.data demo demo_out/corpus
  # 2. turn it (or the real corpus) into a TFDS dataset (array_record, no TensorFlow)
  python -m rawnet2_jax.data build asvspoof2019_la --manual-dir demo_out/corpus --data-dir demo_out/tfds
  # 3. read it back with random access
  python -c "import tensorflow_datasets as tfds, rawnet2_jax.data.asvspoof2019_la; \\
      print(len(tfds.data_source('asvspoof2019_la', split='train', data_dir='demo_out/tfds')))"

real corpora:
  asvspoof2019_la  LA.zip from https://datashare.ed.ac.uk/handle/10283/3336; --manual-dir is the
                   directory holding the extracted LA/ folder (about 7.6 GB of PCM; build ~1 h on 2 cores)
  in_the_wild      release_in_the_wild.zip from https://deepfake-total.com/in_the_wild;
                   --manual-dir holds release_in_the_wild/ (meta.csv + wav); resampled to 16 kHz
  asvspoof2021_la  ASVspoof2021_LA_eval.tar.gz (zenodo.org/record/4837263) + LA-keys-full.tar.gz
                   (asvspoof.org); --manual-dir holds ASVspoof2021_LA_eval/flac/ and keys/LA/...
  asvspoof2021_df  ASVspoof2021_DF_eval_part00..03.tar.gz (zenodo.org/record/4835108) + DF-keys-full.tar.gz;
                   --manual-dir holds ASVspoof2021_DF_eval/flac/ (or the four _partNN folders) and keys/DF/...
"""


def build_parser() -> argparse.ArgumentParser:
    ap = OneLineParser(
        prog="python -m rawnet2_jax.data",
        description="Datasets for RawNet2: synthetic demo corpus and TFDS builders (no TensorFlow needed).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = ap.add_subparsers(dest="cmd", required=True, parser_class=OneLineParser)

    d = sub.add_parser(
        "demo",
        help="write a small synthetic corpus in the exact ASVspoof 2019 LA layout",
        description="Write OUT_DIR/LA/... : CM protocols, 16 kHz FLAC, ASV score files. Speech-like "
        "bona fide audio and synthetic vocoder-like attacks (A01-A04 train/dev, A07/A08/A16 eval only). "
        "Deterministic from --seed.",
    )
    d.add_argument("out_dir", help="output directory (LA/ is created inside)")
    d.add_argument("--seed", type=nonneg_int, default=0)
    d.add_argument("--num-train", type=positive_int, default=400, help="utterances in train (default 400)")
    d.add_argument("--num-dev", type=positive_int, default=300, help="utterances in dev (default 300)")
    d.add_argument("--num-eval", type=positive_int, default=400, help="utterances in eval (default 400)")
    d.add_argument("--seconds", type=float_range(0, 600, lo_open=True), default=2.0,
                   help="mean clip length in seconds, up to 600 (default 2)")
    d.add_argument("--bonafide-fraction", type=fraction, default=0.25,
                   help="share of bona fide utterances, 0 < F < 1 (default 0.25)")
    d.add_argument("--eval-channel", choices=("clean", "codecs"), default="clean",
                   help="codecs: pass eval utterance i through channel i mod K (clean, MP3 low/high, Vorbis, "
                        "Opus, GSM, mu-law, A-law, G.721, 8 kHz telephone band), listed in "
                        "LA/ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.eval.channel.txt (default clean)")

    b = sub.add_parser(
        "build",
        help="build a TFDS dataset (array_record) from an extracted corpus",
        description="Build a dataset into DATA_DIR/<name>/1.0.0 (array_record; "
        "audio as 16 kHz int16 PCM). Reuses a finished build; an interrupted one restarts cleanly.",
    )
    b.add_argument("name", choices=list(DATASETS))
    b.add_argument("--manual-dir", required=True,
                   help="directory holding LA/ (or release_in_the_wild/, or ASVspoof2021_*_eval/ + keys/)")
    b.add_argument("--data-dir", required=True, help="TFDS data dir to write to (read later with the same path)")
    b.add_argument("--overwrite", action="store_true", help="rebuild even if the dataset exists")
    return ap


def _demo(args: argparse.Namespace) -> None:
    from rawnet2_jax.data.demo import DemoConfig, make_demo_corpus

    cfg = DemoConfig(num_train=args.num_train, num_dev=args.num_dev, num_eval=args.num_eval, seconds=args.seconds,
                     bonafide_fraction=args.bonafide_fraction, seed=args.seed, eval_channel=args.eval_channel)
    print(f"wrote {make_demo_corpus(args.out_dir, cfg)}")


def _build(args: argparse.Namespace) -> None:
    builder = build_dataset(args.name, args.manual_dir, args.data_dir, overwrite=args.overwrite)
    for name, split in builder.info.splits.items():
        print(f"{args.name}/{name}: {split.num_examples} utterances, {split.num_shards} shards")
    print(f"data_dir: {args.data_dir}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    where = args.out_dir if args.cmd == "demo" else args.data_dir
    try:
        with sigterm_as_interrupt(), one_line_warnings():  # e.g. a silent file, said once, above the bar
            if args.cmd == "demo":
                _demo(args)
            else:
                _build(args)
    except UserError as e:
        return _fail(str(e))
    except OSError as e:  # a read-only or full output location
        return _fail(os_error_line(e, f"writing {where}"))
    except RuntimeError as e:  # array_record and libsndfile say a failed write this way
        text = " ".join(str(e).split())[:300] or type(e).__name__
        if "No space left" in text:
            return _fail(os_error_line(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), f"writing {where}"))
        return _fail(f"writing {where} failed ({type(e).__name__}: {text})")
    except KeyboardInterrupt as e:
        rc, what = interrupt_status(e)
        _fail(f"{what}: nothing finished was changed; re-run the same command (what this one left is removed then)")
        return rc
    return 0


def _fail(line: str) -> int:
    print(f"error: {line}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
