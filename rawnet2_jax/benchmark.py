"""``rawnet2-jax benchmark``: one model on every built evaluation set, one summary.

Datasets, in this order: ASVspoof 2019 LA eval, ASVspoof 2021 LA eval, ASVspoof 2021 DF eval,
In-the-Wild. Each built one is evaluated by the functions behind ``rawnet2-jax evaluate``
(:func:`rawnet2_jax.evaluate.evaluate_split`,
:func:`rawnet2_jax.evaluate2021.evaluate_asvspoof2021`; both score through
:func:`rawnet2_jax.split_eval.score_split`) into ``out_dir/<dataset>/`` (resumable: a
benchmark stopped part-way continues where it was), then summarised: pooled EER, min t-DCF where defined (2021 LA: from the copied keys,
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
from rawnet2_jax.errors import DataError
from rawnet2_jax.fsutil import make_out_dir

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


def _cm4(model, dataset, data_dir, out: Path, opts: dict, asv_scores=None) -> DatasetResult | None:
    """2019 LA / In-the-Wild eval through :func:`rawnet2_jax.evaluate.evaluate_split` (what
    ``rawnet2-jax evaluate`` and training's final evaluation run): the official four-column
    score file, per-attack tables, DET / histogram PNGs and ``summary.json``."""
    from rawnet2_jax.evaluate import evaluate_split

    o = evaluate_split(model, dataset=dataset, split="eval", data_dir=data_dir, out_dir=out, asv_scores=asv_scores,
                       tdcf_version="2019", **opts)
    if o is None:  # a process other than the primary: it scored its shard
        return None
    report = o.report
    worst = max(report.per_attack.values(), key=lambda r: r.eer, default=None)
    return DatasetResult(
        dataset, "done", eer=100 * report.eer, min_tdcf=report.min_tdcf,
        tdcf="2019" if report.min_tdcf is not None else ("no ASV scores given" if asv_scores is None else "undefined"),
        worst_condition=None if worst is None else f"attack={worst.attack}",
        worst_eer=None if worst is None else 100 * worst.eer, num_trials=report.n_bonafide + report.n_spoof,
        out_dir=os.fspath(out),
    )


def _asv2021(model, dataset, data_dir, out: Path, opts: dict) -> DatasetResult | None:
    from rawnet2_jax.evaluate2021 import evaluate_asvspoof2021

    opts = {k: v for k, v in opts.items() if k != "plots"}
    o = evaluate_asvspoof2021(model, dataset=dataset, data_dir=data_dir, out_dir=out, subset="eval", **opts)
    if o is None:
        return None
    t = o.tables
    worst = t.worst_condition()
    return DatasetResult(
        dataset, "done", eer=None if t.pooled_eer is None else 100 * t.pooled_eer, min_tdcf=t.pooled_min_tdcf,
        tdcf="2021" if t.min_tdcf is not None else "not defined for DF",
        worst_condition=None if worst is None else worst[0], worst_eer=None if worst is None else 100 * worst[1],
        num_trials=int(t.n_bonafide[-1, -1] + t.n_spoof[-1, -1]), out_dir=os.fspath(out),
    )


def _built(datasets: tuple[str, ...], data_dir, processes) -> list[bool]:
    """Which datasets are built, as the primary sees them (every process scores the same ones;
    one that lacks a dataset the primary has fails with its own one-line error)."""
    built = [is_built(name, data_dir) for name in datasets]
    if processes is None:
        return built
    ex = processes.exchange("benchmark/built")
    mask = ex.primary_int(sum(1 << i for i, b in enumerate(built) if b))
    ex.close()
    return [bool(mask >> i & 1) for i in range(len(datasets))]


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
    processes: Any = None,
) -> list[DatasetResult] | None:
    """Evaluate ``model`` on every built dataset of ``datasets`` and write the summary files.

    ``run_id`` (the checkpoint path from the CLI) keeps a resumed benchmark from continuing
    score files of another model. ``processes``: several processes score every dataset
    together, each its shard (:func:`rawnet2_jax.split_eval.score_split`); only the
    primary computes the metrics and writes the summary (the others return None, their
    ``out_dir`` holds just score files)."""
    from rawnet2_jax import plots

    primary = processes is None or processes.primary
    built = _built(datasets, data_dir, processes)
    if not any(built):  # a mistyped --data-dir would otherwise look like a finished benchmark
        raise DataError(f"none of {', '.join(datasets)} is built in {data_dir}; build them with "
                        f"`{build_command(datasets[0], data_dir)}` (and the others likewise), or fix --data-dir")
    out = make_out_dir(out_dir)
    opts = dict(batch_size=batch_size, resume=resume, progress=progress, run_id=run_id, processes=processes,
                score_only=not primary, plots=primary)
    results = []
    for name, built in zip(datasets, built):
        if not built:
            results.append(DatasetResult(name, "skipped", note=build_command(name, data_dir)))
            continue
        sub = out / name
        if name.startswith("asvspoof2021"):
            results.append(_asv2021(model, name, data_dir, sub, opts))
        else:
            asv = asv_scores_2019 if name == "asvspoof2019_la" else None
            results.append(_cm4(model, name, data_dir, sub, opts, asv))
    if not primary:
        return None
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
