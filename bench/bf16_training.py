"""How far a float32 and a bfloat16 demo training drift apart: the measurement behind the bar
of ``tests/test_mixed_precision.py``, for re-measuring it on another CPU.

    python bench/bf16_training.py [--seeds 3 4 5 6] [--epochs 8] [--num-train 192] [--seconds 1]

For each demo corpus seed it trains the demo preset in float32 and in bfloat16 (the test's
settings by default: 1 s clips, 200 dev utterances, no early stopping) and prints each run's
dev EER per epoch, its best epoch and its epoch mean, then per corpus the two differences
bf16 - f32. The test bars the epoch mean (2 points); the best epoch is printed to show why
not that. One JSON line per corpus goes to ``--out``. About a minute per corpus on a 2-core
Intel Xeon, the first one's compiling included.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

DTYPES = ("float32", "bfloat16")


def one_corpus(seed: int, a: argparse.Namespace, root: Path) -> dict:
    from rawnet2_jax.data.demo import DemoConfig
    from train.loop import train
    from train.testing import demo_sources, dev_eer_curve, short_demo_config

    cfg = short_demo_config(a.epochs, a.seconds, learning_rate=a.learning_rate)
    src = demo_sources(root / f"corpus{seed}", DemoConfig(num_train=a.num_train, num_dev=a.num_dev, num_eval=8,
                                                          seed=seed, seconds=a.seconds))
    row: dict = {"seed": seed, "epochs": a.epochs, "num_train": a.num_train, "seconds": a.seconds,
                 "learning_rate": a.learning_rate}
    for dtype in DTYPES:
        t0 = time.perf_counter()
        workdir = root / f"{dtype}{seed}"
        train(cfg.replace(compute_dtype=dtype), workdir, sources=src, final_eval=False, quiet=True)
        curve = dev_eer_curve(workdir)
        row[dtype] = {"curve": curve, "best": min(curve), "mean": sum(curve) / len(curve),
                      "seconds": time.perf_counter() - t0}
        print(f"seed {seed} {dtype:8s}: dev EER % per epoch {[round(e, 1) for e in curve]}, "
              f"best {min(curve):.2f}, mean {row[dtype]['mean']:.2f} ({row[dtype]['seconds']:.0f} s)", flush=True)
    for stat in ("best", "mean"):
        row[f"{stat}_diff"] = row["bfloat16"][stat] - row["float32"][stat]
    print(f"seed {seed}: bf16 - f32 best epoch {row['best_diff']:+.2f}, epoch mean {row['mean_diff']:+.2f} "
          f"(the test's bar: |epoch mean| <= 2)", flush=True)
    return row


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[3, 4], help="demo corpus seeds (the test's: 3 4)")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--num-train", type=int, default=192)
    ap.add_argument("--num-dev", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=1.0, help="mean clip length; the model sees 75 %% of it")
    ap.add_argument("--learning-rate", type=float, default=1e-3)
    ap.add_argument("--out", type=Path, default=Path("bench/results/bf16_training.jsonl"))
    a = ap.parse_args(argv)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bf16-training-") as tmp, a.out.open("a") as out:
        rows = []
        for seed in a.seeds:
            rows.append(one_corpus(seed, a, Path(tmp)))
            out.write(json.dumps(rows[-1]) + "\n")
            out.flush()
    worst = max(abs(r["mean_diff"]) for r in rows)
    print(f"largest |epoch-mean difference| {worst:.2f} points over {len(rows)} corpora; wrote {a.out}")


if __name__ == "__main__":
    main()
