"""``rawnet2-jax evaluate --dataset asvspoof2021_la|asvspoof2021_df``: score, then the organisers' tables.

:func:`evaluate_asvspoof2021` scores every trial of the built split with
:func:`rawnet2_jax.split_eval.score_split` (streaming, resumable) into the organisers'
two-column score file, then computes the tables of one subset with
:mod:`rawnet2_jax.metrics.asvspoof2021` from the key files the build copied into the data
dir. Files in ``out_dir``:

* ``scores_{dataset}.txt``  ``trial score`` for all trials (what the eval package reads)
* ``tables_{subset}.txt`` / ``.csv`` / ``.json``  (JSON: ``{"eer": ..., "min_tdcf": ...}``)
* ``eer_by_condition_{subset}.png``  heatmap(s): EER % (and LA min t-DCF) by condition
* ``summary_{subset}.json``  pooled EER, min t-DCF, worst condition, files, run information
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from rawnet2_jax.errors import DataError

DATASET_TRACKS = {"asvspoof2021_la": "LA", "asvspoof2021_df": "DF"}


@dataclasses.dataclass
class Outputs2021:
    tables: Any  # rawnet2_jax.metrics.asvspoof2021.Tables2021
    score_file: Path
    tables_txt: Path
    tables_csv: Path
    tables_json: Path
    heatmap_png: Path
    summary_json: Path
    num_resumed: int


def write_tables(tables, out_dir: Path, stem: str, title: str) -> tuple[Path, Path, Path, Path]:
    """txt, csv, json and heatmap PNG of a :class:`Tables2021`."""
    from rawnet2_jax import plots

    txt, csv_, js = (out_dir / f"tables_{stem}{ext}" for ext in (".txt", ".csv", ".json"))
    png = out_dir / f"eer_by_condition_{stem}.png"
    txt.write_text(tables.format_text() + "\n")
    tables.write_csv(csv_)
    js.write_text(json.dumps(tables.to_dict(), indent=1) + "\n")
    grids = {"EER (%)": (100 * tables.eer, ".1f")}
    if tables.min_tdcf is not None:
        grids["min t-DCF"] = (tables.min_tdcf, ".3f")
    plots.plot_condition_heatmap(grids, tables.rows, tables.cols, png, row_label=tables.row_factor,
                                 col_label=tables.col_factor, title=title)
    return txt, csv_, js, png


def evaluate_asvspoof2021(
    model: Any,
    *,
    dataset: str,
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    subset: str = "eval",
    batch_size: int = 32,
    resume: bool = True,
    progress: bool = True,
    source: Any = None,
    keys_dir: str | os.PathLike | None = None,
    extra_summary: dict | None = None,
    run_id: str | None = None,
    processes: Any = None,
    score_only: bool = False,
) -> Outputs2021 | None:
    """Score ``dataset`` (all trials) and write its tables for ``subset`` (see the module docstring).

    ``source`` replaces the TFDS split and ``keys_dir`` the keys copied at build time (tests,
    custom data). A run stopped part-way continues from its score file with ``resume=True``;
    ``run_id`` (the CLI passes the checkpoint path) guards against continuing another model's.
    ``processes``: several processes score their shards together (see ``score_split``);
    ``score_only``: write only the score file and return None (the processes other than the
    primary, whose copy lacks the lines the primary resumed after).
    """
    from rawnet2_jax.data.asvspoof2021_common import built_keys_dir
    from rawnet2_jax.metrics.asvspoof2021 import evaluate_2021
    from rawnet2_jax.split_eval import score_split

    if dataset not in DATASET_TRACKS:
        raise DataError(f"{dataset!r} is not an ASVspoof 2021 dataset; use one of {', '.join(DATASET_TRACKS)}")
    track = DATASET_TRACKS[dataset]
    keys = Path(keys_dir) if keys_dir is not None else built_keys_dir(data_dir, dataset)  # fail before scoring
    if source is None:
        from rawnet2_jax.data import data_source

        source = data_source(dataset, "eval", data_dir)
    out = Path(out_dir)
    scored = score_split(model, source, batch_size=batch_size, out_dir=out, resume=resume,
                         score_file=f"scores_{dataset}.txt", score_format="asvspoof2021", progress=progress,
                         desc=dataset, run_id=run_id, processes=processes)
    if score_only:
        return None
    tables = evaluate_2021(scored.score_file, keys, track, subset)
    txt, csv_, js, png = write_tables(tables, out, subset, f"{dataset}, subset {subset}")
    worst = tables.worst_condition()
    summary = {
        "dataset": dataset,
        "subset": subset,
        "num_trials_scored": scored.num_records,
        "score_file": scored.score_file.name,
        "score": "logit[1] - logit[0] (higher = more bona fide)",
        **(extra_summary or {}),
        "pooled_eer": None if tables.pooled_eer is None else 100 * tables.pooled_eer,
        "pooled_min_tdcf": tables.pooled_min_tdcf,
        "worst_condition": None if worst is None else {"condition": worst[0], "eer": 100 * worst[1]},
        "num_bonafide": int(tables.n_bonafide[-1, -1]),
        "num_spoof": int(tables.n_spoof[-1, -1]),
        "tables": js.name,
        "warnings": list(tables.warnings),
    }
    summary_json = out / f"summary_{subset}.json"
    summary_json.write_text(json.dumps(summary, indent=2, default=_json_default) + "\n")
    return Outputs2021(tables, scored.score_file, txt, csv_, js, png, summary_json, scored.num_resumed)


def _json_default(v):
    if isinstance(v, np.generic):
        return v.item()
    raise TypeError(type(v).__name__)
