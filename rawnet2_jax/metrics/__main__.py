"""``python -m rawnet2_jax.metrics CM_SCORES [--asv-scores FILE] [--t-dcf 2019|2021] [--json]``
and ``python -m rawnet2_jax.metrics SCORES --asvspoof2021 KEYS_DIR --track LA|DF [--subset S] [--json]``."""

from __future__ import annotations

import argparse
import json
import sys

from rawnet2_jax.cliutil import quiet_broken_pipe

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
--conditions FILE ('utt_id condition' lines): per condition, its bona fide against its
spoofs, pooled and per attack (e.g. per codec of the demo corpus's --eval-channel codecs).

ASVspoof 2021 (--asvspoof2021 KEYS_DIR --track LA|DF): SCORES is the organisers'
two-column file 'trial score' (any order) covering every trial of
KEYS_DIR/{LA,DF}/CM/trial_metadata.txt; KEYS_DIR is the extracted keys/ folder of
LA-keys-full.tar.gz / DF-keys-full.tar.gz (or its parent). Prints the eval package's
tables for --subset (eval, progress or hidden; default eval): LA min t-DCF (2021
formulation, C0/C1/C2 from keys/LA/ASV of that subset) and EER by attack x codec; DF EER
by vocoder x compression. --json: {"eer": {ROW: {COL: percent}}, "min_tdcf": ... or null}.

examples:
  python -m rawnet2_jax.metrics scores/eval.txt
  python -m rawnet2_jax.metrics scores/eval.txt \\
      --asv-scores LA/ASVspoof2019_LA_asv_scores/ASVspoof2019.LA.asv.eval.gi.trl.scores.txt
  python -m rawnet2_jax.metrics scores/dev.txt --asv-scores ...asv.dev.gi.trl.scores.txt --json
  python -m rawnet2_jax.metrics scores_la.txt --asvspoof2021 keys --track LA --subset eval

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
    p.add_argument("cm_scores", metavar="CM_SCORES",
                   help="CM score file (utt_id attack_id key score; with --asvspoof2021: trial score)")
    p.add_argument(
        "--asv-scores",
        metavar="ASV_SCORES",
        help="organisers' ASV score file of the same split; enables the min t-DCF",
    )
    p.add_argument(
        "--t-dcf",
        dest="t_dcf",
        choices=("2019", "2021"),
        help="t-DCF formulation of a 2019 score file (default 2019, the ASVspoof 2019 'legacy' one; "
             "--asvspoof2021 always computes the 2021 one)",
    )
    p.add_argument("--asvspoof2021", metavar="KEYS_DIR",
                   help="ASVspoof 2021 key directory (keys/ of the organisers' key packages)")
    p.add_argument("--track", choices=("LA", "DF"), help="ASVspoof 2021 track (with --asvspoof2021)")
    p.add_argument("--subset", choices=("eval", "progress", "hidden"), default="eval",
                   help="ASVspoof 2021 subset (default eval)")
    p.add_argument("--conditions", metavar="FILE",
                   help="'utt_id condition' lines (e.g. the demo corpus's ASVspoof2019.LA.cm.eval.channel.txt): "
                        "adds the EER per condition, pooled and per attack")
    p.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object: eer (percent), min_tdcf (with --asv-scores), per_attack, ...",
    )
    return p


@quiet_broken_pipe
def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.asvspoof2021 is not None or args.track is not None:
        return _main_2021(parser, args)
    from rawnet2_jax.errors import UserError
    from rawnet2_jax.metrics import evaluate_scores, read_asv_scores, read_cm_scores

    try:
        cm = read_cm_scores(args.cm_scores)
        asv = read_asv_scores(args.asv_scores) if args.asv_scores else None
        report = evaluate_scores(cm, asv, tdcf_version=args.t_dcf or "2019")
        per_condition = None
        if args.conditions:
            from rawnet2_jax.metrics.conditions import condition_eers, read_conditions

            per_condition = condition_eers(cm, read_conditions(args.conditions))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for w in report.warnings:
        print(f"warning: {w}", file=sys.stderr)
    from rawnet2_jax.metrics.conditions import conditions_to_dict, format_conditions

    if args.json:
        out = report.to_dict()
        if per_condition is not None:
            out["per_condition"] = conditions_to_dict(per_condition)
        print(json.dumps(out))
    else:
        print(report.format_table())
        if per_condition is not None:
            print("\nper condition (its bona fide vs its spoofs):\n" + format_conditions(per_condition))
    return 0


def _main_2021(parser, args) -> int:
    import json as _json

    from rawnet2_jax.errors import UserError
    from rawnet2_jax.metrics.asvspoof2021 import evaluate_2021

    if args.asvspoof2021 is None or args.track is None:
        parser.error("--asvspoof2021 KEYS_DIR and --track LA|DF go together")
    if args.asv_scores:
        parser.error("--asv-scores is for 2019 score files; with --asvspoof2021 the ASV scores come from KEYS_DIR")
    if args.conditions:
        parser.error("--conditions is for 2019 score files; with --asvspoof2021 the conditions come from KEYS_DIR")
    if args.t_dcf == "2019":
        parser.error("--asvspoof2021 computes the 2021 t-DCF (its tables are defined with it); drop --t-dcf 2019")
    try:
        tables = evaluate_2021(args.cm_scores, args.asvspoof2021, args.track, args.subset)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for w in tables.warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(_json.dumps(tables.to_dict()) if args.json else tables.format_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
