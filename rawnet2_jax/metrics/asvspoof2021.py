"""The ASVspoof 2021 LA / DF decomposed tables, as the organisers' eval package computes them.

Input: a CM score file in the organisers' two-column format (``trial score``, any order,
higher = more bona fide) covering every trial of ``keys/{LA,DF}/CM/trial_metadata.txt``,
and the key directory (see :mod:`rawnet2_jax.data.keys2021`). One subset
(``eval``/``progress``/``hidden``) is selected from both the CM and the ASV keys. Each
table cell (row value ``r`` x column value ``c``):

* the row factor (LA ``attack``, DF ``vocoder``) selects spoofed trials only, the column
  factor (LA ``codec``, DF ``compression``) bona fide and spoofed trials; ``Pooled``
  selects nothing;
* EER (:func:`~rawnet2_jax.metrics.eer.compute_eer`) of the selected bona fide vs spoofed
  scores; empty (``None``) when either class is empty;
* LA only, min t-DCF in the 2021 formulation with the cell's own ``C0, C1, C2``: the ASV
  trials of the subset are filtered the same way (the row factor selects ASV spoof trials,
  the column factor target, non-target and spoof trials), the ASV threshold is their
  target / non-target EER threshold, and the ASVspoof 2021 cost model applies. Empty when
  the cell's ASV trials lack a class.

Deliberate differences from the eval package, none of which changes a value it prints:
errors are one-line :class:`~rawnet2_jax.errors.UserError` instead of ``sys.exit``; a cell
whose CM scores take fewer than 3 distinct values is computed instead of aborting the run;
a cell whose t-DCF normalisation ``C0 + min(C1, C2)`` is 0 is empty (with a warning)
instead of a division by zero.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
from collections.abc import Sequence

import numpy as np

from rawnet2_jax.data.keys2021 import (
    POOLED,
    SUBSETS,
    KeyTable,
    Track,
    find_keys_root,
    get_track,
    key_paths,
    parse_asv_keys,
    parse_cm_keys,
)
from rawnet2_jax.metrics.eer import MetricsError, compute_det_curve, eer_from_det
from rawnet2_jax.metrics.scorefile import ScoreFileError, _open_lines, _parse_score, format_score
from rawnet2_jax.metrics.tdcf import (
    ASVSPOOF_COST_MODEL,
    CostModel,
    asv_error_rates,
    normalised_tdcf_2021,
    tdcf_2021_coefficients,
)

C012 = tuple[float, float, float]


# ----------------------------------------------------------------------------- score files


def parse_trial_scores(lines: Sequence[str], source: str = "<scores>") -> tuple[list[str], np.ndarray]:
    """Two-column ``trial score`` lines -> ``(trials, scores)``; duplicates are an error."""
    trials: list[str] = []
    scores: list[float] = []
    first: dict[str, int] = {}
    for lineno, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{source}:{lineno}"
        if len(fields) != 2:
            raise ScoreFileError(
                f"{where}: expected 2 columns 'trial score' (the ASVspoof 2021 format), got {len(fields)}: "
                f"{line.strip()!r}"
            )
        trial, token = fields
        if trial in first:
            raise ScoreFileError(f"{where}: trial {trial} already scored on line {first[trial]}")
        first[trial] = lineno
        trials.append(trial)
        scores.append(_parse_score(token, where, line))
    if not trials:
        raise ScoreFileError(f"{source} has no score lines")
    return trials, np.asarray(scores, dtype=np.float64)


def read_trial_scores(path) -> tuple[list[str], np.ndarray]:
    """Read a two-column score file; DF files have 611,829 lines, so a well-formed file is
    parsed with one ``split`` of the whole text, and the line-by-line parser (which names the
    bad line) runs only when that finds a problem."""
    lines = _open_lines(path)
    tokens = " ".join(lines).split()
    n_lines = sum(1 for ln in lines if ln and not ln.isspace())
    if n_lines and len(tokens) == 2 * n_lines:
        trials = tokens[0::2]
        try:
            scores = np.array(tokens[1::2], dtype=np.float64)
        except ValueError:
            scores = None
        if scores is not None and np.all(np.isfinite(scores)) and len(set(trials)) == len(trials):
            return trials, scores
    return parse_trial_scores(lines, os.fspath(path))


def write_trial_scores(path, trials: Sequence[str], scores: Sequence[float]) -> None:
    """Write the organisers' two-column score file."""
    if len(trials) != len(scores):
        raise ValueError("trials and scores must have the same length")
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(f"{t} {format_score(s)}\n" for t, s in zip(trials, scores))


def align_scores(keys: KeyTable, trials: Sequence[str], scores: np.ndarray, source: str = "<scores>") -> np.ndarray:
    """Scores in key-file order; a trial missing from, or unknown to, the keys is an error."""
    index = {t: i for i, t in enumerate(keys["trial"].tolist())}
    out = np.full(len(keys), np.nan)
    extra = [t for t in trials if t not in index]
    if extra:
        raise ScoreFileError(
            f"{source}: trial {extra[0]} is not in {keys.path}"
            + (f" (nor are {len(extra) - 1} more)" if len(extra) > 1 else "")
            + "; is this a score file of the other track?"
        )
    out[[index[t] for t in trials]] = scores
    missing = np.flatnonzero(np.isnan(out))
    if missing.size:
        raise ScoreFileError(
            f"{source} has no score for {missing.size:,} of the {len(keys):,} trials of {keys.path} "
            f"(first: {keys['trial'][missing[0]]}); score every trial of the key file"
        )
    return out


# ----------------------------------------------------------------------------- tables


@dataclasses.dataclass
class Tables2021:
    """EER (fractions) and min t-DCF by condition; NaN marks an empty cell."""

    track: str
    subset: str
    row_factor: str
    col_factor: str
    rows: tuple[str, ...]  # row values, Pooled last
    cols: tuple[str, ...]  # column values, Pooled last
    eer: np.ndarray  # (R, C)
    min_tdcf: np.ndarray | None  # (R, C); None for DF
    n_bonafide: np.ndarray  # (R, C) int
    n_spoof: np.ndarray  # (R, C) int
    warnings: list[str] = dataclasses.field(default_factory=list)

    def value(self, table: str, row: str, col: str) -> float | None:
        grid = self.eer if table == "eer" else self.min_tdcf
        v = float(grid[self.rows.index(row), self.cols.index(col)])
        return None if math.isnan(v) else v

    @property
    def pooled_eer(self) -> float | None:
        return self.value("eer", POOLED, POOLED)

    @property
    def pooled_min_tdcf(self) -> float | None:
        return None if self.min_tdcf is None else self.value("min_tdcf", POOLED, POOLED)

    def worst_condition(self) -> tuple[str, float] | None:
        """Highest-EER single-factor condition (``Pooled`` row or column, Pooled x Pooled excluded)."""
        cands = [(f"{self.col_factor}={c}", self.value("eer", POOLED, c)) for c in self.cols[:-1]]
        cands += [(f"{self.row_factor}={r}", self.value("eer", r, POOLED)) for r in self.rows[:-1]]
        cands = [(n, v) for n, v in cands if v is not None]
        return max(cands, key=lambda nv: nv[1]) if cands else None

    def _grid_dict(self, grid: np.ndarray, scale: float) -> dict:
        return {
            r: {c: (None if math.isnan(grid[i, j]) else scale * float(grid[i, j])) for j, c in enumerate(self.cols)}
            for i, r in enumerate(self.rows)
        }

    def to_dict(self) -> dict:
        """``{"eer": {ROW: {COL: percent}}, "min_tdcf": {ROW: {COL: value}} or None}``."""
        return {
            "eer": self._grid_dict(self.eer, 100.0),
            "min_tdcf": None if self.min_tdcf is None else self._grid_dict(self.min_tdcf, 1.0),
        }

    def _format_grid(self, grid: np.ndarray, scale: float, spec: str) -> list[str]:
        head = f"{self.row_factor} \\ {self.col_factor}"
        w0 = max(len(head), *(len(r) for r in self.rows))
        widths = [max(7, len(c)) for c in self.cols]
        lines = [f"{head:<{w0}}  " + "  ".join(f"{c:>{w}}" for c, w in zip(self.cols, widths))]
        for i, r in enumerate(self.rows):
            cells = ["-" if math.isnan(grid[i, j]) else format(scale * grid[i, j], spec) for j in range(len(self.cols))]
            lines.append(f"{r:<{w0}}  " + "  ".join(f"{v:>{w}}" for v, w in zip(cells, widths)))
        return lines

    def format_text(self) -> str:
        nb, ns = int(self.n_bonafide[-1, -1]), int(self.n_spoof[-1, -1])
        lines = [f"ASVspoof 2021 {self.track}, subset {self.subset}: {nb:,} bona fide, {ns:,} spoofed trials"]
        if self.min_tdcf is not None:
            lines += ["", "min t-DCF (2021 formulation, organisers' ASV scores of this subset)"]
            lines += self._format_grid(self.min_tdcf, 1.0, ".4f")
        lines += ["", "EER (%)"] + self._format_grid(self.eer, 100.0, ".2f")
        return "\n".join(lines)

    def write_csv(self, path) -> None:
        """One row per cell: ``table,row,col,n_bonafide,n_spoof,value`` (EER in percent)."""
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["table", self.row_factor, self.col_factor, "n_bonafide", "n_spoof", "value"])
            grids = [("eer_percent", self.eer, 100.0)]
            if self.min_tdcf is not None:
                grids.insert(0, ("min_tdcf", self.min_tdcf, 1.0))
            for name, grid, scale in grids:
                for i, r in enumerate(self.rows):
                    for j, c in enumerate(self.cols):
                        v = grid[i, j]
                        w.writerow([name, r, c, int(self.n_bonafide[i, j]), int(self.n_spoof[i, j]),
                                    "" if math.isnan(v) else repr(scale * float(v))])


def _factor_masks(column: np.ndarray, values: Sequence[str]) -> list[np.ndarray | None]:
    """One boolean mask per value; ``None`` for Pooled (no selection)."""
    return [None if v == POOLED else column == v for v in values]


def _sel(base: np.ndarray, *masks: np.ndarray | None) -> np.ndarray:
    out = base
    for m in masks:
        if m is not None:
            out = out & m
    return out


def c012_grid(asv: KeyTable, track: Track, subset: str, cost_model: CostModel = ASVSPOOF_COST_MODEL):
    """``{(row, col): (C0, C1, C2) or None}`` from the ASV keys + scores of ``subset``."""
    in_subset = asv["subset"] == subset
    label, scores = asv["label"], asv["score"]
    tar_all, non_all, spf_all = (in_subset & (label == k) for k in ("target", "nontarget", "spoof"))
    row_masks = _factor_masks(asv[track.row_factor], track.row_names)
    col_masks = _factor_masks(asv[track.col_factor], track.col_names)
    out: dict[tuple[str, str], C012 | None] = {}
    for c, cm in zip(track.col_names, col_masks):
        tar, non = scores[_sel(tar_all, cm)], scores[_sel(non_all, cm)]
        base = asv_error_rates(tar, non, [0.0]) if tar.size and non.size else None  # the column's threshold
        for r, rm in zip(track.row_names, row_masks):
            spf = scores[_sel(spf_all, cm, rm)]
            if base is None or not spf.size:
                out[(r, c)] = None
                continue
            rates = dataclasses.replace(
                base,
                p_miss_spoof=float(np.sum(spf < base.threshold) / spf.size),
                p_fa_spoof=float(np.sum(spf >= base.threshold) / spf.size),
            )
            out[(r, c)] = tdcf_2021_coefficients(rates, cost_model)
    return out


def decomposed_tables(
    keys: KeyTable, scores: np.ndarray, track: Track, subset: str, c012: dict | None = None
) -> Tables2021:
    """EER (and with ``c012`` min t-DCF) of every cell; ``scores`` in key-file order."""
    if subset not in SUBSETS:
        raise MetricsError(f"unknown subset {subset!r}; use one of {', '.join(SUBSETS)}")
    in_subset = keys["subset"] == subset
    if not in_subset.any():
        raise MetricsError(f"{keys.path} has no trials of subset {subset!r}")
    bona_all = in_subset & (keys["label"] == "bonafide")
    spf_all = in_subset & (keys["label"] == "spoof")
    rows, cols = track.row_names, track.col_names
    shape = (len(rows), len(cols))
    eer, tdcf = np.full(shape, np.nan), (np.full(shape, np.nan) if c012 is not None else None)
    n_bona, n_spf = np.zeros(shape, np.int64), np.zeros(shape, np.int64)
    warnings: list[str] = []
    row_masks = _factor_masks(keys[track.row_factor], rows)
    col_masks = _factor_masks(keys[track.col_factor], cols)
    for j, (c, cm) in enumerate(zip(cols, col_masks)):
        bona = scores[_sel(bona_all, cm)]
        for i, (r, rm) in enumerate(zip(rows, row_masks)):
            spf = scores[_sel(spf_all, cm, rm)]
            n_bona[i, j], n_spf[i, j] = bona.size, spf.size
            if not (bona.size and spf.size):
                continue
            frr, far, thr = compute_det_curve(bona, spf)
            eer[i, j] = eer_from_det(frr, far, thr)[0]
            coef = None if c012 is None else c012.get((r, c))
            if coef is None:
                continue
            if coef[0] + min(coef[1], coef[2]) == 0:
                warnings.append(f"min t-DCF of {r} x {c} undefined: C0 + min(C1, C2) = 0")
                continue
            tdcf[i, j] = float(np.min(normalised_tdcf_2021(frr, far, *coef)))
    return Tables2021(track.name, subset, track.row_factor, track.col_factor, rows, cols, eer, tdcf, n_bona, n_spf,
                      warnings)


def evaluate_2021(
    score_file, keys_dir, track: str, subset: str = "eval", cost_model: CostModel = ASVSPOOF_COST_MODEL
) -> Tables2021:
    """The organisers' tables of a two-column score file (``python -m rawnet2_jax.metrics --asvspoof2021``)."""
    t = get_track(track)
    if subset not in SUBSETS:
        raise MetricsError(f"unknown subset {subset!r}; use one of {', '.join(SUBSETS)}")
    paths = key_paths(find_keys_root(keys_dir, t), t)
    keys = parse_cm_keys(paths.cm, t)
    trials, raw = read_trial_scores(score_file)
    scores = align_scores(keys, trials, raw, os.fspath(score_file))
    c012 = c012_grid(parse_asv_keys(paths.asv, paths.asv_scores), t, subset, cost_model) if t.has_tdcf else None
    return decomposed_tables(keys, scores, t, subset, c012)
