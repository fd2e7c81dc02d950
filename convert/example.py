"""Write an example PyTorch checkpoint from a reference module.

    python -m convert.example OUT.pt [--preset caa_rawnet2] [--seed 0] [--bare]

The weights are random (torch's default init, seeded) and the BatchNorm running statistics
are accumulated in train mode on synthetic speech, so they are as non-trivial as a real
checkpoint's. The container matches the real files: the seed layout is wrapped as
``{"model_state_dict": ...}`` like ``best.pt``; the official layouts are bare state dicts.
Use it to try ``python -m convert`` without a real checkpoint, or in tests.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rawnet2_jax.cliutil import nonneg_int
from rawnet2_jax.config import PRESETS, get_config
from rawnet2_jax.errors import UserError


def make_reference_checkpoint(
    out: str | Path,
    preset: str = "caa_rawnet2",
    *,
    seed: int = 0,
    bare: bool | None = None,
    num_samples: int = 16000,
    batches: int = 2,
    batch_size: int = 4,
) -> Path:
    """Save a reference-module checkpoint of ``preset``; returns its path."""
    import torch

    from convert.reference import reference_model
    from rawnet2_jax.data.synth import speech_like

    cfg = get_config(preset)
    num_samples = max(num_samples, cfg.min_num_samples)
    torch.manual_seed(seed)
    model = reference_model(cfg)
    model.train()
    with torch.no_grad():  # running statistics only: no optimiser step
        for b in range(batches):
            x = speech_like(num_samples, batch=batch_size, seed=seed * 1000 + b, sample_rate=cfg.sample_rate)
            model(torch.from_numpy(x))
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    wrapped = cfg.layout == "seed" if bare is None else not bare
    obj = {"model_state_dict": state, "epoch": 0, "note": "rawnet2-jax example"} if wrapped else state
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, out)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m convert.example",
        description=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("out", help="where to write the .pt file")
    ap.add_argument("--preset", default="caa_rawnet2", choices=sorted(PRESETS))
    ap.add_argument("--seed", type=nonneg_int, default=0)
    ap.add_argument("--bare", action="store_true", help="save a bare state dict even for the seed layout")
    args = ap.parse_args(argv)
    try:
        path = make_reference_checkpoint(args.out, args.preset, seed=args.seed, bare=args.bare or None)
    except ImportError as e:
        print(f"error: {e}; install the converter's extras: pip install -e '.[torch]'", file=sys.stderr)
        return 1
    except (UserError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {path} (reference {args.preset}, seed {args.seed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
