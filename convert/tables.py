"""Torch state-dict key <-> Flax variable path, per checkpoint layout.

The ONLY module that knows both namings. Every torch key of a layout is listed explicitly with
its Flax ``(collection, path)`` and a transform; nothing is guessed from tensor ranks.

Transforms (torch -> flax; the inverse is applied by ``flax_to_torch``):

    conv      Conv1d weight (out, in, k)   -> kernel (k, in, out)
    linear    Linear weight (out, in)      -> kernel (in, out)
    gru       GRU weight_{ih,hh}_l{k} (3H, in) -> w_{ih,hh} (in, 3H); rows r, z, n kept in order
    identity  biases, BN weight/bias/running_mean/running_var, sinc tensors, class_weights
    count     BN num_batches_tracked int64 () -> int32 () in ``buffers`` (exact round trip)

Flax tree: see ``rawnet2_jax/model.py``. BN: weight -> ``scale``, bias -> ``bias``,
running_mean -> ``batch_stats/.../mean``, running_var -> ``batch_stats/.../var``.

Public API: ``table``, ``expected_torch_shapes``, ``torch_to_flax``, ``flax_to_torch``,
``detect_layout``, ``check_seed_sinc_tensors`` (doubts about the seed layout's stored sinc tensors).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import numpy as np

from rawnet2_jax.config import ModelConfig
from rawnet2_jax.errors import CheckpointError
from rawnet2_jax.treecheck import raise_problems, shape_problems, summarize

Transform = Literal["conv", "linear", "gru", "identity", "count"]


@dataclasses.dataclass(frozen=True)
class Entry:
    torch_key: str
    collection: str  # "params" | "batch_stats" | "buffers"
    path: tuple[str, ...]  # path inside the collection
    transform: Transform
    torch_shape: tuple[int, ...]


def _bn(torch_prefix: str, flax_path: tuple[str, ...], c: int) -> list[Entry]:
    return [
        Entry(f"{torch_prefix}.weight", "params", flax_path + ("scale",), "identity", (c,)),
        Entry(f"{torch_prefix}.bias", "params", flax_path + ("bias",), "identity", (c,)),
        Entry(f"{torch_prefix}.running_mean", "batch_stats", flax_path + ("mean",), "identity", (c,)),
        Entry(f"{torch_prefix}.running_var", "batch_stats", flax_path + ("var",), "identity", (c,)),
        Entry(f"{torch_prefix}.num_batches_tracked", "buffers",
              flax_path + ("num_batches_tracked",), "count", ()),
    ]


def _conv(torch_prefix: str, flax_path: tuple[str, ...], c_out: int, c_in: int, k: int) -> list[Entry]:
    return [
        Entry(f"{torch_prefix}.weight", "params", flax_path + ("kernel",), "conv", (c_out, c_in, k)),
        Entry(f"{torch_prefix}.bias", "params", flax_path + ("bias",), "identity", (c_out,)),
    ]


def _linear(torch_prefix: str, flax_path: tuple[str, ...], n_out: int, n_in: int) -> list[Entry]:
    return [
        Entry(f"{torch_prefix}.weight", "params", flax_path + ("kernel",), "linear", (n_out, n_in)),
        Entry(f"{torch_prefix}.bias", "params", flax_path + ("bias",), "identity", (n_out,)),
    ]


def table(cfg: ModelConfig) -> list[Entry]:
    """Every torch key of a real checkpoint of ``cfg.layout``, in state-dict order."""
    seed = cfg.layout == "seed"
    if cfg.layout not in ("seed", "official"):
        raise CheckpointError(f"unknown layout {cfg.layout!r}")
    # (the official layout stores no sinc tensors: filters are rebuilt from the config)
    out = _sinc_entries(cfg) if seed else []
    out += _bn("front_bn" if seed else "first_bn", ("front_bn",), cfg.sinc_filters)
    for i, (ci, co) in enumerate(cfg.block_channels):
        out += _block_entries(cfg, i, ci, co)
    c_last = cfg.block_channels[-1][1]
    out += _bn("pre_gru_bn" if seed else "bn_before_gru", ("pre_gru_bn",), c_last)
    out += _gru_entries(cfg, c_last)
    out += _linear("fc" if seed else "fc1_gru", ("fc",), cfg.embedding_dim, cfg.gru_hidden)
    out += _linear("classifier" if seed else "fc2_gru", ("classifier",), cfg.num_classes,
                   cfg.embedding_dim)
    if cfg.stored_class_weights is not None:
        if not seed:
            raise CheckpointError("the official layout has no class_weights tensor; "
                                  "set stored_class_weights=None")
        out.append(Entry("class_weights", "buffers", ("class_weights",), "identity",
                         (cfg.num_classes,)))
    return out


def _sinc_entries(cfg: ModelConfig) -> list[Entry]:
    """The seed layout's sinc tensors (band edges learnable or frozen, plus two fixed buffers)."""
    c0, half = cfg.sinc_filters, cfg.sinc_kernel_size // 2
    sinc_col = "params" if cfg.sinc_learnable else "buffers"
    return [
        Entry("sinc.low_hz_", sinc_col, ("sinc", "low_hz_"), "identity", (c0, 1)),
        Entry("sinc.band_hz_", sinc_col, ("sinc", "band_hz_"), "identity", (c0, 1)),
        Entry("sinc.n_axis", "buffers", ("sinc", "n_axis"), "identity", (1, half)),
        Entry("sinc.window", "buffers", ("sinc", "window"), "identity", (half,)),
    ]


def _block_entries(cfg: ModelConfig, i: int, ci: int, co: int) -> list[Entry]:
    """Residual block ``i`` (``ci`` -> ``co`` channels): BNs, convs, shortcut, FMS."""
    seed, k = cfg.layout == "seed", cfg.block_kernel_size
    tp = f"blocks.{i}" if seed else f"block{i}.0"
    fp = (f"block{i}",)
    out: list[Entry] = []
    if cfg.first_block_bn1 or i > 0:
        out += _bn(f"{tp}.bn1", fp + ("bn1",), ci)
    out += _conv(f"{tp}.conv1", fp + ("conv1",), co, ci, k)
    out += _bn(f"{tp}.bn2", fp + ("bn2",), co)
    out += _conv(f"{tp}.conv2", fp + ("conv2",), co, co, k)
    if ci != co:
        sc = "shortcut" if seed else "conv_downsample"
        out += _conv(f"{tp}.{sc}", fp + ("shortcut",), co, ci, 1)
    fms_key = f"{tp}.fms.fc" if seed else f"fc_attention{i}.0"
    out += _linear(fms_key, fp + ("fms", "fc"), co, co)
    return out


def _gru_entries(cfg: ModelConfig, c_last: int) -> list[Entry]:
    """torch ``nn.GRU``'s four tensors per layer (both layouts name them alike)."""
    h = cfg.gru_hidden
    out: list[Entry] = []
    for layer in range(cfg.gru_layers):
        d_in = c_last if layer == 0 else h
        fp = ("gru", f"l{layer}")
        out += [
            Entry(f"gru.weight_ih_l{layer}", "params", fp + ("w_ih",), "gru", (3 * h, d_in)),
            Entry(f"gru.weight_hh_l{layer}", "params", fp + ("w_hh",), "gru", (3 * h, h)),
            Entry(f"gru.bias_ih_l{layer}", "params", fp + ("b_ih",), "identity", (3 * h,)),
            Entry(f"gru.bias_hh_l{layer}", "params", fp + ("b_hh",), "identity", (3 * h,)),
        ]
    return out


def expected_torch_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """torch key -> shape for every key of a real checkpoint of this config."""
    return {e.torch_key: e.torch_shape for e in table(cfg)}


def _transform(value: Any, transform: Transform, count_dtype: type) -> np.ndarray:
    # Each layout change is its own inverse (conv: reverse the three axes; linear/gru: transpose),
    # so torch -> flax and flax -> torch differ only in the dtype of the BN counter.
    # np.array copies: torch's .numpy() shares memory with the module, whose in-place updates
    # (e.g. running stats in train mode) must not leak into the converted variables.
    if transform == "count":
        return np.array(value, dtype=count_dtype)
    value = np.array(value, dtype=np.float32)
    if transform == "conv":
        return np.ascontiguousarray(value.transpose(2, 1, 0))
    if transform in ("linear", "gru"):
        return np.ascontiguousarray(value.T)
    return value


def _to_flax(value: np.ndarray, transform: Transform) -> np.ndarray:
    return _transform(value, transform, np.int32)


def _to_torch(value: Any, transform: Transform) -> np.ndarray:
    return _transform(value, transform, np.int64)


def _as_numpy(v: Any) -> np.ndarray:
    if hasattr(v, "detach"):  # a torch tensor; bfloat16/float16 have no numpy twin: widen
        v = v.detach().cpu()
        if v.is_floating_point() and str(v.dtype) != "torch.float32":
            v = v.float()
        return v.numpy()
    return np.asarray(v)


def _short_list(items: list[str], limit: int = 12) -> str:
    return summarize(items, limit)


def torch_to_flax(state_dict: Mapping[str, Any], cfg: ModelConfig, *, check: bool = True) -> dict:
    """Flax variables ``{"params", "batch_stats", "buffers"}`` from a torch state dict.

    Values may be numpy arrays or CPU torch tensors. All problems (missing, unexpected and
    misshapen keys) are reported together in ONE CheckpointError. ``check=False`` is for a
    caller that has already checked these keys and shapes against ``cfg`` (the converter's
    ``check_state_dict``); unchecked input is not validated again.
    """
    entries = table(cfg)
    expected = {e.torch_key: e for e in entries}
    keys = list(state_dict)
    # DataParallel wraps every key in "module."; strip it when (and only when) all keys have it.
    strip = len("module.") if keys and all(k.startswith("module.") for k in keys) else 0
    arrays = {k[strip:]: _as_numpy(v) for k, v in state_dict.items()}
    if check:
        problems = shape_problems(
            {k: e.torch_shape for k, e in expected.items()},
            {k: tuple(a.shape) for k, a in arrays.items()},
            limit=12, misshapen_label="misshapen", wanted_order=True,
        )
        raise_problems(
            problems,
            f"state dict does not match the {cfg.layout!r} layout of preset {cfg.name!r}: ",
            " (pick the preset matching the checkpoint, or override its fields)",
        )
    variables: dict[str, dict] = {"params": {}, "batch_stats": {}, "buffers": {}}
    for e in entries:
        node = variables[e.collection]
        for p in e.path[:-1]:
            node = node.setdefault(p, {})
        node[e.path[-1]] = _to_flax(arrays[e.torch_key], e.transform)
    return variables


def flax_to_torch(variables: Mapping[str, Any], cfg: ModelConfig) -> dict[str, np.ndarray]:
    """Inverse of ``torch_to_flax`` (float32 tensors, int64 counters), in state-dict order."""
    out: dict[str, np.ndarray] = {}
    missing = []
    for e in table(cfg):
        node: Any = variables.get(e.collection, {})
        try:
            for p in e.path:
                node = node[p]
        except (KeyError, TypeError):
            missing.append("/".join((e.collection,) + e.path))
            continue
        out[e.torch_key] = _to_torch(node, e.transform)
    if missing:
        raise CheckpointError(f"flax variables lack {len(missing)} entries: {_short_list(missing)}")
    return out


_SEED_MARKERS = ("sinc.", "front_bn.", "blocks.", "pre_gru_bn.", "classifier.")
_OFFICIAL_MARKERS = ("first_bn.", "block0.0.", "fc_attention", "bn_before_gru.", "fc1_gru.", "fc2_gru.")


def detect_layout(keys: Iterable[str]) -> Literal["seed", "official"]:
    """"seed" or "official" from state-dict keys (a ``module.`` prefix is tolerated)."""
    keys = [k[len("module."):] if k.startswith("module.") else k for k in keys]
    seed = sum(any(k.startswith(m) for m in _SEED_MARKERS) for k in keys)
    official = sum(any(k.startswith(m) for m in _OFFICIAL_MARKERS) for k in keys)
    if seed and not official:
        return "seed"
    if official and not seed:
        return "official"
    sample = _short_list(sorted(keys)[:8], 8) if keys else "(no keys)"
    raise CheckpointError(
        "cannot tell the checkpoint layout: expected RawNet2 keys such as 'front_bn.weight' "
        f"(seed) or 'first_bn.weight' (official), got {sample}"
    )


def check_seed_sinc_tensors(tensors: dict[str, Any], cfg: ModelConfig) -> list[str]:
    """Problems (one line each; empty if none) of stored sinc tensors read with ``cfg``.

    Keys without the ``sinc.`` prefix. For the converter to warn: the seed's stored tensors
    are not public, and third parties disagree on their layout (e.g. a half axis
    j * pi / sr, j = 0 .. K//2 - 1, or the first half of a K-point Hamming window instead of
    SincNet's); the reference values are those the model initialises with
    (:func:`rawnet2_jax.sinc.seed_sinc_tensors`). Nothing here changes the values.
    """
    from rawnet2_jax.sinc import seed_sinc_tensors

    problems: list[str] = []
    k, c, sr = cfg.sinc_kernel_size, cfg.sinc_filters, cfg.sample_rate
    want_shapes = {"low_hz_": (c, 1), "band_hz_": (c, 1), "n_axis": (1, k // 2), "window": (k // 2,)}
    arr = {}
    for name, shape in want_shapes.items():
        if name not in tensors:
            problems.append(f"sinc.{name} is missing")
            continue
        arr[name] = np.asarray(tensors[name], np.float64)
        if arr[name].shape != shape:
            problems.append(f"sinc.{name} has shape {arr[name].shape}, expected {shape}")
            del arr[name]
    ref = seed_sinc_tensors(cfg)
    if "n_axis" in arr:
        n = arr["n_axis"]
        if np.any(n == 0):
            problems.append("sinc.n_axis contains 0: SincNet's half axis is 2*pi*(-(K-1)/2 .. -1)/sr "
                            "(the t = 0 taps use the limit value)")
        dev = np.abs(n - ref["n_axis"]).max() / np.abs(ref["n_axis"]).max()
        if dev > 1e-5:
            hint = ""
            if np.allclose(n[0], np.arange(k // 2) * np.pi / sr, rtol=1e-5, atol=1e-9):
                hint = " (it is j*pi/sr, j = 0 .. K//2 - 1)"
            problems.append(f"sinc.n_axis differs from SincNet's axis by {dev:.2g} relative{hint}")
    if "window" in arr:
        dev = np.abs(arr["window"] - ref["window"]).max()
        if dev > 1e-5:
            hint = " (it is hamming(K)[:K//2])" if np.allclose(arr["window"], np.hamming(k)[: k // 2],
                                                              atol=1e-6) else ""
            problems.append(f"sinc.window differs from SincNet's half window by {dev:.2g}{hint}")
    if "low_hz_" in arr and "band_hz_" in arr:
        low = cfg.sinc_min_low_hz + np.abs(arr["low_hz_"])
        high = np.clip(low + cfg.sinc_min_band_hz + np.abs(arr["band_hz_"]), cfg.sinc_min_low_hz, sr / 2)
        if np.any(high - low <= 0):
            problems.append(f"{int(np.sum(high - low <= 0))} sinc filters have zero bandwidth "
                            "(the SincNet formula divides by it)")
        if np.any(low >= sr / 2):
            problems.append("some sinc.low_hz_ are at or above sr/2")
    return problems
