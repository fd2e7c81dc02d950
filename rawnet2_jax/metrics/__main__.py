"""``python -m rawnet2_jax.metrics CM_SCORES [--asv-scores FILE] [--t-dcf 2019|2021] [--json]``."""

from __future__ import annotations

import argparse
import json
import sys

DESCRIPTION = """\
Compute the EER and (with the organisers' ASV scores) the tandem min t-DCF of a
countermeasure score file, pooled and per attack, as the ASVspoof evaluation defines them.

CM_SCORES is the official 4-column score file, one trial per line:

    utt_id attack_id key score        e.g.  LA_E_2834763 A11 spoof -7.2
                                            LA_E_1665632 -   bonafide 3.9

attack_id is '-' for bona fide; key is 'bonafide' or 'spoof'. Score convention: HIGHER
SCORE = MORE BONA FIDE (e.g. the log-odds logit[1] - logit[0], or log P(bona fide)).
A file with the opposite sign gives an EER near 100 %.
"""

EPILOG = """\
ASV scores: ASVspoof2019.LA.asv.{dev,eval}.gi.trl.scores.txt from the corpus
(lines 'source key score', key target/nontarget/spoof). Use the dev file for dev CM scores
and the eval file for eval CM scores; the ASV operating point is the EER threshold of
target vs nontarget. --t-dcf 2019 is the ASVspoof 2019 ("legacy") min t-DCF that papers on
ASVspoof 2019 LA report; 2021 is the revised formulation (not comparable).

Per attack: that attack's spoofs against all bona fide trials.

examples:
  python -m rawnet2_jax.metrics scores/eval.txt
  python -m rawnet2_jax.metrics scores/eval.txt \\
      --asv-scores LA/ASVspoof2019_LA_asv_scores/ASVspoof2019.LA.asv.eval.gi.trl.scores.txt
  python -m rawnet2_jax.metrics scores/dev.txt --asv-scores ...asv.dev.gi.trl.scores.txt --json

exit status: 0 success, 1 bad input (one 'error:' line on stderr), 2 bad usage.
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of usage + message
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = _Parser(
        prog=prog or "python -m rawnet2_jax.metrics",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("cm_scores", metavar="CM_SCORES", help="CM score file (utt_id attack_id key score)")
    p.add_argument(
        "--asv-scores",
        metavar="ASV_SCORES",
        help="organisers' ASV score file of the same split; enables the min t-DCF",
    )
    p.add_argument(
        "--t-dcf",
        dest="t_dcf",
        choices=("2019", "2021"),
        default="2019",
        help="t-DCF formulation (default 2019, the ASVspoof 2019 'legacy' one)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object: eer (percent), min_tdcf (with --asv-scores), per_attack, ...",
    )
    return p


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)
    from rawnet2_jax.errors import UserError
    from rawnet2_jax.metrics import evaluate_scores, read_asv_scores, read_cm_scores

    try:
        cm = read_cm_scores(args.cm_scores)
        asv = read_asv_scores(args.asv_scores) if args.asv_scores else None
        report = evaluate_scores(cm, asv, tdcf_version=args.t_dcf)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for w in report.warnings:
        print(f"warning: {w}", file=sys.stderr)
    if args.json:
        print(json.dumps(report.to_dict()))
    else:
        print(report.format_table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
