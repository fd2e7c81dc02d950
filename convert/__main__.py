"""``python -m convert SRC.pt OUT_DIR [--preset NAME] [--verify] [--check-bn-stats AUDIO...]``."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from rawnet2_jax.cliutil import OneLineParser, nonneg_float, positive_int, quiet_store_shutdown

DESCRIPTION = """\
Convert a PyTorch RawNet2 checkpoint into a Flax model directory that
rawnet2_jax.load_pretrained() reads.

The checkpoint is opened with torch.load(weights_only=True): a file that carries
pickled code is refused, never run. Accepted: a bare state dict
(torch.save(model.state_dict(), ...)), a training checkpoint with the weights under
"model_state_dict" (other keys are ignored), and keys with a "module." prefix.
bfloat16 / float16 tensors are widened to float32 (exactly); a checkpoint with NaN/Inf
weights is refused (naming the tensors) unless --allow-nonfinite.

Layouts and presets (chosen from the tensor names and shapes unless --preset is given):
  seed      the improved RawNet2 best.pt                       -> caa_rawnet2
  official  Tak et al. 2021 (eurecom rawnet2-antispoofing)     -> tak2021
            ASVspoof 2021 LA/DF baseline (first_bn of 20)      -> asvspoof2021_baseline

OUT_DIR gets config.json, metadata.json and variables/ (orbax). It appears only when
everything succeeded; an existing non-empty OUT_DIR is kept unless --force.
"""

EPILOG = """\
examples:
  python -m convert best.pt models/caa_rawnet2
  python -m convert best.pt models/caa_rawnet2 --verify
  python -m convert pre_trained_DF_RawNet2.pth models/df --preset asvspoof2021_baseline
  python -m convert best.pt /tmp/scratch --check-bn-stats a.flac b.flac c.flac
  python -m convert best.pt models/caa_mul --set fms_mode=mul --force

then, in Python:
  from rawnet2_jax import load_pretrained
  m = load_pretrained("models/caa_rawnet2")
  m.logits(audio)   # float32 (B, T) at 16 kHz -> (B, 2): index 0 spoof, 1 bona fide
  m.scores(audio)   # logit[1] - logit[0], higher = more bona fide

--check-bn-stats: the seed checkpoint's forward pass is not public; a few points
(sinc_padding, sinc_abs/sinc_pool, front_activation, sinc_min_low_hz/_band_hz, fms_mode,
fms_position) are documented guesses. The running statistics stored in its BatchNorm
layers were collected on the true forward pass, so running candidate settings over real
speech and comparing the observed activation statistics with the stored ones ranks them.
Use a few (3-10) bona fide speech files; apply the winner with --set FIELD=VALUE.
pre_gru_activation sits after the last BatchNorm and cannot be ranked this way.

exit status: 0 success, 1 bad input (one line on stderr, nothing written),
2 bad command line, 3 --verify found differences above the tolerance (nothing written).
"""


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="python -m convert",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("src", metavar="SRC.pt", help="PyTorch checkpoint (.pt / .pth)")
    p.add_argument("out_dir", metavar="OUT_DIR", help="model directory to create")
    p.add_argument("--preset", metavar="NAME",
                   help="model preset (caa_rawnet2, tak2021, asvspoof2021_baseline); "
                        "default: detected from the checkpoint")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="change one ModelConfig field of the preset, e.g. --set fms_mode=mul, "
                        "read as the field's type (true/false, numbers, a,b for tuples, none "
                        "where allowed; repeatable)")
    p.add_argument("--allow-nonfinite", action="store_true",
                   help="convert tensors holding NaN/Inf values instead of refusing the checkpoint")
    p.add_argument("--force", action="store_true",
                   help="replace an existing non-empty OUT_DIR (only once the new one is complete)")
    g = p.add_argument_group("verification (needs the torch reference modules)")
    g.add_argument("--verify", action="store_true",
                   help="run the torch reference module and the converted Flax model on the same "
                        "audio; print max abs / rel difference of the logits and every "
                        "intermediate; exit 3 (and write nothing) above --tolerance")
    g.add_argument("--verify-audio", metavar="FILE",
                   help="audio file for --verify (default: deterministic synthetic speech)")
    g.add_argument("--verify-samples", type=positive_int, metavar="N",
                   help="input length for --verify (default: the preset's num_samples)")
    g.add_argument("--tolerance", type=nonneg_float, default=None, metavar="REL",
                   help="max allowed max|torch - flax| / max|torch| per tensor (default 1e-4)")
    b = p.add_argument_group("BatchNorm statistics check (seed ambiguities)")
    b.add_argument("--check-bn-stats", nargs="+", metavar="AUDIO", default=[],
                   help="speech files; rank candidate forward settings by how well they reproduce "
                        "the stored BatchNorm running statistics")
    b.add_argument("--bn-stats-samples", type=positive_int, metavar="N",
                   help="cut/pad each file to N samples (default: the preset's num_samples)")
    b.add_argument("--bn-stats-batch", type=positive_int, metavar="B",
                   help="batch size of the training run that produced the statistics (default 32); "
                        "files are run in batches of B, as in training")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_store_shutdown()  # a full disk during the orbax write: our one line, not tensorstore's tracebacks
    from convert.converter import convert_checkpoint
    from convert.verify import DEFAULT_TOLERANCE
    from rawnet2_jax.errors import UserError

    tol = DEFAULT_TOLERANCE if args.tolerance is None else args.tolerance
    try:
        result = convert_checkpoint(
            args.src,
            args.out_dir,
            preset=args.preset,
            overrides=args.overrides,
            force=args.force,
            do_verify=args.verify,
            verify_audio=args.verify_audio,
            verify_samples=args.verify_samples,
            tolerance=tol,
            bn_stats_audio=args.check_bn_stats,
            bn_stats_samples=args.bn_stats_samples,
            bn_stats_batch=args.bn_stats_batch,
            allow_nonfinite=args.allow_nonfinite,
        )
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # the output location is read-only or full
        from rawnet2_jax.fsutil import os_error_line

        print(f"error: {os_error_line(e, f'writing {args.out_dir}')}", file=sys.stderr)
        return 1
    except ImportError as e:
        print(f"error: {e}; install the converter's extras: pip install -e '.[torch]'", file=sys.stderr)
        return 1
    if result.verify_ok is False:
        print(
            f"error: verification failed: torch and Flax differ by more than {tol:g} (see table); "
            f"nothing written to {args.out_dir}",
            file=sys.stderr,
        )
        return 3
    print(f"wrote {result.out_dir} (preset {result.config.name!r}); "
          f"load it with rawnet2_jax.load_pretrained({str(result.out_dir)!r})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
