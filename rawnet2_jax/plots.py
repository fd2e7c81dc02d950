"""Evaluation and training plots written as PNG files (matplotlib, Agg canvas).

Uses matplotlib's object-oriented API with an explicit Agg canvas: no pyplot, no global
backend switch, safe to call from any thread or a headless machine.

* :func:`plot_det_curve`: DET curve on normal-deviate (probit) axes, EER point marked.
* :func:`plot_score_histogram`: bona fide vs spoof score densities (+ optional threshold).
* :func:`plot_learning_curves`: train/dev loss, dev EER and learning rate per epoch.
* :func:`plot_condition_heatmap`: annotated heatmaps of the ASVspoof 2021 tables.
* :func:`plot_benchmark_bars`: pooled EER per dataset of ``rawnet2-jax benchmark``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from statistics import NormalDist

import numpy as np

from rawnet2_jax.metrics.eer import compute_det_curve, compute_eer

_NORMAL = NormalDist()
# Axis ticks in percent, as on the usual DET plots.
_DET_TICKS = (0.01, 0.1, 1, 2, 5, 10, 20, 40, 60, 80, 95, 99)


def _probit(p) -> np.ndarray:
    """Inverse standard normal CDF, clipped away from 0 and 1 (where it is infinite)."""
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
    return np.vectorize(_NORMAL.inv_cdf, otypes=[np.float64])(p)


def _figure(width=6.0, height=5.0, nrows=1, ncols=1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _save(fig, path) -> str:
    path = os.fspath(path)
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def _as_systems(bonafide, spoof, label):
    if isinstance(bonafide, Mapping):  # {label: (bonafide, spoof)}
        return [(name, np.asarray(b), np.asarray(s)) for name, (b, s) in bonafide.items()]
    return [(label, np.asarray(bonafide), np.asarray(spoof))]


def plot_det_curve(bonafide, spoof=None, path="det.png", *, label: str | None = None, title: str = "DET curve"):
    """DET curve (miss rate of bona fide vs false-alarm rate of spoof) on probit axes.

    Args:
        bonafide: bona fide scores, or a mapping ``{label: (bonafide, spoof)}`` to draw
            several systems (for example one curve per attack) on one plot.
        spoof: spoof scores (unused with a mapping).
        path: output PNG.
        label: legend label of a single system.

    Returns:
        The path written.
    """
    fig, axes = _figure()
    ax = axes[0, 0]
    for name, b, s in _as_systems(bonafide, spoof, label):
        frr, far, _ = compute_det_curve(b, s)
        eer, _ = compute_eer(b, s)
        text = f"EER {100 * eer:.2f} %"
        line = ax.plot(_probit(far), _probit(frr), lw=1.5, label=f"{name} ({text})" if name else text)[0]
        ax.plot(_probit(eer), _probit(eer), "o", mfc="none", color=line.get_color())
    ticks = _probit(np.array(_DET_TICKS) / 100)
    labels = [f"{t:g}" for t in _DET_TICKS]
    lim = (_probit(0.0001), _probit(0.99))
    ax.plot(lim, lim, ":", color="0.6", lw=0.8)
    ax.set_xticks(ticks, labels)
    ax.set_yticks(ticks, labels)
    ax.set_xlim(*lim)
    ax.set_ylim(*lim)
    ax.set_xlabel("False acceptance rate of spoofs (%)")
    ax.set_ylabel("False rejection rate of bona fide (%)")
    ax.set_title(title)
    ax.grid(True, lw=0.4, alpha=0.6)
    ax.legend(loc="upper right", fontsize="small")
    return _save(fig, path)


def plot_score_histogram(
    bonafide,
    spoof,
    path="scores.png",
    *,
    threshold: float | None = None,
    bins: int = 60,
    title: str = "CM score distribution",
    xlabel: str = "score (higher = more bona fide)",
):
    """Density histograms of bona fide and spoof scores (and an optional threshold line).

    Returns:
        The path written.
    """
    b = np.asarray(bonafide, dtype=np.float64)
    s = np.asarray(spoof, dtype=np.float64)
    both = np.concatenate([b, s])
    both = both[np.isfinite(both)]
    fig, axes = _figure(6.0, 4.0)
    ax = axes[0, 0]
    if both.size:
        lo, hi = float(both.min()), float(both.max())
        if lo == hi:
            lo, hi = lo - 0.5, hi + 0.5
        edges = np.linspace(lo, hi, bins + 1)
        for name, x, color in (("bona fide", b, "tab:green"), ("spoof", s, "tab:red")):
            x = x[np.isfinite(x)]
            if x.size:
                ax.hist(x, bins=edges, density=True, alpha=0.45, color=color, label=f"{name} (n={x.size:,})")
    if threshold is not None and math.isfinite(threshold):
        ax.axvline(threshold, color="k", ls="--", lw=1, label=f"threshold {threshold:.4g}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.set_title(title)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")
    return _save(fig, path)


# Keys read from each per-epoch record; the first present key of each tuple is used.
_EPOCH_KEYS = ("epoch",)
_TRAIN_LOSS_KEYS = ("train_loss", "loss")
_DEV_LOSS_KEYS = ("dev_loss", "val_loss")
_DEV_EER_KEYS = ("dev_eer", "eer", "val_eer")
_LR_KEYS = ("lr", "learning_rate")
_DEV_TDCF_KEYS = ("dev_min_tdcf",)


def _series(records, keys):
    for key in keys:
        if any(key in r for r in records):
            values = []
            for r in records:
                v = r.get(key)
                try:
                    values.append(float(v) if v is not None else math.nan)
                except (TypeError, ValueError):
                    values.append(math.nan)
            return key, np.asarray(values)
    return None, None


def plot_learning_curves(records: Sequence[Mapping], path="learning_curves.png", *, title: str | None = None):
    """Learning curves from per-epoch records.

    Each record is a dict; recognised keys (missing ones are skipped, as are None/NaN
    values): ``epoch`` (default 1, 2, ...), ``train_loss``/``loss``, ``dev_loss``/
    ``val_loss``, ``dev_eer``/``eer``/``val_eer`` (percent), ``dev_min_tdcf`` (right axis
    of the EER panel), ``lr``/``learning_rate``. Three panels: losses, dev EER (+ min
    t-DCF), learning rate (log scale when it spans more than a decade).

    Returns:
        The path written.
    """
    records = list(records)
    _, epochs = _series(records, _EPOCH_KEYS)
    if epochs is None or np.isnan(epochs).any():
        epochs = np.arange(1, len(records) + 1, dtype=np.float64)
    fig, axes = _figure(7.0, 8.0, nrows=3)
    ax_loss, ax_eer, ax_lr = axes[:, 0]

    def draw(ax, keys, label, **kw):
        key, y = _series(records, keys)
        if key is None:
            return False
        ok = np.isfinite(y)
        if not ok.any():
            return False
        ax.plot(epochs[ok], y[ok], marker="o", ms=3, label=label, **kw)
        return True

    drawn = draw(ax_loss, _TRAIN_LOSS_KEYS, "train loss")
    drawn |= draw(ax_loss, _DEV_LOSS_KEYS, "dev loss")
    ax_loss.set_ylabel("loss")
    if drawn:
        ax_loss.legend(fontsize="small")
    if draw(ax_eer, _DEV_EER_KEYS, "dev EER", color="tab:red"):
        key, y = _series(records, _DEV_EER_KEYS)
        ok = np.isfinite(y)
        best = int(np.argmin(np.where(ok, y, np.inf)))
        ax_eer.plot(epochs[best], y[best], "*", ms=12, color="gold", mec="k", label=f"best {y[best]:.3f} %")
        ax_eer.legend(fontsize="small")
    ax_eer.set_ylabel("dev EER (%)")
    key, tdcf = _series(records, _DEV_TDCF_KEYS)
    if key is not None and np.isfinite(tdcf).any():
        ax_tdcf = ax_eer.twinx()
        ok = np.isfinite(tdcf)
        ax_tdcf.plot(epochs[ok], tdcf[ok], marker="s", ms=3, ls="--", color="tab:gray", label="dev min t-DCF")
        ax_tdcf.set_ylabel("dev min t-DCF")
        ax_tdcf.legend(loc="upper center", fontsize="small")
    key, lr = _series(records, _LR_KEYS)
    if draw(ax_lr, _LR_KEYS, "learning rate", color="tab:purple", drawstyle="steps-post"):
        if np.nanmin(lr) > 0 and np.nanmax(lr) / np.nanmin(lr) > 10:
            ax_lr.set_yscale("log")
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("epoch")
    from matplotlib.ticker import MaxNLocator

    for ax in (ax_loss, ax_eer, ax_lr):
        ax.grid(True, lw=0.4, alpha=0.6)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_condition_heatmap(
    grids: Mapping[str, tuple[np.ndarray, str]],
    rows: Sequence[str],
    cols: Sequence[str],
    path="eer_by_condition.png",
    *,
    row_label: str = "",
    col_label: str = "",
    title: str = "EER by condition",
):
    """One annotated heatmap panel per ``{name: (grid (R, C), number format)}``; NaN = empty (grey).

    Used for the ASVspoof 2021 tables (EER % by attack x codec, min t-DCF ...).
    """
    from matplotlib import colormaps

    n = len(grids)
    fig, axes = _figure(1.2 + 0.75 * len(cols), (0.9 + 0.36 * len(rows)) * n, nrows=n, ncols=1)
    for ax, (name, (grid, spec)) in zip(axes[:, 0], grids.items()):
        g = np.ma.masked_invalid(np.asarray(grid, dtype=np.float64))
        cmap = colormaps["viridis_r"].with_extremes(bad="0.85")
        im = ax.imshow(g, cmap=cmap, aspect="auto")
        ax.set_xticks(range(len(cols)), labels=list(cols), rotation=30, ha="right", fontsize="small")
        ax.set_yticks(range(len(rows)), labels=list(rows), fontsize="small")
        ax.set_xlabel(col_label)
        ax.set_ylabel(row_label)
        ax.set_title(name)
        finite = g.compressed()
        mid = float(np.median(finite)) if finite.size else 0.0
        empty = np.ma.getmaskarray(g)
        for i in range(g.shape[0]):
            for j in range(g.shape[1]):
                if empty[i, j]:
                    continue
                v = float(g[i, j])
                ax.text(j, i, format(v, spec), ha="center", va="center", fontsize=7,
                        color="white" if v > mid else "black")
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.suptitle(title)
    return _save(fig, path)


def plot_benchmark_bars(results: Sequence[Mapping], path="benchmark.png", *, title: str = "Pooled EER by dataset"):
    """Bar chart of pooled EER (%) per dataset; ``results`` items have ``dataset`` and ``eer``
    (percent, or None for skipped datasets, drawn as an empty slot labelled 'not built')."""
    fig, axes = _figure(1.5 + 1.3 * max(1, len(results)), 4.0)
    ax = axes[0, 0]
    names = [r["dataset"] for r in results]
    values = [r.get("eer") for r in results]
    xs = np.arange(len(names))
    heights = [v if v is not None else 0.0 for v in values]
    bars = ax.bar(xs, heights, color=["tab:blue" if v is not None else "0.8" for v in values])
    for bar, v, r in zip(bars, values, results):
        label = "not built" if v is None else f"{v:.2f} %"
        if v is not None and r.get("min_tdcf") is not None:
            label += f"\nt-DCF {r['min_tdcf']:.3f}"
        ax.annotate(label, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom",
                    fontsize="small", xytext=(0, 2), textcoords="offset points")
    ax.set_xticks(xs, labels=names, rotation=15, ha="right")
    ax.set_ylabel("pooled EER (%)")
    ax.set_ylim(0, max([1.0] + [v for v in values if v is not None]) * 1.25)
    ax.set_title(title)
    return _save(fig, path)


def plot_spectrograms(signals: Sequence[tuple[str, np.ndarray]], sample_rate: int, path="spectrograms.png",
                      *, title: str = "Spectrograms", dynamic_range_db: float = 80.0):
    """One log-power spectrogram panel per ``(label, waveform)``, stacked, on one dB scale
    (the loudest panel's peak down ``dynamic_range_db``) so that panels compare directly.

    Frames of 32 ms (512 samples at 16 kHz), hop 8 ms, Hann window.
    """
    from scipy.signal import stft

    nperseg = max(16, int(round(0.032 * sample_rate)))
    specs = []
    for label, x in signals:
        f, t, z = stft(np.asarray(x, np.float64), fs=sample_rate, window="hann", nperseg=nperseg,
                       noverlap=nperseg - nperseg // 4, boundary=None, padded=False)
        specs.append((label, f, t, 10 * np.log10(np.abs(z) ** 2 + 1e-12)))
    top = max(float(s.max()) for *_, s in specs)
    fig, axes = _figure(8.0, 1.0 + 2.0 * len(specs), nrows=len(specs), ncols=1)
    for ax, (label, f, t, s) in zip(axes[:, 0], specs):
        im = ax.imshow(s, origin="lower", aspect="auto", cmap="magma", vmin=top - dynamic_range_db, vmax=top,
                       extent=(0.0, max(float(t[-1]) if t.size else 0.0, 1e-3), float(f[0]) / 1000, float(f[-1]) / 1000))
        ax.set_ylabel("kHz")
        ax.set_title(label, fontsize="medium")
        fig.colorbar(im, ax=ax, label="dB", pad=0.01)
    axes[-1, 0].set_xlabel("time (s)")
    fig.suptitle(title)
    return _save(fig, path)
