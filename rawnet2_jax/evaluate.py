"""Evaluating a model on an ASVspoof 2019 LA / In-the-Wild split (``rawnet2-jax evaluate``).

:func:`evaluate_split` scores the split into the official four-column score file (through
:func:`rawnet2_jax.split_eval.score_split`, streamed and resumable), reads that file back
(the metrics are what a user re-evaluating the file would get) and writes every artefact:
per-attack EER / min t-DCF tables, DET and histogram PNGs and a JSON summary. Training's
final evaluation calls it too. The ASVspoof 2021 tracks, whose tables are the organisers'
conditions, are :mod:`rawnet2_jax.evaluate2021`.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from rawnet2_jax.errors import DataError
from rawnet2_jax.fsutil import make_out_dir
from rawnet2_jax.scoring import DEFAULT_BATCH_SIZE


@dataclasses.dataclass
class EvaluationOutputs:
    report: Any  # rawnet2_jax.metrics.EvalReport
    score_file: Path
    summary_json: Path
    per_attack_txt: Path
    per_attack_csv: Path
    det_png: Path
    histogram_png: Path
    det_per_attack_png: Path | None


def evaluate_split(
    model: Any,
    *,
    dataset: str,
    split: str,
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    asv_scores: str | os.PathLike | None = None,
    tdcf_version: str = "2019",
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = True,
    source: Any = None,
    extra_summary: dict | None = None,
    resume: bool = False,
    processes: Any = None,
    plots: bool = True,
    run_id: str | None = None,
    score_only: bool = False,
) -> EvaluationOutputs | None:
    """Score a dataset split and write every evaluation artefact into ``out_dir``.

    Files: ``scores_{dataset}_{split}.txt`` (official format, score = logit[1] - logit[0]),
    ``per_attack.txt`` / ``per_attack.csv``, ``det.png``, ``det_per_attack.png``,
    ``score_histogram.png``, ``summary.json`` (the metrics JSON plus run information).
    ``source`` replaces the TFDS split (tests, custom data). The scores are written as
    they come by :func:`rawnet2_jax.split_eval.score_split`; ``resume=True`` continues an
    existing score file instead of starting it anew. ``processes``: several processes score
    their shards together (see ``score_split``); ``plots=False`` skips the PNGs (their paths
    are returned all the same), e.g. on the processes whose files nobody keeps. ``run_id``:
    see ``score_split`` (a resumed score file must come from the same model).
    ``score_only``: only write the score file and return None: what a process other than
    the primary does when nobody keeps its files (its copy lacks the lines the primary
    resumed after, so no metrics are computed from it).
    """
    from rawnet2_jax.data import data_source
    from rawnet2_jax.metrics import evaluate_scores, read_asv_scores, read_cm_scores
    from rawnet2_jax.split_eval import score_split

    asv = read_asv_scores(asv_scores) if asv_scores else None  # fail early on a bad file
    if source is None:
        source = data_source(dataset, split, data_dir)
    if len(source) == 0:
        raise DataError(f"{dataset} split {split!r} is empty")
    out = make_out_dir(out_dir)

    score_file = score_split(
        model, source, batch_size=batch_size, out_dir=out, resume=resume, score_file=f"scores_{dataset}_{split}.txt",
        score_format="asvspoof2019", progress=progress, desc=f"{dataset}/{split}", processes=processes, run_id=run_id,
    ).score_file
    if score_only:
        return None
    cm = read_cm_scores(score_file)  # what a user re-evaluating the file would get
    report = evaluate_scores(cm, asv, tdcf_version=tdcf_version)
    if asv_scores:
        _warn_other_split_asv(report, asv_scores, split)

    summary = {
        "dataset": dataset,
        "split": split,
        "num_utterances": len(cm.utt_ids),
        "score_file": score_file.name,
        "score": "logit[1] - logit[0] (higher = more bona fide)",
        "asv_scores": os.fspath(asv_scores) if asv_scores else None,
        **(extra_summary or {}),
        **report.to_dict(),
    }
    summary_json = out / "summary.json"
    summary_json.write_text(json.dumps(summary, indent=2) + "\n")
    per_attack_txt = out / "per_attack.txt"
    per_attack_txt.write_text(report.format_table() + "\n")
    per_attack_csv = _write_per_attack_csv(report, out / "per_attack.csv")
    if plots:
        det_png, hist_png, det_attack = _plot(cm, report, out, f"{dataset} {split}")
    else:
        det_png, hist_png, det_attack = out / "det.png", out / "score_histogram.png", None
    return EvaluationOutputs(report, score_file, summary_json, per_attack_txt, per_attack_csv, det_png, hist_png, det_attack)


def _warn_other_split_asv(report: Any, asv_scores: str | os.PathLike, split: str) -> None:
    """The min t-DCF needs the ASV scores of the same split; the official file names say which."""
    name = os.path.basename(os.fspath(asv_scores)).lower()
    other = {"dev": ".eval.", "eval": ".dev."}.get(split)
    if other and other in name:
        report.warnings.append(
            f"--asv-scores {name} looks like the ASV file of another split than {split!r}; "
            "the min t-DCF needs the ASV scores of the same split"
        )


def _write_per_attack_csv(report: Any, path: Path) -> Path:
    """``attack, n_spoof, eer_percent, min_tdcf``: the pooled row first, then one per attack."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["attack", "n_spoof", "eer_percent", "min_tdcf"])
        w.writerow(["pooled", report.n_spoof, repr(100 * report.eer), "" if report.min_tdcf is None else repr(report.min_tdcf)])
        for name, r in report.per_attack.items():
            w.writerow([name, r.n_spoof, repr(100 * r.eer), "" if r.min_tdcf is None else repr(r.min_tdcf)])
    return path


def _plot(cm: Any, report: Any, out: Path, title: str) -> tuple[Path, Path, Path | None]:
    """``det.png``, ``score_histogram.png`` and, with more than one attack, ``det_per_attack.png``."""
    from rawnet2_jax import plots

    bona, spoof = cm.bonafide_scores(), cm.spoof_scores()
    det_png = Path(plots.plot_det_curve(bona, spoof, out / "det.png", label="pooled", title=f"DET, {title}"))
    det_attack = None
    if len(report.per_attack) > 1:
        curves = {"pooled": (bona, spoof)}
        curves.update({a: (bona, cm.spoof_scores(a)) for a in report.per_attack})
        det_attack = Path(plots.plot_det_curve(curves, path=out / "det_per_attack.png", title=f"DET per attack, {title}"))
    hist_png = Path(
        plots.plot_score_histogram(
            bona, spoof, out / "score_histogram.png", threshold=report.eer_threshold,
            title=f"Scores, {title} (EER threshold dashed)",
        )
    )
    return det_png, hist_png, det_attack
