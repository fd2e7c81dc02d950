"""``rawnet2-jax benchmark``: one model on every built evaluation set, one summary.

Datasets, in this order: ASVspoof 2019 LA eval, ASVspoof 2021 LA eval, ASVspoof 2021 DF eval,
In-the-Wild. Each built one is scored with :func:`rawnet2_jax.split_eval.score_split`
into ``out_dir/<dataset>/`` (resumable: a benchmark stopped part-way continues where it
was), then summarised: pooled EER, min t-DCF where defined (2021 LA: from the copied keys,
the 2021 formulation; 2019 LA: the 2019 formulation, only when the organisers' eval ASV
scores are given) and the worst condition (2019: attack; 2021: the single factor value with
the highest EER). Datasets that are not built are listed as skipped with the build command.
Files: ``benchmark.md``, ``benchmark.json``, ``benchmark.png`` (bar chart of pooled EER).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from rawnet2_jax.data import is_built

BENCHMARK_DATASETS = ("asvspoof2019_la", "asvspoof2021_la", "asvspoof2021_df", "in_the_wild")


@dataclasses.dataclass
class DatasetResult:
    dataset: str
    status: str  # "done" | "skipped"
    eer: float | None = None  # pooled, percent
    min_tdcf: float | None = None
    tdcf: str | None = None  # which formulation / why none
    worst_condition: str | None = None
    worst_eer: float | None = None  # percent
    num_trials: int | None = None
    out_dir: str | None = None
    note: str | None = None  # build command for skipped ones

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def build_command(dataset: str, data_dir) -> str:
    return f"python -m rawnet2_jax.data build {dataset} --manual-dir DIR --data-dir {data_dir}"


def _cm4(model, dataset, data_dir, out: Path, batch_size, resume, progress, run_id, asv_scores=None) -> DatasetResult:
    from rawnet2_jax.data import data_source
    from rawnet2_jax.metrics import evaluate_scores, read_asv_scores, read_cm_scores
    from rawnet2_jax.split_eval import score_split

    asv = read_asv_scores(asv_scores) if asv_scores else None
    scored = score_split(model, data_source(dataset, "eval", data_dir), batch_size=batch_size, out_dir=out,
                         resume=resume, score_file=f"scores_{dataset}_eval.txt", score_format="asvspoof2019",
                         progress=progress, desc=dataset, run_id=run_id)
    report = evaluate_scores(read_cm_scores(scored.score_file), asv, tdcf_version="2019")
    worst = max(report.per_attack.values(), key=lambda r: r.eer, default=None)
    (out / "summary.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return DatasetResult(
        dataset, "done", eer=100 * report.eer, min_tdcf=report.min_tdcf,
        tdcf="2019" if report.min_tdcf is not None else ("no ASV scores given" if asv is None else "undefined"),
        worst_condition=None if worst is None else f"attack={worst.attack}",
        worst_eer=None if worst is None else 100 * worst.eer, num_trials=report.n_bonafide + report.n_spoof,
        out_dir=os.fspath(out),
    )


def _asv2021(model, dataset, data_dir, out: Path, batch_size, resume, progress, run_id) -> DatasetResult:
    from rawnet2_jax.evaluate2021 import evaluate_asvspoof2021

    o = evaluate_asvspoof2021(model, dataset=dataset, data_dir=data_dir, out_dir=out, subset="eval",
                              batch_size=batch_size, resume=resume, progress=progress, run_id=run_id)
    t = o.tables
    worst = t.worst_condition()
    return DatasetResult(
        dataset, "done", eer=None if t.pooled_eer is None else 100 * t.pooled_eer, min_tdcf=t.pooled_min_tdcf,
        tdcf="2021" if t.min_tdcf is not None else "not defined for DF",
        worst_condition=None if worst is None else worst[0], worst_eer=None if worst is None else 100 * worst[1],
        num_trials=int(t.n_bonafide[-1, -1] + t.n_spoof[-1, -1]), out_dir=os.fspath(out),
    )


def run_benchmark(
    model: Any,
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    batch_size: int = 32,
    resume: bool = True,
    progress: bool = True,
    asv_scores_2019: str | os.PathLike | None = None,
    datasets: tuple[str, ...] = BENCHMARK_DATASETS,
    extra: dict | None = None,
    run_id: str | None = None,
) -> list[DatasetResult]:
    """Evaluate ``model`` on every built dataset of ``datasets`` and write the summary files.

    ``run_id`` (the checkpoint path from the CLI) keeps a resumed benchmark from continuing
    score files of another model."""
    from rawnet2_jax import plots

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for name in datasets:
        if not is_built(name, data_dir):
            results.append(DatasetResult(name, "skipped", note=build_command(name, data_dir)))
            continue
        sub = out / name
        if name.startswith("asvspoof2021"):
            results.append(_asv2021(model, name, data_dir, sub, batch_size, resume, progress, run_id))
        else:
            asv = asv_scores_2019 if name == "asvspoof2019_la" else None
            results.append(_cm4(model, name, data_dir, sub, batch_size, resume, progress, run_id, asv))
    (out / "benchmark.md").write_text(format_markdown(results) + "\n")
    payload = {**(extra or {}), "eer_unit": "percent", "results": [r.to_dict() for r in results]}
    (out / "benchmark.json").write_text(json.dumps(payload, indent=2) + "\n")
    plots.plot_benchmark_bars([r.to_dict() for r in results], out / "benchmark.png")
    return results


def _num(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def format_markdown(results: list[DatasetResult]) -> str:
    lines = [
        "| dataset | trials | pooled EER (%) | min t-DCF | worst condition | worst EER (%) |",
        "|---|---:|---:|---:|---|---:|",
    ]
    for r in results:
        if r.status == "skipped":
            lines.append(f"| {r.dataset} | - | - | - | not built | - |")
            continue
        tdcf = _num(r.min_tdcf, ".4f") + (f" ({r.tdcf})" if r.min_tdcf is not None else "")
        lines.append(f"| {r.dataset} | {r.num_trials:,} | {_num(r.eer, '.2f')} | {tdcf} | "
                     f"{r.worst_condition or '-'} | {_num(r.worst_eer, '.2f')} |")
    skipped = [r for r in results if r.status == "skipped"]
    if skipped:
        lines += ["", "Skipped (not built); build them with:", ""]
        lines += [f"    {r.note}" for r in skipped]
    return "\n".join(lines)
