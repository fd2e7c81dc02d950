"""Time the ASVspoof 2021 tables on key files of the real sizes (synthetic content).

    .venv/bin/python bench/bench_metrics2021.py [--work-dir /tmp/rawnet2_bench21] [--json out.json]

Writes (once, then reuses) keys in the organisers' layouts with the real line counts (LA CM
181,566, LA ASV 785,281, DF CM 611,829) and random scores, then times
``python -m rawnet2_jax.metrics SCORES --asvspoof2021 KEYS --track LA|DF --subset eval``
(in-process: parsing, alignment, C012 per cell, every table cell).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

LA_CODECS = np.array(["none", "alaw", "pstn", "g722", "ulaw", "gsm", "opus"])
DF_CODECS = np.array(["nocodec", "low_mp3", "high_mp3", "low_m4a", "high_m4a", "low_ogg", "high_ogg", "mp3m4a",
                      "oggm4a"])
VOCODERS = np.array(["traditional_vocoder", "waveform_concatenation", "neural_vocoder_autoregressive",
                     "neural_vocoder_nonautoregressive", "unknown"])
ATTACKS = np.array([f"A{i:02d}" for i in range(7, 20)])
SUBSETS = np.array(["eval", "progress", "hidden"])


def _pick(rng, values, n, p=None):
    return values[rng.choice(len(values), n, p=p)]


def _write(path: Path, columns: list[np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        f.writelines(" ".join(row) + "\n" for row in zip(*(c.tolist() for c in columns)))


def make_keys(root: Path, seed: int = 0) -> Path:
    keys = root / "keys"
    if (keys / "DF" / "CM" / "trial_metadata.txt").is_file():
        return keys
    rng = np.random.default_rng(seed)
    # LA CM
    n = 181566
    bona = rng.random(n) < 0.1
    codec = _pick(rng, LA_CODECS, n)
    trials = np.char.add("LA_E_", np.char.zfill((1000000 + np.arange(n) * 7).astype(str), 7))
    attack = np.where(bona, "bonafide", _pick(rng, ATTACKS, n))
    label = np.where(bona, "bonafide", "spoof")
    subset = _pick(rng, SUBSETS, n, [0.82, 0.09, 0.09])
    tx = np.where(codec == "none", "-", "loc_tx")
    _write(keys / "LA/CM/trial_metadata.txt",
           [_pick(rng, np.array(["LA_0009", "LA_0021"]), n), trials, codec, tx, attack, label,
            np.full(n, "notrim"), subset])
    (root / "scores_la.txt").write_text(
        "".join(f"{t} {s:.6f}\n" for t, s in zip(trials.tolist(), np.where(bona, 2.0, -1.0) + rng.normal(0, 1.5, n))))
    # LA ASV
    m = 785281
    alabel = _pick(rng, np.array(["target", "nontarget", "spoof"]), m, [0.1, 0.3, 0.6])
    acodec = _pick(rng, LA_CODECS, m)
    spk = np.char.add("LA_0007-", acodec)
    atrial = np.char.add(np.char.add("LA_E_", np.arange(m).astype(str)), np.char.add("-", acodec))
    aattack = np.where(alabel == "spoof", _pick(rng, ATTACKS, m), "bonafide")
    mean = np.select([alabel == "target", alabel == "nontarget"], [3.0, -2.0], 0.5)
    _write(keys / "LA/ASV/trial_metadata.txt",
           [spk, atrial, acodec, np.full(m, "loc_tx"), aattack, alabel, np.full(m, "notrim"),
            _pick(rng, SUBSETS, m, [0.82, 0.09, 0.09])])
    _write(keys / "LA/ASV/ASVTorch_Kaldi/score.txt", [spk, atrial, np.char.mod("%.5f", mean + rng.normal(0, 2, m))])
    # DF CM
    k = 611829
    dbona = rng.random(k) < 0.04
    dtrials = np.char.add("DF_E_", np.char.zfill((2000000 + np.arange(k) * 4).astype(str), 7))
    _write(keys / "DF/CM/trial_metadata.txt",
           [np.full(k, "LA_0023"), dtrials, _pick(rng, DF_CODECS, k), np.full(k, "asvspoof"),
            np.where(dbona, "bonafide", _pick(rng, ATTACKS, k)), np.where(dbona, "bonafide", "spoof"),
            np.full(k, "notrim"), _pick(rng, SUBSETS, k, [0.87, 0.07, 0.06]),
            np.where(dbona, "bonafide", _pick(rng, VOCODERS, k))] + [np.full(k, "-")] * 4)
    (root / "scores_df.txt").write_text(
        "".join(f"{t} {s:.6f}\n" for t, s in zip(dtrials.tolist(), np.where(dbona, 2.0, -1.0) + rng.normal(0, 1.5, k))))
    return keys


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work-dir", default="/tmp/rawnet2_bench21")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    root = Path(args.work_dir)
    t = time.perf_counter()
    keys = make_keys(root)
    print(f"keys ready in {time.perf_counter() - t:.1f} s ({keys})")
    from rawnet2_jax.metrics.asvspoof2021 import evaluate_2021

    out = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "runs": {}}
    for track, scores in (("LA", root / "scores_la.txt"), ("DF", root / "scores_df.txt")):
        t = time.perf_counter()
        tables = evaluate_2021(scores, keys, track, "eval")
        dt = time.perf_counter() - t
        out["runs"][track] = {"seconds": dt, "pooled_eer": 100 * tables.pooled_eer,
                              "pooled_min_tdcf": tables.pooled_min_tdcf}
        tdcf = "" if tables.pooled_min_tdcf is None else f", pooled min t-DCF {tables.pooled_min_tdcf:.4f}"
        print(f"{track}: {dt:.1f} s for all tables (pooled EER {100 * tables.pooled_eer:.2f} %{tdcf})")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
