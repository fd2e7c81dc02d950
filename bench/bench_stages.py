"""Per-stage timing of the RawNet2 forward and forward + backward: sinc front end, each residual
block (with its FMS), pre-GRU BatchNorm + GRU; JAX (``rawnet2_jax``'s modules) or the official
eurecom ``model.py``'s (torch), each stage alone on a random input of the shape it sees in the
model, random weights, train-mode BatchNorms.

    .venv/bin/python bench/bench_stages.py --impl jax --batch 4 --threads 2
    RAWNET2_OFFICIAL_MODEL_PY=/tmp/official/model.py .venv/bin/python bench/bench_stages.py --impl official
    .venv/bin/python bench/bench_stages.py --impl jax --gru-impl scan      # the GRU's other backward
    .venv/bin/python bench/bench_stages.py --quick                         # tiny sizes: does it run?

"fwd" is the eval forward, "f+b" the gradient of a fixed random projection of the stage's
output with respect to its parameters and its input (the front end: parameters only, as in
training). Each figure: median of ``--reps`` calls after two warm-ups, wall and process CPU ms
(with ``--threads 1`` CPU time is robust to a busy machine). tak2021 layout (the official code's);
``--preset`` takes any official-layout preset for ``--impl jax``.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))

import common  # noqa: E402


def stage_shapes(cfg, batch: int) -> dict[str, tuple[int, ...]]:
    """The input shape of every stage (channels-last for the blocks and the GRU)."""
    t = cfg.num_samples - (cfg.sinc_kernel_size - 1 if cfg.sinc_padding == "valid" else 0)
    t //= cfg.sinc_pool
    shapes: dict[str, tuple[int, ...]] = {"front": (batch, cfg.num_samples)}
    for i, (c_in, _) in enumerate(cfg.block_channels):
        shapes[f"block{i}"] = (batch, t, c_in)
        t //= cfg.block_pool
    shapes["gru"] = (batch, t, cfg.block_channels[-1][1])
    return shapes


def _timed(fn, reps: int) -> tuple[float, float]:
    fn()
    fn()
    wall, cpu = [], []
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall) * 1e3, statistics.median(cpu) * 1e3


def _jax_stages(cfg) -> dict:
    """name -> (flax module, differentiate the input too)."""
    import flax.linen as nn

    from rawnet2_jax.model import RawNet2

    class Stage(RawNet2):  # one stage of the model, built by the model's own helpers
        stage: str = "front"

        @nn.compact
        def __call__(self, x, train: bool = False):
            if self.stage == "front":
                return self._front(x, train, False, False)[0]
            if self.stage == "gru":
                return self._back(x, train, False, {})
            return self._block(int(self.stage[5:]), False, False)(x, train)

    return {name: (Stage(cfg, stage=name), name != "front") for name in stage_shapes(cfg, 1)}


def time_jax(cfg, batch: int, reps: int) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    out = {}
    for name, (mod, with_x) in _jax_stages(cfg).items():
        x = jnp.asarray(np.random.default_rng(0).standard_normal(stage_shapes(cfg, batch)[name]), jnp.float32)
        v = mod.init(jax.random.PRNGKey(0), x, False)
        params, rest = v["params"], {k: w for k, w in v.items() if k != "params"}

        def loss(p, x):
            y, _ = mod.apply({"params": p, **rest}, x, True, mutable=["batch_stats"])
            return jnp.sum(y * jnp.sin(jnp.arange(y.size, dtype=jnp.float32).reshape(y.shape)))

        fwd = jax.jit(lambda p, x: mod.apply({"params": p, **rest}, x, False))
        grad = jax.jit(jax.grad(loss, argnums=(0, 1) if with_x else 0))
        out[name] = {"fwd": _timed(lambda: jax.block_until_ready(fwd(params, x)), reps),
                     "f+b": _timed(lambda: jax.block_until_ready(grad(params, x)), reps)}
    return out


def _official_stages(cfg):
    import torch

    from bench_model import OFFICIAL_ENV, official_d_args

    spec = importlib.util.spec_from_file_location("official_rawnet2_model", os.environ[OFFICIAL_ENV])
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    net = mod.RawNet(copy.deepcopy(official_d_args(cfg)), "cpu")

    def front(x):
        x = net.Sinc_conv(x.view(x.shape[0], 1, -1))
        return net.selu(net.first_bn(torch.nn.functional.max_pool1d(torch.abs(x), 3)))

    def block(i):
        def f(x):  # the official forward's block + FMS lines
            x0 = getattr(net, f"block{i}")(x)
            y0 = net.sig(getattr(net, f"fc_attention{i}")(net.avgpool(x0).view(x0.size(0), -1)))
            y0 = y0.view(y0.size(0), y0.size(1), -1)
            return x0 * y0 + y0
        return f

    def back(x):
        x, _ = net.gru(net.selu(net.bn_before_gru(x)).permute(0, 2, 1))
        return net.fc2_gru(net.fc1_gru(x[:, -1, :]))

    return net, {"front": front, **{f"block{i}": block(i) for i in range(len(cfg.block_channels))}, "gru": back}


def time_official(cfg, batch: int, reps: int) -> dict:
    import numpy as np
    import torch

    net, fns = _official_stages(cfg)
    out = {}
    for name, fn in fns.items():
        xs = np.random.default_rng(0).standard_normal(stage_shapes(cfg, batch)[name]).astype(np.float32)
        x = torch.from_numpy(xs if xs.ndim == 2 else xs.transpose(0, 2, 1).copy())  # channels-first

        def fwd():
            net.eval()
            with torch.no_grad():
                fn(x)

        def fwd_bwd():
            net.train()
            xx = x.detach().requires_grad_(name != "front")
            y = fn(xx)
            (y * torch.sin(torch.arange(y.numel(), dtype=torch.float32)).reshape(y.shape)).sum().backward()

        out[name] = {"fwd": _timed(fwd, reps), "f+b": _timed(fwd_bwd, reps)}
    return out


def table(res: dict) -> str:
    rows, tot = [], [0.0] * 4
    for name, r in res.items():
        vals = [*r["fwd"], *r["f+b"]]
        tot = [a + b for a, b in zip(tot, vals)]
        rows.append([name, *(f"{v:.1f}" for v in vals), f"{r['f+b'][1] / r['fwd'][1]:.1f}"])
    rows.append(["total", *(f"{v:.1f}" for v in tot), f"{tot[3] / tot[1]:.1f}"])
    return common.markdown_table(["stage", "fwd wall ms", "fwd CPU ms", "f+b wall ms", "f+b CPU ms",
                                  "f+b / fwd CPU"], rows)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--impl", choices=("jax", "official"), default="jax")
    ap.add_argument("--preset", default="tak2021")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2, help="pin to this many CPUs (0: as started)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--gru-impl", default="auto", help="ModelConfig.gru_impl (jax only)")
    ap.add_argument("--quick", action="store_true", help="the preset's --quick size (bench/common.py)")
    a = ap.parse_args(argv)
    n = common.pin_threads(a.threads) if a.threads else len(os.sched_getaffinity(0))
    cfg = common.bench_config(a.preset, a.quick).replace(gru_impl=a.gru_impl)
    if a.impl == "official":
        import torch

        torch.set_num_threads(n)
        res = time_official(cfg, a.batch, a.reps)
    else:
        res = time_jax(cfg, a.batch, a.reps)
    print(f"{a.impl} {cfg.name} batch {a.batch}, {n} threads, load {os.getloadavg()[0]:.2f}")
    print(table(res))


if __name__ == "__main__":
    main()
