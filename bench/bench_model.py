"""RawNet2 speed on CPU: rawnet2-jax against the PyTorch reference modules, same weights.

    .venv/bin/python bench/bench_model.py                       # full run (long: see README)
    .venv/bin/python bench/bench_model.py --quick               # tiny models, seconds
    .venv/bin/python bench/bench_model.py --presets caa_rawnet2 --forward-batches 8 \
        --train-batches 8 --variants jax@thp,torch@thp,torchc@thp

What is measured, per preset (``caa_rawnet2``, ``tak2021``, ``asvspoof2021_baseline``):

* eval forward (logits only) at batch 1, 8, 32 and the full jitted train step of
  ``train/step.py`` (forward + backward + clip + Adam, the preset's recipe) at batch 8, 32;
* against ``convert/reference.py`` on the SAME weights (a torch model with random weights and
  calibrated BN statistics, converted with ``convert.tables.torch_to_flax``), same threads
  (CPU affinity pins XLA's pool and torch's OpenMP pool to ``--threads`` cores);
* every variant in its own subprocess, under an allocator environment (``common.ENVS``):
  ``jax`` (rawnet2_jax.model),
  ``torch`` (eager; forward under ``torch.inference_mode``), ``torchc`` (``torch.compile``;
  forward with inductor freezing, i.e. conv-BN folding and weight pre-packing);
* medians after warm-up; XLA compile time (``lower()`` and ``compile()``), ``torch.compile``
  first-call time; RSS high-water mark per subprocess and XLA's memory analysis; FLOPs
  (analytic, and XLA's cost analysis) and the fraction of a measured f32 matmul peak.

Correctness guard: every worker first checks its logits (forward) or its loss and raw
gradient norm (train step) against torch eager on the same input and refuses to time
(error in the table) when the relative difference exceeds ``--tolerance``.

Writes ``bench/results/bench_model[_quick].json`` and ``.md`` (a table ready for the README).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))

import common  # noqa: E402

PRESETS = ("caa_rawnet2", "tak2021", "asvspoof2021_baseline")
DEFAULT_VARIANTS = ("jax@default", "jax@thp",
                    "torch@default", "torch@malloc", "torch@thp", "torch@malloc+thp",
                    "torchc@default", "torchc@thp",
                    "official@default", "official@malloc", "official@thp", "officialc@thp")
# torch / torchc: convert/reference.py; official / officialc: the eurecom model.py itself
# (tak2021 only; its path in OFFICIAL_ENV), eager / torch.compile'd
TORCH_IMPLS = ("torch", "torchc", "official", "officialc")
IMPLS = ("jax", *TORCH_IMPLS)
OFFICIAL_ENV = "RAWNET2_OFFICIAL_MODEL_PY"
# XLA_FLAGS the compile probe tries (train step compile time vs step time)
COMPILE_FLAGS = {
    "default": "",
    "llvm_cheap": "--xla_llvm_disable_expensive_passes=true",
    "split1": "--xla_cpu_parallel_codegen_split_count=1",
    "llvm_cheap+split1": "--xla_llvm_disable_expensive_passes=true --xla_cpu_parallel_codegen_split_count=1",
    "no_fusion_emitters": "--xla_cpu_use_fusion_emitters=false",
}


def _ints(s: str) -> list[int]:
    return sorted({int(v) for v in s.split(",") if v.strip()})


# =========================================================================================
# workers (each runs in its own process; argv carries everything)
# =========================================================================================


def worker_prepare(a) -> dict:
    """Torch reference model -> npz: state dict, inputs, torch-eager reference outputs."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from convert.reference import reference_model

    torch.manual_seed(0)
    cfg = common.bench_config(a.preset, a.quick, a.num_samples)
    ref = reference_model(cfg)
    x_all = common.bench_inputs(a.max_batch, cfg.num_samples, seed=1)
    y_all = common.bench_labels(a.max_batch)
    # Realistic BN: affine params around (1, 0), running stats calibrated on the inputs each
    # BN sees in eval mode (so nothing saturates), then perturbed so eval != train mode.
    g = torch.Generator().manual_seed(1)
    bns = [m for m in ref.modules() if isinstance(m, torch.nn.BatchNorm1d)]

    def calibrate(mod, inputs):
        v = inputs[0].detach()
        dims = [0] + list(range(2, v.ndim))
        mean, var = v.mean(dims), v.var(dims).clamp(min=1e-6)
        mod.running_mean.copy_(mean + 0.1 * var.sqrt() * torch.randn(mean.shape, generator=g))
        mod.running_var.copy_(var * torch.empty(var.shape).uniform_(0.7, 1.4, generator=g))

    with torch.no_grad():
        for m in bns:
            m.weight.uniform_(0.5, 1.5, generator=g)
            m.bias.normal_(0.0, 0.2, generator=g)
        hooks = [m.register_forward_pre_hook(calibrate) for m in bns]
        ref.eval()
        ref(torch.from_numpy(x_all[: min(4, a.max_batch)]))
        for h in hooks:
            h.remove()
    sd = {k: v.detach().numpy().copy() for k, v in ref.state_dict().items()}

    with torch.inference_mode():
        logits = ref(torch.from_numpy(x_all[: a.fwd_check_batch]))[0].numpy()
    hp = common.train_hparams(cfg)
    ref.train()
    xb = torch.from_numpy(x_all[: a.train_check_batch])
    yb = torch.from_numpy(y_all[: a.train_check_batch]).long()
    out = ref(xb)[0]
    loss = F.cross_entropy(out, yb, weight=torch.tensor(hp["class_weights"]))
    loss.backward()
    gnorm = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in ref.parameters() if p.grad is not None))
    np.savez(a.data, x=x_all, y=y_all, ref_logits=logits, ref_loss=float(loss.detach()),
             ref_grad_norm=float(gnorm), **{f"sd/{k}": v for k, v in sd.items()})
    return {"ok": True, "num_params": int(sum(v.size for k, v in sd.items() if "num_batches" not in k))}


def worker_peak(a) -> dict:
    """f32 matmul GFLOP/s (n x n x n) of jnp and torch on this process's threads."""
    n = a.size
    out = {"size": n}
    import jax
    import jax.numpy as jnp

    x = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    y = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    f = jax.jit(lambda p, q: p @ q)
    t = common.time_fn(lambda: f(x, y).block_until_ready(), warmup=2, min_reps=a.min_reps,
                       max_seconds=a.max_seconds)
    out["jax_gflops"] = 2 * n**3 / t["min_s"] / 1e9
    out["jax_median_gflops"] = 2 * n**3 / t["median_s"] / 1e9
    try:
        import torch

        torch.set_num_threads(a.threads)
        tx, ty = torch.randn(n, n), torch.randn(n, n)
        t = common.time_fn(lambda: torch.mm(tx, ty), warmup=2, min_reps=a.min_reps,
                           max_seconds=a.max_seconds)
        out["torch_gflops"] = 2 * n**3 / t["min_s"] / 1e9
    except ImportError:
        out["torch_gflops"] = None
    return out


def _partial(a, res: dict) -> None:
    """Results so far (a later, larger batch may be killed for memory: keep the smaller ones)."""
    if a.out:
        common.write_json(Path(a.out), {**res, "partial": True, "threads": a.threads})


def _load(a):
    import numpy as np

    d = np.load(a.data)
    sd = {k[3:]: d[k] for k in d.files if k.startswith("sd/")}
    return d, sd


def _check(rows: dict, name: str, got: float | object, want, tol: float) -> bool:
    abs_d, rel_d = common.rel_diff(got, want)
    rows[name] = {"max_abs_diff": abs_d, "rel_diff": rel_d, "ok": bool(rel_d <= tol)}
    print(f"check {name}: max |diff| {abs_d:.3e} (rel {rel_d:.3e}) {'ok' if rel_d <= tol else 'MISMATCH'}",
          flush=True)
    return rel_d <= tol


def _cost(compiled) -> dict:
    out = {}
    try:
        ca = compiled.cost_analysis()
        if isinstance(ca, (list, tuple)):
            ca = ca[0] if ca else {}
        out["xla_flops"] = float(ca.get("flops", float("nan")))
        out["xla_bytes_accessed"] = float(ca.get("bytes accessed", float("nan")))
    except Exception as e:  # noqa: BLE001  (not every backend has it)
        out["cost_analysis_error"] = str(e)
    try:
        ma = compiled.memory_analysis()
        if ma is not None:
            for k in ("temp_size_in_bytes", "argument_size_in_bytes", "output_size_in_bytes",
                      "alias_size_in_bytes", "generated_code_size_in_bytes"):
                out[k] = int(getattr(ma, k, -1))
    except Exception as e:  # noqa: BLE001
        out["memory_analysis_error"] = str(e)
    return out


def _compile_timed(fn, *args) -> tuple[object, dict]:
    """``fn.lower(*args).compile()``, timed in two parts, with XLA's cost and memory analysis."""
    t0 = time.perf_counter()
    lowered = fn.lower(*args)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    return compiled, {"lower_s": t1 - t0, "compile_s": t2 - t1, **_cost(compiled)}


def _record(a, res: dict, b: int, row: dict, what: str, first: str) -> None:
    """Batch ``b``'s row into the result (written at once: a later batch may be killed)."""
    row["rss_peak_mb"] = common.peak_rss_mb()
    res["batches"][str(b)] = row
    _partial(a, res)
    print(f"{a.impl} {what} b{b}: {row['median_s'] * 1e3:.1f} ms ({first})", flush=True)


def worker_jax(a) -> dict:
    import jax
    import jax.numpy as jnp

    from convert.tables import torch_to_flax

    cfg = common.bench_config(a.preset, a.quick, a.num_samples)
    d, sd = _load(a)
    variables = jax.tree.map(jnp.asarray, torch_to_flax(sd, cfg))
    jnp.zeros(1).block_until_ready()  # backend start-up is not compile time
    res: dict = {"impl": a.impl, "mode": a.mode, "checks": {}, "batches": {},
                 "rss_setup_mb": common.peak_rss_mb()}
    if a.mode == "forward":
        _jax_forward(a, res, cfg, variables, d)
    else:
        _jax_train(a, res, cfg, variables, d)
    return res


def _jax_forward(a, res: dict, cfg, variables, d) -> None:
    """The jitted eval forward (logits only) at every batch; logits checked at the smallest."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from rawnet2_jax.model import RawNet2

    model = RawNet2(cfg)
    jitted = jax.jit(lambda v, x: model.apply(v, x, train=False)[0])
    for b in a.batches:
        x = jnp.asarray(d["x"][:b])
        compiled, row = _compile_timed(jitted, variables, x)
        if b == a.fwd_check_batch and not _check(res["checks"], f"logits_b{b}",
                                                 np.asarray(compiled(variables, x)), d["ref_logits"],
                                                 a.tolerance):
            res["error"] = f"logits differ from torch (batch {b}); not timed"
            return
        row.update(common.time_fn(lambda: compiled(variables, x).block_until_ready(),
                                  a.warmup, a.min_reps, a.max_seconds))
        _record(a, res, b, row, "forward", f"compile {row['compile_s']:.2f} s")


def _jax_train(a, res: dict, cfg, variables, d) -> None:
    """The jitted train step of train/step.py at every batch; loss and gradient norm checked
    at the smallest."""
    import jax
    import jax.numpy as jnp

    from train.state import create_train_state
    from train.step import build_model, make_train_step

    tcfg = common.train_config(cfg)
    state0 = create_train_state(variables, tcfg)
    core = make_train_step(build_model(tcfg), tcfg).core
    for b in a.batches:
        batch = {"audio": jnp.asarray(d["x"][:b]), "label": jnp.asarray(d["y"][:b])}
        compiled, row = _compile_timed(core, state0, batch, None)
        state, metrics = compiled(state0, batch, None)
        if b == a.train_check_batch and not _check_train(res, b, float(metrics["loss"]),
                                                         float(metrics["grad_norm"]), d, a.tolerance):
            return
        box = [state]

        def step():
            box[0] = compiled(box[0], batch, None)[0]
            jax.block_until_ready(box[0])

        row.update(common.time_fn(step, a.warmup, a.min_reps, a.max_seconds))
        _record(a, res, b, row, "train", f"compile {row['compile_s']:.2f} s")


def _check_train(res: dict, b: int, loss: float, grad_norm: float, d, tol: float) -> bool:
    """The first step's loss and raw gradient norm against torch eager's; an error if not."""
    ok = _check(res["checks"], f"loss_b{b}", loss, float(d["ref_loss"]), tol)
    ok &= _check(res["checks"], f"grad_norm_b{b}", grad_norm, float(d["ref_grad_norm"]), tol)
    if not ok:
        res["error"] = f"train step differs from torch eager (batch {b}); not timed"
    return ok


def worker_compile(a) -> dict:
    """Train-step compile time (fresh process) under the XLA_FLAGS / cache env it was given,
    plus one step's time (a flag that compiles faster but runs slower must show it)."""
    import jax
    import jax.numpy as jnp

    from convert.tables import torch_to_flax
    from train.state import create_train_state
    from train.step import build_model, make_train_step

    cfg = common.bench_config(a.preset, a.quick, a.num_samples)
    d, sd = _load(a)
    variables = jax.tree.map(jnp.asarray, torch_to_flax(sd, cfg))
    tcfg = common.train_config(cfg)
    state = create_train_state(variables, tcfg)
    core = make_train_step(build_model(tcfg), tcfg).core
    b = a.batches[0]
    batch = {"audio": jnp.asarray(d["x"][:b]), "label": jnp.asarray(d["y"][:b])}
    jnp.zeros(1).block_until_ready()
    t0 = time.perf_counter()
    lowered = core.lower(state, batch, None)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    state, _ = compiled(state, batch, None)
    jax.block_until_ready(state)
    step = common.time_fn(lambda: jax.block_until_ready(compiled(state, batch, None)), 0, 1, 0.0)
    return {"batch": b, "lower_s": t1 - t0, "compile_s": t2 - t1, "step_s": step["median_s"],
            "step_cpu_s": step["cpu_median_s"], "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "cache": bool(os.environ.get("JAX_COMPILATION_CACHE_DIR"))}


def official_d_args(cfg) -> dict:
    """The official ``RawNet(d_args, device)`` arguments of an official-layout config (tak2021
    and its --quick size: 2 + 4 blocks, the official code's fixed depth)."""
    c0, c1, c2 = cfg.sinc_filters, cfg.first_block_channels, cfg.second_block_channels
    return {"in_channels": 1, "first_conv": cfg.sinc_kernel_size, "filts": [c0, [c0, c1], [c1, c2], [c2, c2]],
            "blocks": [cfg.num_first_blocks, cfg.num_second_blocks], "nb_fc_node": cfg.embedding_dim,
            "gru_node": cfg.gru_hidden, "nb_gru_layer": cfg.gru_layers, "nb_classes": cfg.num_classes}


def official_unsupported(preset: str, quick: bool) -> str | None:
    """Why the official variants cannot run on ``preset`` (None when they can)."""
    cfg = common.bench_config(preset, quick)
    if cfg.layout != "official" or cfg.sinc_edges != "eurecom":
        return "the official eurecom model.py builds the tak2021 layout only"
    if not os.environ.get(OFFICIAL_ENV):
        return f"{OFFICIAL_ENV} is not set (the path of eurecom-asp/rawnet2-antispoofing's model.py)"
    return None


def _torch_module(a, cfg, sd):
    """(module, logits(x)) with the benchmark's weights: the official eurecom model.py (impl
    ``official`` / ``officialc``) or our reference (``torch`` / ``torchc``); strict loads."""
    import copy
    import importlib.util

    import numpy as np
    import torch

    state = {k: torch.from_numpy(np.array(v)) for k, v in sd.items()}
    if a.impl.startswith("official"):
        spec = importlib.util.spec_from_file_location("official_rawnet2_model", os.environ[OFFICIAL_ENV])
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod  # torch.compile looks the module up by name
        spec.loader.exec_module(mod)
        net = mod.RawNet(copy.deepcopy(official_d_args(cfg)), "cpu")  # it mutates d_args
        net.load_state_dict(state, strict=True)
        return net, net
    from convert.reference import reference_model

    ref = reference_model(cfg)
    ref.load_state_dict(state, strict=True)
    return ref, lambda x: ref(x)[0]


def worker_torch(a) -> dict:
    import torch

    torch.set_num_threads(a.threads)
    cfg = common.bench_config(a.preset, a.quick, a.num_samples)
    d, sd = _load(a)
    module, logits = _torch_module(a, cfg, sd)
    res: dict = {"impl": a.impl, "mode": a.mode, "checks": {}, "batches": {},
                 "torch_threads": torch.get_num_threads(), "rss_setup_mb": common.peak_rss_mb()}
    if a.mode == "forward":
        _torch_forward(a, res, module, logits, d)
    else:
        _torch_train(a, res, cfg, module, logits, d)
    return res


def _torch_forward(a, res: dict, module, logits, d) -> None:
    """Eval forward under inference_mode (``torch.compile`` with inductor freezing for the
    compiled impls) at every batch; logits checked at the smallest."""
    import numpy as np
    import torch

    module.eval()
    if a.impl.endswith("c"):
        import torch._inductor.config as ind

        ind.freezing = True  # conv-BN folding, constant folding, weight pre-packing
        logits = torch.compile(logits, dynamic=False)
    for b in a.batches:
        x = torch.from_numpy(np.array(d["x"][:b]))
        row = {}
        with torch.inference_mode():
            t0 = time.perf_counter()
            out = logits(x)
            row["first_call_s"] = time.perf_counter() - t0
            if b == a.fwd_check_batch and not _check(res["checks"], f"logits_b{b}", out.numpy(),
                                                     d["ref_logits"], a.tolerance):
                res["error"] = f"logits differ from torch eager (batch {b}); not timed"
                return
            row.update(common.time_fn(lambda: logits(x), a.warmup, a.min_reps, a.max_seconds))
        _record(a, res, b, row, "forward", f"first call {row['first_call_s']:.2f} s")


def _torch_adam(res: dict, params: list, hp: dict):
    """The recipe's Adam (coupled L2), fused where this torch has it, else foreach."""
    import torch

    b1, b2, eps = hp["adam"]
    kw = {"lr": hp["learning_rate"], "betas": (b1, b2), "eps": eps, "weight_decay": hp["weight_decay"]}
    try:
        res["adam"] = "fused"
        return torch.optim.Adam(params, **kw, fused=True)
    except (RuntimeError, TypeError, ValueError):
        res["adam"] = "foreach"
        return torch.optim.Adam(params, **kw, foreach=True)


def _torch_train(a, res: dict, cfg, module, logits, d) -> None:
    """Weighted CE -> backward -> clip_grad_norm_ -> Adam at every batch (loss + backward
    compiled for the compiled impls); loss and gradient norm checked at the smallest."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    hp = common.train_hparams(cfg)
    module.train()
    params = [p for p in module.parameters() if p.requires_grad]
    opt = _torch_adam(res, params, hp)
    w = torch.tensor(hp["class_weights"])
    clip = hp["grad_clip_norm"] or float("inf")

    def loss_fn(x, y):
        return F.cross_entropy(logits(x), y, weight=w)

    if a.impl.endswith("c"):
        loss_fn = torch.compile(loss_fn, dynamic=False)

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(x, y)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        return loss, norm

    for b in a.batches:
        x = torch.from_numpy(np.array(d["x"][:b]))
        y = torch.from_numpy(np.array(d["y"][:b])).long()
        t0 = time.perf_counter()
        loss, norm = step(x, y)
        row = {"first_call_s": time.perf_counter() - t0}
        if b == a.train_check_batch and not _check_train(res, b, float(loss.detach()), float(norm), d,
                                                         a.tolerance):
            return
        row.update(common.time_fn(lambda: step(x, y), a.warmup, a.min_reps, a.max_seconds))
        _record(a, res, b, row, "train", f"first call {row['first_call_s']:.2f} s")


def run_worker_main(a) -> None:
    n = a.threads if a.inprocess else common.pin_threads(a.threads)
    a.threads = n
    fn = {"prepare": worker_prepare, "peak": worker_peak, "compile": worker_compile,
          "jax": worker_jax, **{impl: worker_torch for impl in TORCH_IMPLS}}[a.worker]
    if a.worker in IMPLS:
        a.impl = a.worker
    res = fn(a)
    res["threads"] = n
    common.write_json(Path(a.out), res)


# =========================================================================================
# driver
# =========================================================================================


def _common_args(a) -> list[str]:
    out = ["--threads", str(a.threads), "--warmup", str(a.warmup), "--min-reps", str(a.min_reps),
           "--max-seconds", str(a.max_seconds), "--tolerance", str(a.tolerance)]
    if a.quick:
        out.append("--quick")
    if a.num_samples:
        out += ["--num-samples", str(a.num_samples)]
    return out


def _x(v) -> str:
    return common.fmt(v, ".2f") + "x" if v else "-"


def _speed_table(report: dict) -> list[str]:
    header = ["preset", "what", "batch", "JAX ms", "torch eager ms", "torch.compile ms",
              "official eager ms", "official compiled ms", "speed-up vs best torch",
              "vs official", "CPU-time vs torch / official", "JAX % peak",
              "torch / official % peak", "peak RSS JAX / torch / official MiB"]
    rows = []
    for p in report["presets"]:
        for r in p["summary"]:
            rows.append([
                p["preset"], r["mode"], r["batch"], _ms(r, "jax"), _ms(r, "torch"), _ms(r, "torchc"),
                _ms(r, "official"), _ms(r, "officialc"), _x(r.get("torch_speedup", r.get("speedup"))),
                _x(r.get("official_speedup")),
                f"{_x(r.get('torch_cpu_speedup', r.get('cpu_speedup')))} / {_x(r.get('official_cpu_speedup'))}",
                common.fmt(r.get("jax_pct_peak"), ".0f"),
                f"{common.fmt(r.get('torch_pct_peak'), '.0f')} / {common.fmt(r.get('official_pct_peak'), '.0f')}",
                " / ".join(common.fmt(r.get(f"{g}_rss_mb"), ".0f") for g in ("jax", "torch", "official")),
            ])
    return ["", common.markdown_table(header, rows),
            "\nms: median after warm-up, best allocator environment in brackets "
            "(default / malloc / thp / malloc+thp, see bench/common.py). torch = convert/reference.py, "
            "official = the eurecom model.py itself (tak2021 only). Speed-up = the group's best "
            "(eager or compiled, any environment) / best JAX; "
            "CPU-time: the same ratio of process CPU seconds (robust to a busy machine with "
            "`--threads 1`; inflated by spinning thread pools otherwise). % peak: analytic FLOPs / time / "
            "f32 matmul peak (the better of jnp and torch.mm). RSS: high-water mark of the measuring "
            "process (ascending batches)."]


def _compile_table(report: dict) -> list[str]:
    header = ["preset", "GFLOP/utt fwd (analytic)", "XLA fwd GFLOP/utt", "GFLOP/utt train (analytic)",
              "XLA train GFLOP/utt", "fwd compile s", "train compile s",
              "torch.compile 1st call s fwd / train", "XLA temp MiB fwd / train"]
    rows = []
    for p in report["presets"]:
        c = p["compile"]
        first = {t: c.get(f"torchc_{t}_first_s", c.get(f"officialc_{t}_first_s")) for t in ("fwd", "train")}
        rows.append([
            p["preset"], common.fmt(p["flops"]["forward"] / 1e9, ".2f"),
            common.fmt(c.get("xla_fwd_gflop_per_utt"), ".2f"), common.fmt(p["flops"]["train"] / 1e9, ".2f"),
            common.fmt(c.get("xla_train_gflop_per_utt"), ".2f"),
            *(f"{common.fmt(c.get(f'{t}_lower_s'), '.2f')} + {common.fmt(c.get(f'{t}_compile_s'), '.2f')}"
              f" (b{c.get(f'{t}_batch', '-')})" for t in ("fwd", "train")),
            f"{common.fmt(first['fwd'], '.1f')} / {common.fmt(first['train'], '.1f')}",
            f"{common.fmt(c.get('fwd_temp_mb'), '.0f')} / {common.fmt(c.get('train_temp_mb'), '.0f')}",
        ])
    return ["", common.markdown_table(header, rows),
            "\nCompile: `lower()` + `compile()` seconds of the jitted forward / train step in a fresh "
            "process at the batch in brackets (8, or the nearest timed one); XLA temp: "
            "`memory_analysis()` at that batch. XLA GFLOP from `compiled.cost_analysis()` (a "
            "`lax.scan` body is counted once, so the GRU is under-counted)."]


def _probe_table(report: dict) -> list[str]:
    probes = [(p["preset"], p["compile_probe"]) for p in report["presets"] if p.get("compile_probe")]
    if not probes:
        return []
    names = [n for n in (*COMPILE_FLAGS, "cache_cold", "cache_warm") if any(n in pr for _, pr in probes)]
    rows = []
    for preset, pr in probes:
        cells = ["-" if "compile_s" not in pr.get(n, {}) else
                 f"{pr[n]['lower_s']:.2f} + {pr[n]['compile_s']:.2f} (step {pr[n]['step_s']:.2f})"
                 for n in names]
        rows.append([preset, next((r.get("batch") for r in pr.values() if "batch" in r), "-"), *cells])
    return ["\nTrain-step compile, fresh process each: `lower` + `compile` s (one step's s): "
            "`XLA_FLAGS` as in `COMPILE_FLAGS` of bench_model.py (llvm_cheap: "
            "`--xla_llvm_disable_expensive_passes=true`, split1: "
            "`--xla_cpu_parallel_codegen_split_count=1`, no_fusion_emitters: "
            "`--xla_cpu_use_fusion_emitters=false`); with the persistent "
            "compilation cache (`JAX_COMPILATION_CACHE_DIR`) empty, then filled by the previous "
            "process (there `lower` + `compile` is the time until the first step starts).\n",
            common.markdown_table(["preset", "batch", *names], rows)]


def _pipeline_table(report: dict) -> list[str]:
    pipe = report.get("pipeline")
    if not pipe:
        return []
    return [f"\nInput pipeline (bench/bench_pipeline.py: {pipe.get('num_utts')} utterances of "
            f"{common.fmt(pipe.get('mean_seconds'), '.1f')} s, batch {pipe.get('batch_size')}, "
            f"{pipe.get('cpu_count')} CPUs):\n",
            common.markdown_table(["what", "preset", "threads", "workers", "utt/s"],
                                  [[r.get("what"), r.get("preset"), r.get("threads"), r.get("workers"),
                                    common.fmt(r.get("utt_per_s"), ".0f")] for r in pipe.get("results", [])])]


def summarise(report: dict) -> str:
    """The markdown report: machine, speed, compile (and probe), pipeline, errors / skips."""
    m, pk = report["machine"], report["peak"]
    lines = [f"**Machine:** {common.machine_line(m)}; {report['threads']} threads for both frameworks; "
             f"f32 matmul peak {common.fmt(_peak(pk), '.0f')} GFLOP/s (best of {pk.get('size')}^3 "
             f"jnp {common.fmt(pk.get('jax_gflops'), '.0f')} / torch.mm {common.fmt(pk.get('torch_gflops'), '.0f')})."]
    if report.get("quick"):
        lines.append("\n**QUICK RUN (tiny models): timings say nothing about the real presets.**")
    lines += _speed_table(report) + _compile_table(report) + _probe_table(report) + _pipeline_table(report)
    errs = [f"- {p['preset']} {v}: {e}" for p in report["presets"] for v, e in p.get("errors", {}).items()]
    if errs:
        lines.append("\n**Errors / refused variants:**\n" + "\n".join(errs))
    skips = sorted({f"- {p['preset']} {v.split('/')[0]}: {e}" for p in report["presets"]
                    for v, e in p.get("skipped", {}).items()})
    if skips:
        lines.append("\nSkipped:\n" + "\n".join(skips))
    return "\n".join(lines)


def _peak(peak: dict) -> float | None:
    """The machine's measured f32 GEMM peak: the better of jnp's and torch.mm's matmul
    (single-threaded, MKL's sgemm can beat XLA's by ~25%: a jnp-only peak would flatter)."""
    vals = [v for v in (peak.get("jax_gflops"), peak.get("torch_gflops")) if v]
    return max(vals) if vals else None


def _ms(r: dict, impl: str) -> str:
    v = r.get(f"{impl}_s")
    if v is None:
        return "-"
    return f"{v * 1e3:.1f} ({r.get(f'{impl}_env')})"


def _nearest(batches: dict, target: int):
    if not batches:
        return None, None
    k = min(batches, key=lambda s: (abs(int(s) - target), int(s)))
    return int(k), batches[k]


# The PyTorch sides a JAX row is compared with: the best of each group's impls (any environment).
GROUPS = {"torch": ("torch", "torchc"), "official": ("official", "officialc")}


def _best_run(runs: dict, impl: str, mode: str, b: int) -> tuple[str, dict] | None:
    """(environment, batch row) of ``impl``'s fastest error-free run of ``mode`` at batch ``b``."""
    best = None
    for run in runs.values():
        if run.get("impl") != impl or run.get("mode") != mode or "error" in run:
            continue
        row = run["batches"].get(str(b))
        if row and (best is None or row["median_s"] < best[1]["median_s"]):
            best = (run["env"], row)
    return best


def _summary_row(runs: dict, mode: str, b: int, peak: float | None, work: float) -> dict:
    """One (mode, batch) row: every impl's best time, each torch group's best and the ratios."""
    r: dict = {"mode": mode, "batch": b}
    rss = {}
    for impl in IMPLS:
        best = _best_run(runs, impl, mode, b)
        if best:
            r[f"{impl}_env"], row = best
            r[f"{impl}_s"], r[f"{impl}_cpu_s"] = row["median_s"], row.get("cpu_median_s")
            rss[impl] = row.get("rss_peak_mb")
    for group, impls in GROUPS.items():
        times = {i: r[f"{i}_s"] for i in impls if f"{i}_s" in r}
        if not times:
            continue
        fastest = min(times, key=times.get)
        r[f"{group}_best_s"], r[f"{group}_rss_mb"] = times[fastest], rss.get(fastest)
        cpu = [r[f"{i}_cpu_s"] for i in impls if r.get(f"{i}_cpu_s")]
        if "jax_s" in r:
            r[f"{group}_speedup"] = times[fastest] / r["jax_s"]
            if cpu and r.get("jax_cpu_s"):
                r[f"{group}_cpu_speedup"] = min(cpu) / r["jax_cpu_s"]
        if peak:
            r[f"{group}_pct_peak"] = 100 * work / times[fastest] / 1e9 / peak
    if peak and "jax_s" in r:
        r["jax_gflops"] = work / r["jax_s"] / 1e9
        r["jax_pct_peak"] = 100 * r["jax_gflops"] / peak
    r["jax_rss_mb"] = rss.get("jax")
    # the names the README tables and older JSON readers use for the reference group
    for old, new in (("speedup", "torch_speedup"), ("cpu_speedup", "torch_cpu_speedup")):
        if new in r:
            r[old] = r[new]
    return r


def _compile_summary(runs: dict) -> dict:
    """Compile numbers of the default-environment JAX runs (batch 8 or the nearest) and
    torch.compile's first calls."""
    c: dict = {}
    for mode, tag in (("forward", "fwd"), ("train", "train")):
        run = runs.get(f"jax@default/{mode}") or next(
            (v for v in runs.values() if v.get("impl") == "jax" and v.get("mode") == mode and "error" not in v), None)
        if run and "error" not in run:
            b, row = _nearest(run["batches"], 8)
            if row:
                c[f"{tag}_batch"] = b
                c[f"{tag}_lower_s"] = row["lower_s"]
                c[f"{tag}_compile_s"] = row["compile_s"]
                if "xla_flops" in row:
                    c[f"xla_{tag}_gflop_per_utt"] = row["xla_flops"] / b / 1e9
                if "temp_size_in_bytes" in row:
                    c[f"{tag}_temp_mb"] = row["temp_size_in_bytes"] / 2**20
        for impl in ("torchc", "officialc"):
            run = next((v for v in runs.values() if v.get("impl") == impl and v.get("mode") == mode
                        and "error" not in v), None)
            b, row = _nearest(run["batches"], 8) if run else (None, None)
            if row:
                c[f"{impl}_{tag}_first_s"] = row["first_call_s"]
    return c


def summarise_preset(pres: dict, peak: float | None, flops: dict) -> None:
    """``pres["summary"]`` (a row per mode and batch) and ``pres["compile"]``."""
    pres["summary"] = [_summary_row(pres["runs"], mode, b, peak, flops[mode] * b)
                       for mode, batches in (("forward", pres["forward_batches"]),
                                             ("train", pres["train_batches"]))
                       for b in batches]
    pres["compile"] = _compile_summary(pres["runs"])


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default=",".join(PRESETS))
    ap.add_argument("--forward-batches", default="1,8,32")
    ap.add_argument("--train-batches", default="8,32")
    ap.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                    help="impl@env list; impl in " + ", ".join(IMPLS) + " (official*: tak2021 with "
                         f"{OFFICIAL_ENV} set, skipped otherwise); env in "
                         + ", ".join(common.ENVS))
    ap.add_argument("--modes", default="forward,train")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--quick", action="store_true", help="tiny models with each preset's structure")
    ap.add_argument("--num-samples", type=int, default=None, help="override the preset's input length")
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--min-reps", type=int, default=None)
    ap.add_argument("--max-seconds", type=float, default=None, help="timing budget per measurement")
    ap.add_argument("--tolerance", type=float, default=1e-3, help="max relative diff vs torch eager")
    ap.add_argument("--peak-size", type=int, default=None, help="matmul size of the f32 peak")
    ap.add_argument("--worker-timeout", type=float, default=3600)
    ap.add_argument("--out-dir", default=str(common.RESULTS))
    ap.add_argument("--tag", default=None, help="results file name suffix")
    ap.add_argument("--compile-probe", default="auto", choices=("auto", "on", "off"),
                    help="train-step compile time under XLA flag / persistent-cache variants "
                         "(auto: on unless --quick)")
    ap.add_argument("--compile-flags", default=",".join(COMPILE_FLAGS),
                    help="which COMPILE_FLAGS settings the compile probe tries (the cold and warm "
                         "persistent cache always run)")
    ap.add_argument("--pipeline-json", default=None,
                    help="bench_pipeline.py's JSON to include in the report (run_all.sh)")
    ap.add_argument("--report-from", default=None,
                    help="only re-render the markdown of an existing bench_model JSON")
    ap.add_argument("--inprocess", action="store_true",
                    help="run the workers in this process (tests / debugging: no allocator "
                         "environments, no thread pinning, RSS is the whole run's)")
    # worker-only
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--mode", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--preset", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--batches", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--data", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--max-batch", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--fwd-check-batch", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--train-check-batch", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--size", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    return ap


def main(argv=None) -> None:
    ap = build_parser()
    a = ap.parse_args(argv)
    _fill_defaults(a)
    if a.worker:
        if a.batches:
            a.batches = _ints(a.batches)
        run_worker_main(a)
        return
    if a.report_from:
        rerender(a)
        return
    t_start = time.perf_counter()
    presets, variants, fwd_b, train_b = _selection(ap, a)
    out_dir = Path(a.out_dir)
    work = out_dir / "_work"
    work.mkdir(parents=True, exist_ok=True)
    run = _runner(a)

    machine = common.machine_info()
    print(common.machine_line(machine), flush=True)
    peak = measure_peak(a, run)
    report = {"machine": machine, "threads": a.threads, "quick": a.quick, "peak": peak,
              "args": {k: v for k, v in vars(a).items() if v is not None}, "presets": []}
    for preset in presets:
        report["presets"].append(bench_preset(a, run, preset, variants, fwd_b, train_b, work, peak))
    report["total_wall_s"] = time.perf_counter() - t_start
    write_report(a, report, out_dir)


def _fill_defaults(a) -> None:
    """Repetition defaults: a full run times longer, ``--quick`` only checks that it runs."""
    if a.warmup is None:
        a.warmup = 1 if not a.quick else 2
    if a.min_reps is None:
        a.min_reps = 5 if not a.quick else 3
    if a.max_seconds is None:
        a.max_seconds = 20.0 if not a.quick else 1.0


def _load_pipeline(a, report: dict) -> None:
    if a.pipeline_json and Path(a.pipeline_json).exists():
        report["pipeline"] = json.loads(Path(a.pipeline_json).read_text())


def rerender(a) -> None:
    """``--report-from``: the markdown of an existing JSON again (with ``--pipeline-json``'s numbers)."""
    src = Path(a.report_from)
    report = json.loads(src.read_text())
    _load_pipeline(a, report)
    md = summarise(report)
    src.with_suffix(".md").write_text(md + "\n")
    common.write_json(src, report)
    print(md)


def _selection(ap: argparse.ArgumentParser, a) -> tuple[list[str], list[str], list[int], list[int]]:
    """Presets, ``impl@env`` variants, forward and train batch sizes; unknown names stop here."""
    presets = [p.strip() for p in a.presets.split(",") if p.strip()]
    bad = [p for p in presets if p not in PRESETS]
    variants = [v.strip() for v in a.variants.split(",") if v.strip()]
    bad += [v for v in variants if "@" not in v or v.split("@")[0] not in IMPLS
            or v.split("@", 1)[1] not in common.ENVS]
    bad += [f for f in a.compile_flags.split(",") if f.strip() and f.strip() not in COMPILE_FLAGS]
    if bad:
        ap.error(f"unknown preset / variant / compile flag: {', '.join(bad)}")
    modes = [m.strip() for m in a.modes.split(",") if m.strip()]
    fwd_b = _ints(a.forward_batches) if "forward" in modes else []
    train_b = _ints(a.train_batches) if "train" in modes else []
    return presets, variants, fwd_b, train_b


def _runner(a) -> Callable[..., dict]:
    """``run(worker_args, env, extra_env)``: one worker in its own subprocess under allocator
    environment ``env`` or, with ``--inprocess``, in this process (same result dict)."""
    script = Path(__file__).resolve()

    def run(args: list[str], env: str, extra_env: dict | None = None) -> dict:
        if not a.inprocess:
            return common.run_worker(script, args, env, a.worker_timeout, extra_env=extra_env)
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "out.json"
            t0 = time.perf_counter()
            try:
                main([*args, "--inprocess", "--out", str(out)])
                res = json.loads(out.read_text())
            except Exception as e:  # noqa: BLE001  (reported like a failed subprocess)
                res = {"error": f"{type(e).__name__}: {e}"}
        res["process_wall_s"] = time.perf_counter() - t0
        res["env"] = "inprocess"
        return res

    return run


def measure_peak(a, run: Callable[..., dict]) -> dict:
    """The f32 matmul peak (jnp and torch.mm) the %-of-peak columns divide by."""
    peak_size = a.peak_size or (1024 if a.quick else 4096)
    print(f"f32 matmul peak ({peak_size}^3) ...", flush=True)
    peak = run(["--worker", "peak", "--size", str(peak_size), *_common_args(a)], "default")
    print(f"  jnp {common.fmt(peak.get('jax_gflops'), '.1f')} GFLOP/s, torch.mm "
          f"{common.fmt(peak.get('torch_gflops'), '.1f')} GFLOP/s", flush=True)
    return peak


def bench_preset(a, run: Callable[..., dict], preset: str, variants: list[str], fwd_b: list[int],
                 train_b: list[int], work: Path, peak: dict) -> dict:
    """One preset: prepare its weights and data, time every variant and mode, probe compile."""
    cfg = common.bench_config(preset, a.quick, a.num_samples)
    flops = common.analytic_flops(cfg)
    data = work / f"{cfg.name}_{cfg.num_samples}.npz"
    fwd_check = min(fwd_b) if fwd_b else 1
    train_check = min(train_b) if train_b else 2
    check_args = ["--preset", preset, "--data", str(data), "--fwd-check-batch", str(fwd_check),
                  "--train-check-batch", str(train_check)]
    print(f"\n== {preset} ({cfg.num_samples} samples, {flops['forward'] / 1e9:.2f} GFLOP/utt forward) ==",
          flush=True)
    prep = run(["--worker", "prepare", "--max-batch", str(max(fwd_b + train_b)), *check_args, *_common_args(a)],
               "default")
    pres = {"preset": preset, "config": cfg.to_dict(), "flops": flops,
            "macs": common.analytic_macs(cfg), "forward_batches": fwd_b, "train_batches": train_b,
            "runs": {}, "errors": {}}
    if "error" in prep:
        pres["errors"]["prepare"] = prep["error"]
        print(f"  prepare failed: {prep['error']}", flush=True)
        return pres
    pres["num_params"] = prep.get("num_params")
    _time_variants(a, run, pres, variants, fwd_b, train_b, check_args)
    probe = a.compile_probe == "on" or (a.compile_probe == "auto" and not a.quick)
    if probe and train_b:
        pres["compile_probe"] = _compile_probe(a, run, pres, min(train_b), check_args)
    summarise_preset(pres, _peak(peak), flops)
    return pres


def _time_variants(a, run: Callable[..., dict], pres: dict, variants: list[str], fwd_b: list[int],
                   train_b: list[int], check_args: list[str]) -> None:
    """Every ``impl@env`` variant in forward and train mode into ``pres["runs"]`` (errors noted)."""
    for mode, batches in (("forward", fwd_b), ("train", train_b)):
        if not batches:
            continue
        for v in variants:
            impl, env = v.split("@", 1)
            why_not = impl.startswith("official") and official_unsupported(pres["preset"], a.quick)
            if why_not:
                pres.setdefault("skipped", {})[f"{v}/{mode}"] = why_not
                print(f"  {v} {mode}: skipped ({why_not})", flush=True)
                continue
            print(f"  {v} {mode} ...", flush=True)
            res = run(["--worker", impl, "--mode", mode, "--batches", ",".join(map(str, batches)),
                       *check_args, *_common_args(a)], env)
            res.setdefault("impl", impl)
            res.setdefault("mode", mode)
            pres["runs"][f"{v}/{mode}"] = res
            if "error" in res:
                pres["errors"][f"{v}/{mode}"] = res["error"][:300]
                print(f"    ERROR: {res['error']}", flush=True)


def _known_compile_flags(names: list[str], pres: dict) -> list[str]:
    """The ``COMPILE_FLAGS`` settings whose flags the installed jaxlib knows (XLA aborts on an
    unknown flag); each one left out is said, printed and recorded under ``skipped``."""
    from rawnet2_jax.xla_flags import jaxlib_version, known_flags

    keep = []
    for name in names:
        dropped = known_flags(COMPILE_FLAGS[name].split())[1]
        if not dropped:
            keep.append(name)
            continue
        why = f"jaxlib {'.'.join(map(str, jaxlib_version()))}'s XLA does not know {' '.join(dropped)}: setting dropped"
        pres.setdefault("skipped", {})[f"compile probe {name}"] = why
        print(f"  compile probe {name}: skipped ({why})", flush=True)
    return keep


def _compile_probe(a, run: Callable[..., dict], pres: dict, batch: int, check_args: list[str]) -> dict:
    """Train-step compile time under each of ``COMPILE_FLAGS`` and with a cold / warm persistent cache."""
    import tempfile

    out = {}
    with tempfile.TemporaryDirectory() as cache:
        cache_env = {"JAX_COMPILATION_CACHE_DIR": cache,
                     "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
                     "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
        flags = _known_compile_flags([n.strip() for n in a.compile_flags.split(",") if n.strip()], pres)
        for name, extra in [*((n, {"XLA_FLAGS": COMPILE_FLAGS[n]}) for n in flags),
                            ("cache_cold", {"XLA_FLAGS": "", **cache_env}),
                            ("cache_warm", {"XLA_FLAGS": "", **cache_env})]:
            print(f"  compile probe {name} ...", flush=True)
            res = run(["--worker", "compile", "--batches", str(batch), *check_args, *_common_args(a)],
                      "default", extra)
            out[name] = res
            if "error" in res:
                pres["errors"][f"compile/{name}"] = res["error"][:300]
            else:
                print(f"    lower {res['lower_s']:.2f} s, compile {res['compile_s']:.2f} s, "
                      f"step {res['step_s']:.2f} s (cpu {res['step_cpu_s']:.2f} s)", flush=True)
    return out


def write_report(a, report: dict, out_dir: Path) -> None:
    """``bench_model[_TAG].json`` and ``.md`` (the markdown printed too)."""
    _load_pipeline(a, report)
    md = summarise(report)
    tag = a.tag or ("quick" if a.quick else None)
    stem = "bench_model" + (f"_{tag}" if tag else "")
    common.write_json(out_dir / f"{stem}.json", report)
    (out_dir / f"{stem}.md").write_text(md + "\n")
    print("\n" + md)
    print(f"\nwrote {out_dir / (stem + '.json')} and .md ({report['total_wall_s']:.0f} s)")

if __name__ == "__main__":
    main()
