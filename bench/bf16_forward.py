"""How far bfloat16 compute moves RawNet2's logits: a converted checkpoint, f32 vs bf16.

    python bench/bf16_forward.py [--preset caa_rawnet2 tak2021] [--batch 4] [--seconds 4]

Writes a PyTorch reference checkpoint with accumulated BatchNorm statistics
(``convert.example``), converts it (``python -m convert``), runs the Flax model on
speech-like audio with ``dtype=float32`` (matmuls at ``highest``) and ``dtype=bfloat16``
(parameters stay float32) and prints the max |logit difference|, the max |score
difference| (score = logit[1] - logit[0]) and how many verdicts (sign of the score) flip.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np


def compare(preset: str, batch: int, seconds: float, workdir: Path) -> dict:
    from convert.converter import convert_checkpoint
    from convert.example import make_reference_checkpoint
    from rawnet2_jax.checkpoint import load_pretrained
    from rawnet2_jax.data.synth import speech_like
    from rawnet2_jax.model import RawNet2

    pt = make_reference_checkpoint(workdir / f"{preset}.pt", preset)
    convert_checkpoint(pt, workdir / preset, preset=preset, log=lambda *a: None)
    pre = load_pretrained(workdir / preset)
    n = max(int(seconds * pre.config.sample_rate), pre.config.min_num_samples)
    x = jnp.asarray(speech_like(n, batch=batch, seed=100, sample_rate=pre.config.sample_rate), jnp.float32)
    logits = {}
    for name, dtype in (("float32", jnp.float32), ("bfloat16", jnp.bfloat16)):
        model = RawNet2(pre.config, dtype=dtype)
        with jax.default_matmul_precision("highest"):
            out, _ = jax.jit(lambda v, a: model.apply(v, a, train=False))(pre.variables, x)
        logits[name] = np.asarray(out, np.float64)
    d = np.abs(logits["bfloat16"] - logits["float32"])
    s32 = logits["float32"][:, 1] - logits["float32"][:, 0]
    s16 = logits["bfloat16"][:, 1] - logits["bfloat16"][:, 0]
    return {
        "preset": preset, "batch": batch, "samples": n,
        "max_abs_logit_diff": float(d.max()),
        "max_rel_logit_diff": float(d.max() / np.abs(logits["float32"]).max()),
        "max_abs_score_diff": float(np.abs(s16 - s32).max()),
        "score_range_f32": [float(s32.min()), float(s32.max())],
        "verdict_flips": int(np.sum(np.sign(s16) != np.sign(s32))),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", nargs="+", default=["caa_rawnet2", "tak2021"])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=4.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.preset:
            print(json.dumps(compare(preset, args.batch, args.seconds, Path(tmp))), flush=True)


if __name__ == "__main__":
    main()
