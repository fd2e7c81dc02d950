"""The accelerator check: everything worth knowing from ONE short call on one GPU.

    bench/device_check.sh            # on the GPU machine (about 7 minutes, time-boxed)
    bench/device_check.sh --smoke    # the same code on CPU with tiny models (a minute or two)

Measures, all on synthetic batches (no dataset, no TFDS):

* ``train``: train-step utterances/s of ``caa_rawnet2`` (recipe ``caa_plateau``) and
  ``tak2021`` at batch 32, 64, 128 in float32 and bfloat16 (``TrainConfig.compute_dtype``),
  the step of ``train/step.py`` with the state donated (``common.jitted_train_step``), its
  compile time, XLA's temp buffer size and the device's peak memory so far
  (``memory_stats()["peak_bytes_in_use"]``; rows run in ascending batch order);
* ``eval``: logits-only forward utterances/s at batch 256;
* ``remat``: the seed recipe's step with ``ModelConfig.remat="blocks"`` (time, XLA temp);
* ``gru_impl``: the ``tak2021`` bfloat16 step with the GRU backward that ``gru_impl="auto"``
  does not pick on this backend (``scan`` on CPU, the one-GEMM ``gemm`` elsewhere), against
  its train row: is auto's choice the faster one here?
* ``gru_share``: the train step with each GRU layer swapped for its input projection only
  (same parameters; the sequential scan is gone): 1 - t(projection) / t(model) is the
  scan's share of the step, the latency risk on an accelerator;
* ``pipeline``: ``rawnet2_jax.data.pipeline.train_batches`` over an in-memory source of
  int16 clips (TFDS-free) with one thread per host core: utterances/s (needs grain and
  soundfile; skipped with the reason when they are missing);
* ``torch``: PyTorch RawNet2 on the same device in its own process: the official eurecom
  ``model.py`` when ``RAWNET2_OFFICIAL_MODEL_PY`` points at it, otherwise our torch
  reference of the ``tak2021`` layout (``convert/reference.py``; the JSON says which);
  eager, ``cudnn.benchmark``, AMP bfloat16 autocast, weighted CE, Adam; train step at the
  same batches and eval at 256; the ratio JAX bf16 / torch AMP per batch.

Rows run cheapest-first (every preset and dtype at the smallest batch, then the larger
batches) under a time budget (``--budget-s``), and the JSON is rewritten after every row,
so a call cut short still returns what it measured.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))

import common  # noqa: E402

PRESETS = ("caa_rawnet2", "tak2021")
DTYPES = ("bfloat16", "float32")
OFFICIAL_ENV = "RAWNET2_OFFICIAL_MODEL_PY"
# The official eurecom model's constructor arguments for the tak2021 layout.
OFFICIAL_D_ARGS = {"in_channels": 1, "first_conv": 128, "filts": [128, [128, 128], [128, 512], [512, 512]],
                   "blocks": [2, 4], "nb_fc_node": 1024, "gru_node": 1024, "nb_gru_layer": 3,
                   "nb_classes": 2}


def sizes(smoke: bool) -> dict[str, Any]:
    if smoke:  # every kind of row once, with as few compiles as that takes
        return {"train_batches": (2,), "train_dtypes": ("bfloat16",), "eval_batch": 8, "eval_dtypes": ("bfloat16",),
                "eval_presets": ("caa_rawnet2",), "gru_batch": 2, "gru_presets": ("caa_rawnet2",), "steps": 3,
                "pipeline_seconds": 1.0, "pipeline_batch": 8, "pipeline_utts": 64}
    return {"train_batches": (32, 64, 128), "train_dtypes": DTYPES, "eval_batch": 256, "eval_dtypes": DTYPES,
            "eval_presets": PRESETS, "gru_batch": 64,
            "gru_presets": PRESETS, "steps": 10, "pipeline_seconds": 5.0, "pipeline_batch": 32,
            "pipeline_utts": 512}


def model_config(preset: str, smoke: bool):
    if smoke:  # the preset's every choice at the smallest depth and width: compiles dominate a smoke run
        from train.testing import tiny_model

        return tiny_model(preset, num_samples=4000)
    return common.bench_config(preset)


class Budget:
    def __init__(self, seconds: float):
        self.end = time.perf_counter() + seconds

    def left(self) -> float:
        return self.end - time.perf_counter()


# ------------------------------------------------------------------------------------ JAX


@contextlib.contextmanager
def gru_as_projection():
    """Swap ``rawnet2_jax.model.GRU`` for a stand-in that keeps every GRU parameter (so the
    same state and optimizer apply) but replaces the scan by the input projection alone."""
    import flax.linen as nn
    import jax.numpy as jnp

    import rawnet2_jax.model as model_mod
    from rawnet2_jax.gru import GRU

    class ProjectionOnly(nn.Module):
        hidden: int
        num_layers: int = 1
        dtype: Any = None
        backward: Any = None  # GRU's gradient strategy: no recurrence here, nothing to choose

        @nn.compact
        def __call__(self, x):
            for k in range(self.num_layers):
                x = ProjectionLayer(self.hidden, self.dtype, name=f"l{k}")(x)
            return x[:, -1]  # (B, H): the "last state"

    class ProjectionLayer(nn.Module):
        hidden: int
        dtype: Any = None

        @nn.compact
        def __call__(self, x):
            h3 = 3 * self.hidden
            w_ih = self.param("w_ih", nn.initializers.lecun_normal(), (x.shape[-1], h3))
            self.param("w_hh", nn.initializers.zeros, (self.hidden, h3))  # kept, unused
            b_ih = self.param("b_ih", nn.initializers.zeros, (h3,))
            self.param("b_hh", nn.initializers.zeros, (h3,))
            dt = self.dtype or x.dtype
            xi = jnp.einsum("btd,dg->btg", x.astype(dt), w_ih.astype(dt)) + b_ih.astype(dt)
            return jnp.tanh(xi[..., : self.hidden])  # (B, T, H)

    assert model_mod.GRU is GRU
    model_mod.GRU = ProjectionOnly
    try:
        yield
    finally:
        model_mod.GRU = GRU


def _device_peak_mb() -> float | None:
    import jax

    stats = jax.local_devices()[0].memory_stats() or {}
    v = stats.get("peak_bytes_in_use")
    return None if v is None else v / 2**20


def train_row(preset: str, dtype: str, batch: int, smoke: bool, steps: int, remat: str = "none",
              gru_impl: str = "auto") -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from rawnet2_jax.model import init_variables

    cfg = model_config(preset, smoke).replace(remat=remat, gru_impl=gru_impl)
    tcfg = common.train_config(cfg).replace(compute_dtype=dtype)
    state, core = common.jitted_train_step(tcfg, init_variables(cfg, 0))
    data = {"audio": jnp.asarray(common.bench_inputs(batch, cfg.num_samples)),
            "label": jnp.asarray(common.bench_labels(batch))}
    t0 = time.perf_counter()
    compiled = core.lower(state, data, None).compile()
    compile_s = time.perf_counter() - t0
    for _ in range(2):  # the first calls also page in buffers
        state, metrics = compiled(state, data, None)
    jax.block_until_ready(state)
    t0 = time.perf_counter()
    for _ in range(steps):
        state, metrics = compiled(state, data, None)  # dispatched asynchronously
    jax.block_until_ready(state)
    dt = time.perf_counter() - t0
    loss = float(metrics["loss"])
    if not np.isfinite(loss):
        raise FloatingPointError(f"non-finite loss {loss}")
    ma = compiled.memory_analysis()
    return {"preset": preset, "dtype": dtype, "batch": batch, "remat": remat,
            "gru_impl": cfg.gru_backward(jax.default_backend()), "steps": steps, "step_ms": 1e3 * dt / steps,
            "utt_per_s": steps * batch / dt, "compile_s": compile_s, "loss": loss,
            "xla_temp_mb": None if ma is None else ma.temp_size_in_bytes / 2**20,
            "device_peak_mb": _device_peak_mb()}


def eval_row(preset: str, dtype: str, batch: int, smoke: bool, steps: int) -> dict:
    import jax
    import jax.numpy as jnp

    from rawnet2_jax.model import RawNet2, init_variables

    cfg = model_config(preset, smoke)
    model = RawNet2(cfg, dtype=jnp.bfloat16 if dtype == "bfloat16" else jnp.float32)
    variables = init_variables(cfg, 0)
    x = jnp.asarray(common.bench_inputs(batch, cfg.num_samples))
    t0 = time.perf_counter()
    fwd = jax.jit(lambda v, x: model.apply(v, x, train=False)[0]).lower(variables, x).compile()
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(fwd(variables, x))
    t0 = time.perf_counter()
    for _ in range(steps):
        out = fwd(variables, x)
    jax.block_until_ready(out)
    dt = time.perf_counter() - t0
    return {"preset": preset, "dtype": dtype, "batch": batch, "utt_per_s": steps * batch / dt,
            "compile_s": compile_s, "device_peak_mb": _device_peak_mb()}


def gru_share_row(preset: str, dtype: str, batch: int, smoke: bool, steps: int, full: dict | None = None) -> dict:
    full = full or train_row(preset, dtype, batch, smoke, steps)
    with gru_as_projection():
        proj = train_row(preset, dtype, batch, smoke, steps)
    return {"preset": preset, "dtype": dtype, "batch": batch, "step_ms": full["step_ms"],
            "step_ms_projection_only": proj["step_ms"], "gru_share": 1.0 - proj["step_ms"] / full["step_ms"]}


def pipeline_row(smoke: bool, sz: dict) -> dict:
    try:
        import importlib

        importlib.import_module("grain")  # installed and importable, or the row is skipped
        from rawnet2_jax.data.pipeline import train_batches
    except Exception as e:  # noqa: BLE001  (grain / soundfile / libsndfile missing)
        return {"skipped": f"input pipeline not importable here: {type(e).__name__}: {e}"}
    import numpy as np

    cfg = model_config("caa_rawnet2", smoke)
    rng = np.random.default_rng(0)
    source = [{"audio": (rng.standard_normal(int(cfg.num_samples * rng.uniform(0.75, 1.25))) * 3000).astype(np.int16),
               "label": int(i % 2), "utt_id": f"utt{i}"} for i in range(sz["pipeline_utts"])]
    threads = len(os.sched_getaffinity(0))
    it = iter(train_batches(source, cfg, batch_size=sz["pipeline_batch"], seed=0, num_threads=threads,
                            process_index=0, process_count=1, local_device_count=1))
    for _ in range(2):
        next(it)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < sz["pipeline_seconds"]:
        n += int(next(it)["mask"].sum())
    return {"utt_per_s": n / (time.perf_counter() - t0), "threads": threads, "batch": sz["pipeline_batch"],
            "num_samples": cfg.num_samples, "source": "in-memory int16 clips (no TFDS)"}


def _row(report: dict, preset: str, dtype: str, batch: int) -> dict | None:
    """The train row already measured for (preset, dtype, batch), if any (saves a compile)."""
    return next((r for r in report["train"] if (r["preset"], r["dtype"], r["batch"]) == (preset, dtype, batch)), None)


def run_jax(a, report: dict, save: Callable[[], None]) -> None:
    import jax

    sz = sizes(a.smoke)
    budget = Budget(a.budget_s)
    dev = jax.local_devices()[0]
    report.setdefault("remat", [])
    report.setdefault("gru_impl", [])
    report["jax"] = {"backend": jax.default_backend(), "device": str(dev),
                     "device_kind": getattr(dev, "device_kind", "?"), "jax_version": jax.__version__}
    first, rest = sz["train_batches"][0], sz["train_batches"][1:]
    plan: list[tuple[str, Callable[[], dict]]] = []
    for p in PRESETS:
        for dt in sz["train_dtypes"]:
            plan.append(("train", lambda p=p, dt=dt: train_row(p, dt, first, a.smoke, sz["steps"])))
    for p in sz["eval_presets"]:
        for dt in sz["eval_dtypes"]:
            plan.append(("eval", lambda p=p, dt=dt: eval_row(p, dt, sz["eval_batch"], a.smoke, sz["steps"])))
    for p in sz["gru_presets"]:
        plan.append(("gru_share", lambda p=p: gru_share_row(p, "bfloat16", sz["gru_batch"], a.smoke, sz["steps"],
                                                            _row(report, p, "bfloat16", sz["gru_batch"]))))
    plan.append(("pipeline", lambda: pipeline_row(a.smoke, sz)))
    # the seed recipe with ModelConfig.remat="blocks": XLA temp and step time against its train row
    plan.append(("remat", lambda: train_row("caa_rawnet2", "float32", first, a.smoke, sz["steps"], "blocks")))
    # the GRU backward that gru_impl="auto" does not pick here, against the tak2021 bf16 train row
    other = {"scan": "gemm", "gemm": "scan"}[model_config("tak2021", a.smoke).gru_backward(jax.default_backend())]
    plan.append(("gru_impl", lambda: train_row("tak2021", "bfloat16", first, a.smoke, sz["steps"], gru_impl=other)))
    for b in rest:
        for p in PRESETS:
            for dt in sz["train_dtypes"]:
                plan.append(("train", lambda p=p, dt=dt, b=b: train_row(p, dt, b, a.smoke, sz["steps"])))
    for kind, fn in plan:
        if budget.left() <= 0:
            report["skipped"].append(f"{kind}: time budget spent")
            continue
        try:
            row = fn()
        except Exception as e:  # noqa: BLE001  (out of memory, missing kernels...: keep going)
            report["errors"].append(_error_line(kind, e))
            continue
        if kind == "pipeline":
            report["pipeline"] = row
        else:
            report[kind].append(row)
        print(f"{kind}: {json.dumps(row, default=float)}", flush=True)
        save()


# ---------------------------------------------------------------------------------- torch


def torch_model(device: str):
    """(model, which): the official eurecom RawNet if OFFICIAL_ENV names its model.py, else
    our torch reference of the tak2021 layout."""
    path = os.environ.get(OFFICIAL_ENV)
    if path and os.path.isfile(path):
        import copy
        import importlib.util

        spec = importlib.util.spec_from_file_location("official_rawnet2_model", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod.RawNet(copy.deepcopy(OFFICIAL_D_ARGS), device), f"official model.py ({path})"
    from convert.reference import reference_model
    from rawnet2_jax.config import get_config

    return reference_model(get_config("tak2021")), "convert/reference.py (tak2021 layout; official model.py not given)"


def run_torch(a) -> dict:
    import torch

    sz = sizes(a.smoke)
    cuda = torch.cuda.is_available() and not a.smoke
    device = "cuda" if cuda else "cpu"
    torch.backends.cudnn.benchmark = True
    model, which, num_samples = _torch_model_for_run(a.smoke, device)
    model = model.to(device)
    out: dict = {"which": which, "device": torch.cuda.get_device_name() if cuda else "cpu",
                 "torch_version": torch.__version__, "amp": "bfloat16 autocast" if cuda else "bfloat16 autocast (cpu)",
                 "train": [], "eval": [], "errors": []}
    weights = torch.tensor([1.0, 9.0], device=device)  # the tak2021 recipe
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, weight_decay=1e-4, **({"fused": True} if cuda else {}))
    amp = torch.autocast(device_type=device, dtype=torch.bfloat16)
    budget = Budget(a.budget_s)
    for b in sz["train_batches"]:
        if budget.left() <= 0:
            out["errors"].append(f"train b{b}: time budget spent")
            continue
        try:
            x = torch.tensor(common.bench_inputs(b, num_samples), device=device)
            y = torch.tensor(common.bench_labels(b), device=device, dtype=torch.long)
            out["train"].append(_torch_train_row(model, opt, amp, weights, x, y, sz["steps"], cuda))
        except Exception as e:  # noqa: BLE001
            out["errors"].append(_error_line(f"train b{b}", e))
    try:
        x = torch.tensor(common.bench_inputs(sz["eval_batch"], num_samples), device=device)
        out["eval"].append(_torch_eval_row(model, amp, x, sz["steps"], cuda))
    except Exception as e:  # noqa: BLE001
        out["errors"].append(_error_line("eval", e))
    return out


def _torch_model_for_run(smoke: bool, device: str):
    """(model, which, num_samples): the full-size torch model, or in a smoke run the same
    code on the tiny tak2021 layout (the official model has one size)."""
    if not smoke:
        model, which = torch_model(device)
        return model, which, 64600
    from convert.reference import reference_model

    cfg = model_config("tak2021", True)
    return reference_model(cfg), "convert/reference.py (tak2021, smoke size)", cfg.num_samples


def _torch_logits(model, x):
    y = model(x)
    return y[0] if isinstance(y, tuple) else y


def _torch_sync(cuda: bool) -> None:
    if cuda:
        import torch

        torch.cuda.synchronize()


def _torch_train_row(model, opt, amp, weights, x, y, steps: int, cuda: bool) -> dict:
    """Time ``steps`` AMP train steps on one batch (after a first call and a warm-up step)."""
    import torch

    model.train()

    def step():
        opt.zero_grad(set_to_none=True)
        with amp:
            loss = torch.nn.functional.cross_entropy(_torch_logits(model, x).float(), y, weight=weights)
        loss.backward()
        opt.step()
        return loss

    t0 = time.perf_counter()
    step()
    _torch_sync(cuda)
    first = time.perf_counter() - t0
    step()
    _torch_sync(cuda)
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step()
    _torch_sync(cuda)
    dt = time.perf_counter() - t0
    b = x.shape[0]
    return {"batch": b, "utt_per_s": steps * b / dt, "step_ms": 1e3 * dt / steps, "first_call_s": first,
            "loss": float(loss), "device_peak_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None}


def _torch_eval_row(model, amp, x, steps: int, cuda: bool) -> dict:
    """Time ``steps`` AMP inference calls on one batch (after one warm-up call)."""
    import torch

    model.eval()
    with torch.inference_mode(), amp:
        _torch_logits(model, x)
        _torch_sync(cuda)
        t0 = time.perf_counter()
        for _ in range(steps):
            _torch_logits(model, x)
        _torch_sync(cuda)
    return {"batch": x.shape[0], "utt_per_s": steps * x.shape[0] / (time.perf_counter() - t0)}


def _error_line(what: str, e: Exception) -> str:
    """One line for a failed row: the exception's type and the first line of its message."""
    return f"{what}: {type(e).__name__}: {(str(e).splitlines() or [''])[0][:300]}"


# --------------------------------------------------------------------------------- report


def ratios(report: dict) -> list[dict]:
    """JAX bf16 tak2021 / torch AMP, per batch (the same layout on the same device)."""
    jax_bf16 = {r["batch"]: r["utt_per_s"] for r in report["train"]
                if r["preset"] == "tak2021" and r["dtype"] == "bfloat16"}
    torch_rows = {r["batch"]: r["utt_per_s"] for r in (report.get("torch") or {}).get("train", [])}
    return [{"batch": b, "jax_bf16_utt_per_s": jax_bf16[b], "torch_amp_utt_per_s": torch_rows[b],
             "ratio": jax_bf16[b] / torch_rows[b]} for b in sorted(set(jax_bf16) & set(torch_rows))]


def markdown(report: dict) -> str:
    j = report.get("jax", {})
    f = common.fmt
    lines = [f"**Device:** {j.get('device_kind', '?')} ({j.get('backend', '?')}, jax {j.get('jax_version', '?')})"
             f"{' - SMOKE RUN (tiny models on CPU): the numbers say nothing' if report['smoke'] else ''}; "
             f"{report['date_utc']} UTC.", ""]
    rows = [[r["preset"], "train", r["dtype"], r["batch"], f(r["utt_per_s"], ".0f"), f(r["step_ms"], ".1f"),
             f(r["compile_s"], ".1f"), f(r.get("xla_temp_mb"), ".0f"), f(r.get("device_peak_mb"), ".0f")]
            for r in sorted(report["train"], key=lambda r: (r["preset"], r["dtype"], r["batch"]))]
    rows += [[r["preset"], "eval", r["dtype"], r["batch"], f(r["utt_per_s"], ".0f"), "-", f(r["compile_s"], ".1f"),
              "-", f(r.get("device_peak_mb"), ".0f")] for r in report["eval"]]
    lines.append(common.markdown_table(["preset", "what", "dtype", "batch", "utt/s", "step ms", "compile s",
                                        "XLA temp MiB", "device peak MiB so far"], rows))
    if report.get("remat"):
        lines += ["", common.markdown_table(
            ["preset", "dtype", "batch", "remat", "step ms", "XLA temp MiB", "device peak MiB so far"],
            [[r["preset"], r["dtype"], r["batch"], r["remat"], f(r["step_ms"], ".1f"), f(r.get("xla_temp_mb"), ".0f"),
              f(r.get("device_peak_mb"), ".0f")] for r in report["remat"]])]
    if report.get("gru_impl"):
        auto = {(r["preset"], r["dtype"], r["batch"]): r for r in report["train"]}
        lines += ["", common.markdown_table(
            ["preset", "dtype", "batch", "GRU backward", "step ms", "step ms with auto's backward"],
            [[r["preset"], r["dtype"], r["batch"], r["gru_impl"], f(r["step_ms"], ".1f"),
              f(auto.get((r["preset"], r["dtype"], r["batch"]), {}).get("step_ms"), ".1f")]
             for r in report["gru_impl"]])]
    if report["gru_share"]:
        lines += ["", common.markdown_table(
            ["preset", "dtype", "batch", "step ms", "step ms, GRU = input projection only", "GRU share of the step"],
            [[r["preset"], r["dtype"], r["batch"], f(r["step_ms"], ".1f"), f(r["step_ms_projection_only"], ".1f"),
              f(100 * r["gru_share"], ".0f") + " %"] for r in report["gru_share"]])]
    t = report.get("torch")
    if t:
        lines += ["", f"PyTorch ({t['which']}; {t['device']}, torch {t['torch_version']}, eager, "
                      f"cudnn.benchmark, {t['amp']}):", ""]
        trows = [["train", r["batch"], f(r["utt_per_s"], ".0f"), f(r["step_ms"], ".1f"), f(r["first_call_s"], ".1f")]
                 for r in t["train"]]
        trows += [["eval", r["batch"], f(r["utt_per_s"], ".0f"), "-", "-"] for r in t["eval"]]
        lines.append(common.markdown_table(["what", "batch", "utt/s", "step ms", "first call s"], trows))
        if report["ratios"]:
            lines += ["", common.markdown_table(
                ["batch", "JAX bf16 tak2021 utt/s", "torch AMP utt/s", "JAX / torch"],
                [[r["batch"], f(r["jax_bf16_utt_per_s"], ".0f"), f(r["torch_amp_utt_per_s"], ".0f"),
                  f(r["ratio"], ".2f") + "x"] for r in report["ratios"]])]
    p = report.get("pipeline") or {"skipped": "not measured"}
    lines += ["", f"Input pipeline: {p['skipped']}" if "skipped" in p else
              f"Input pipeline ({p.get('source')}, batch {p.get('batch')}, {p.get('threads')} threads): "
              f"{f(p.get('utt_per_s'), '.0f')} utterances/s"]
    for key in ("errors", "skipped"):
        if report[key]:
            lines += ["", f"{key}: " + "; ".join(report[key])]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny models on CPU: does everything run?")
    ap.add_argument("--out-dir", default=str(common.RESULTS))
    ap.add_argument("--budget-s", type=float, default=None,
                    help="time for the JAX part (default 330 s, smoke 600 s); torch gets a third of it")
    ap.add_argument("--part", choices=("all", "jax", "torch"), default="all")
    ap.add_argument("--torch-out", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.budget_s is None:
        a.budget_s = 600.0 if a.smoke else 330.0
    if a.part == "torch":
        Path(a.torch_out).write_text(json.dumps(run_torch(a), default=float))
        return 0
    out_dir = Path(a.out_dir)
    stem = "device_check_smoke" if a.smoke else "device_check"
    report: dict = {"smoke": a.smoke, "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
                    "machine": common.machine_info(), "train": [], "eval": [], "gru_share": [], "pipeline": None,
                    "torch": None, "ratios": [], "remat": [], "gru_impl": [], "errors": [], "skipped": []}

    def save() -> None:
        report["ratios"] = ratios(report)
        common.write_json(out_dir / f"{stem}.json", report)
        (out_dir / f"{stem}.md").write_text(markdown(report))

    if a.part in ("all", "jax"):
        run_jax(a, report, save)
    if a.part in ("all",):
        torch_json = out_dir / f"{stem}_torch.json"
        cmd = [sys.executable, str(Path(__file__)), "--part", "torch", "--torch-out", str(torch_json),
               "--budget-s", str(a.budget_s / 3)] + (["--smoke"] if a.smoke else [])
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=a.budget_s + 300)
        if proc.returncode == 0 and torch_json.exists():
            report["torch"] = json.loads(torch_json.read_text())
            torch_json.unlink()
            report["errors"] += [f"torch {e}" for e in report["torch"].pop("errors")]
        else:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            report["errors"].append(f"torch: exit {proc.returncode}: {tail[:300]}")
    save()
    print(markdown(report))
    print(f"wrote {out_dir / stem}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
