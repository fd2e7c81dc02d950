"""Model configurations: one frozen dataclass and named presets.

Every point where the RawNet2 variants differ is a field here, never a copy of the
model code. Presets:

* ``caa_rawnet2``: the improved RawNet2 whose PyTorch ``best.pt`` we port ("seed" layout).
  Its forward is not public; the fields marked *ambiguous* are our documented choice
  and can be switched (see ``convert --check-bn-stats`` to rank the candidates).
* ``tak2021``: the official RawNet2 of Tak et al., ICASSP 2021 ("official" layout), checked
  against eurecom-asp/rawnet2-antispoofing ``model.py`` + ``model_config_RawNet2.yaml``.
* ``asvspoof2021_baseline``: the ASVspoof 2021 LA/DF RawNet2 baseline ("official" layout),
  checked against asvspoof-challenge/2021 ``LA/Baseline-RawNet2/model.py`` + its yaml.

The seed forward this preset makes (each line is one field; change it with
``get_config("caa_rawnet2", field=value)``):

1. sinc filters: ``sinc_formula="sincnet"`` -- Ravanelli's SincConv_fast rebuilt from the stored
   ``low_hz_``/``band_hz_``/``n_axis``/``window`` with ``sinc_min_low_hz = sinc_min_band_hz = 0``
   (the reported ``low_hz_`` starts at exactly 0 Hz, which SincNet's 50 Hz minimum would shift);
   alternatives: ``sinc_min_*_hz=50.0`` (SincNet defaults) or ``sinc_formula="official"``.
2. ``sinc_padding="same"`` (keeps 64000 frames; "valid" is the official choice).
3. ``sinc_abs=False``, ``sinc_pool=1``: no abs / max-pool after the sinc conv (the official
   model does both: ``sinc_abs=True, sinc_pool=3``).
4. ``front_activation="leaky_relu"`` (slope ``leaky_relu_slope`` = 0.3) after ``front_bn``
   (official: "selu").
5. every block has bn1 (``first_block_bn1=True``: the layout has ``blocks.0.bn1``), which feeds
   conv1 (``bn1_bypassed=False``).
6. FMS ``x * s + s`` after the block's max-pool (``fms_mode="add"``, ``fms_position=
   "after_pool"``, as Tak et al.); alternatives ``"mul"`` and ``"before_pool"`` /
   ``"before_add"``.
7. ``pre_gru_activation="leaky_relu"`` after ``pre_gru_bn`` (official: "selu"); one GRU layer;
   ``fc`` (embedding) -> no activation -> ``classifier`` (``head_activation="none"``).
8. raw logits (``output_log_softmax=False``); ``class_weights`` kept in ``buffers``.
9. ``input_scale=1.0``: the waveform in [-1, 1] as the data pipeline gives it.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any, Iterable, Literal, TypeVar

SincScale = Literal["mel", "inverse_mel", "linear"]
# "official": the eurecom SincConv (ideal band-pass from band edges, full Hamming window).
# "sincnet":  Ravanelli's SincConv_fast built from stored low_hz_ / band_hz_ / n_axis / window.
SincFormula = Literal["official", "sincnet"]
# Band edges of the official formula (N = sinc_filters):
# "eurecom":      linspace(lo, hi, N + 3)[: N + 1] on the chosen scale (the eurecom SincConv makes
#                 N + 1 "out_channels" and N + 2 + 1 grid points), so the top filter stops below sr/2.
# "asvspoof2021": linspace(lo, hi, N + 1), mel only (the ASVspoof 2021 baseline SincConv).
SincEdges = Literal["eurecom", "asvspoof2021"]
Activation = Literal["selu", "leaky_relu", "relu", "none"]
FmsMode = Literal["add", "mul"]  # x * s + s (Tak et al.) or x * s
# Where FMS sits in a block: "after_pool" (official: pool(res + id) then FMS), "before_pool"
# (FMS on res + id, then pool; its gate then sees the un-pooled time average), "before_add"
# (FMS on the residual branch only, then + identity, then pool).
FmsPosition = Literal["after_pool", "before_pool", "before_add"]
PadMode = Literal["zero", "repeat"]
Layout = Literal["seed", "official"]
# How the sinc convolution is computed (same result up to float32 rounding): "direct" is XLA's conv,
# "fft" is an FFT correlation (O(T log T) per filter instead of O(T K)), "matmul" is a GEMM on
# frames of the waveform against a Toeplitz filter matrix, chunk by chunk with abs and max-pool in
# the same loop (rawnet2_jax.sinc.matmul_correlate_pool). "auto" picks "fft" for kernels of at least
# SINC_FFT_MIN_TAPS taps, else "matmul" when a max-pool follows the conv, else "direct". Not part
# of the architecture: checkpoints do not depend on it, and configs saved before it existed load
# with "auto".
SincConvImpl = Literal["auto", "direct", "fft", "matmul"]
# A CPU A/B (a bench prototype, since removed): FFT is ~6x faster on the 1025-tap baseline sinc layer,
# XLA's direct conv is faster on the 129-tap presets. The chunked matmul with its pool: 1.4-2x less
# CPU than the direct conv + abs + pool for tak2021 (128 x 129 taps, batch 1 and 8, bench/README.md).
SINC_FFT_MIN_TAPS = 257
# Rematerialisation in training (computation only, like SincConvImpl): "blocks" runs every residual
# block as two halves whose backward pass recomputes them from their inputs (rawnet2_jax.remat: a
# custom VJP tied to the incoming gradient, which XLA's CPU backend cannot merge back into the
# forward pass as it does with jax.checkpoint), BatchNorms keep only their inputs, and the sinc
# front end is wrapped in flax.linen.remat. The seed step at batch 32: XLA's estimate 9.6 GiB
# instead of 19.5 (bench/bench_memory.py), for about one extra forward pass of compute. "auto"
# (the default) lets training pick: "none" when XLA's estimate of the step fits in the device's
# memory, else "blocks" (train/fit.py); anywhere else "auto" computes as "none". Configs saved
# before the field existed load with the default.
Remat = Literal["auto", "none", "blocks"]
# The GRU's backward pass (computation only, like SincConvImpl): "scan" is JAX's transpose of the
# time scan, which adds an (H, 3H) outer product into the recurrent weight gradient at every step
# (memory-bound on a CPU); "gemm" is a custom VJP (rawnet2_jax.gru) that does the reverse scan for
# the state gradients only and then dW_hh as one GEMM over all steps, as torch does. Same forward
# values; gradients equal up to float32 summation order. "auto": "gemm" on the CPU backend (tak2021's
# 3-layer GRU at batch 4, 2 threads: 2.5x less CPU time for its value and gradient,
# bench/README.md), "scan" elsewhere (not measured there).
GruImpl = Literal["auto", "scan", "gemm"]
# Fields that change how the model is computed, never its variables or (beyond float32
# rounding) its outputs: a checkpoint made with one value loads with any other.
COMPUTATION_FIELDS = ("sinc_conv_impl", "remat", "gru_impl")


_C = TypeVar("_C", bound="ConfigMixin")


def _value_fits(value: Any, annotation: Any) -> bool:
    """Whether a JSON value can be the value of a field annotated ``annotation``."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return any(_value_fits(value, a) for a in typing.get_args(annotation))
    if origin is tuple:
        args = typing.get_args(annotation)
        if not isinstance(value, (list, tuple)):
            return False
        item = args[0] if args else Any
        return all(_value_fits(v, item) for v in value)
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        return isinstance(value, (dict, annotation))
    return True  # anything else is checked by the dataclass itself


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(annotation))
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def config_field_problems(cls: type, d: dict[str, Any]) -> list[str]:
    """``["num_samples: expected int, got '64000' (str)", ...]`` for the known fields of ``d``
    whose JSON value does not fit the field's type annotation (unknown fields are not listed)."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if f.name in d and f.name in hints and not _value_fits(d[f.name], hints[f.name]):
            v = d[f.name]
            out.append(f"{f.name}: expected {_type_name(hints[f.name])}, got {v!r} ({type(v).__name__})")
    return out


class ConfigMixin:
    """``replace`` / ``to_dict`` / ``to_json`` / ``from_dict`` / ``with_overrides`` for a frozen
    config dataclass.

    ``from_dict`` first lets :meth:`_decode_fields` turn JSON values back into field values
    (nested configs, tuples), then refuses unknown fields with
    ``ValueError("unknown <_config_kind> config fields: ...")``.
    """

    _config_kind = "config"  # the word in the unknown-fields message

    def replace(self: _C, **changes: Any) -> _C:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def _decode_fields(cls, d: dict[str, Any]) -> dict[str, Any]:
        return d

    @classmethod
    def from_dict(cls: type[_C], d: dict[str, Any]) -> _C:
        d = cls._decode_fields(dict(d))
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown {cls._config_kind} config fields: {', '.join(unknown)}")
        return cls(**d)

    def with_overrides(self: _C, items: Iterable[str]) -> _C:
        """This config with ``"field=value"`` / ``"nested.field=value"`` strings applied.

        ``cfg.with_overrides(["model.fms_mode=mul", "learning_rate=3e-4", "class_weights=1,9"])``:
        values are read as the fields' declared types (``none`` for Optional fields); any bad
        path or value raises a one-line :class:`~rawnet2_jax.errors.ConfigError`. See
        :mod:`rawnet2_jax.overrides`.
        """
        from rawnet2_jax.overrides import apply_overrides

        return apply_overrides(self, items)


@dataclasses.dataclass(frozen=True)
class ModelConfig(ConfigMixin):
    """A complete description of one RawNet2 variant (architecture + input policy)."""

    _config_kind = "model"

    name: str
    layout: Layout  # which PyTorch state-dict naming the converter uses

    # Input policy (used by the data pipeline, not by the model).
    sample_rate: int = 16000
    num_samples: int = 64000
    pad_mode: PadMode = "zero"
    # The model multiplies its input by this first. Only the eval-mode front_bn statistics see
    # it, so it is a candidate for the BN-statistics check: e.g. 32768 if training fed
    # int16-range audio, or 2 * band (= 125 for the seed's uniform 62.5 Hz bands) if the
    # seed's filters skip SincConv_fast's division by 2 * band.
    input_scale: float = 1.0

    # Sinc front-end.
    sinc_filters: int = 128
    sinc_kernel_size: int = 129  # always odd
    sinc_scale: SincScale = "linear"
    sinc_formula: SincFormula = "sincnet"
    sinc_edges: SincEdges = "eurecom"  # official formula only
    sinc_learnable: bool = False  # sincnet formula only: low_hz_/band_hz_ in `params`, else `buffers`
    sinc_min_low_hz: float = 0.0  # sincnet formula only  (ambiguous for the seed)
    sinc_min_band_hz: float = 0.0  # sincnet formula only (ambiguous for the seed)
    sinc_padding: Literal["valid", "same"] = "same"  # ambiguous for the seed
    sinc_abs: bool = False  # abs() after the sinc conv           (ambiguous for the seed)
    sinc_pool: int = 1  # max-pool size after the sinc conv; 1 = none (ambiguous for the seed)
    front_activation: Activation = "leaky_relu"  # after front BN        (ambiguous for the seed)
    sinc_conv_impl: SincConvImpl = "auto"  # computation only, see SincConvImpl
    remat: Remat = "auto"  # computation only, see Remat (memory of the train step)

    # Residual blocks: channels (C1 x n1, then C2 x n2).
    first_block_channels: int = 128
    second_block_channels: int = 512
    num_first_blocks: int = 2
    num_second_blocks: int = 4
    block_kernel_size: int = 3
    block_pool: int = 3
    leaky_relu_slope: float = 0.3
    first_block_bn1: bool = True  # official: the very first block has no bn1
    bn1_bypassed: bool = False  # ASVspoof 2021 baseline: conv1 reads the block input, bn1 unused

    # Filter-wise feature map scaling.
    fms_mode: FmsMode = "add"  # ambiguous for the seed
    fms_position: FmsPosition = "after_pool"  # ambiguous for the seed

    # Recurrent part and head.
    pre_gru_activation: Activation = "leaky_relu"  # ambiguous for the seed
    gru_hidden: int = 1024
    gru_layers: int = 1
    gru_impl: GruImpl = "auto"  # computation only, see GruImpl
    embedding_dim: int = 1024
    head_activation: Activation = "none"  # between fc (embedding) and classifier
    num_classes: int = 2  # index 0 = spoof, 1 = bona fide
    # The ASVspoof 2021 baseline returns log_softmax(logits); scores (logit[1] - logit[0]) and
    # the cross-entropy are unchanged by it, but parity of the raw output needs it.
    output_log_softmax: bool = False
    # Loss weights stored *with the model* (the seed checkpoint has a `class_weights` tensor).
    # None: the layout has no such tensor. Kept in the `buffers` collection as `class_weights`.
    stored_class_weights: tuple[float, ...] | None = None

    # BatchNorm (torch semantics: momentum 0.1 == flax 0.9, unbiased running var).
    bn_momentum: float = 0.1
    bn_eps: float = 1e-5

    def __post_init__(self):
        if self.sinc_kernel_size % 2 != 1:
            raise ValueError(f"sinc_kernel_size must be odd, got {self.sinc_kernel_size}")
        if self.num_samples <= 0:
            raise ValueError(f"num_samples must be positive, got {self.num_samples}")
        if self.sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {self.sample_rate}")
        if self.stored_class_weights is not None:
            # JSON gives a list back; keep the frozen dataclass hashable.
            object.__setattr__(
                self, "stored_class_weights", tuple(float(w) for w in self.stored_class_weights)
            )
            if len(self.stored_class_weights) != self.num_classes:
                raise ValueError("stored_class_weights must have num_classes entries")
        if self.layout == "official" and self.sinc_formula != "official":
            raise ValueError("the official layout stores no sinc tensors: use sinc_formula='official'")
        if self.sinc_learnable and self.sinc_formula != "sincnet":
            raise ValueError("sinc_learnable needs sinc_formula='sincnet' (official filters are fixed)")
        if self.sinc_edges == "asvspoof2021" and self.sinc_scale != "mel":
            raise ValueError("sinc_edges='asvspoof2021' only exists with sinc_scale='mel'")
        if self.sinc_conv_impl not in ("auto", "direct", "fft", "matmul"):
            raise ValueError("sinc_conv_impl must be 'auto', 'direct', 'fft' or 'matmul', "
                             f"got {self.sinc_conv_impl!r}")
        if self.gru_impl not in ("auto", "scan", "gemm"):
            raise ValueError(f"gru_impl must be 'auto', 'scan' or 'gemm', got {self.gru_impl!r}")
        if self.remat not in ("auto", "none", "blocks"):
            raise ValueError(f"remat must be 'auto', 'none' or 'blocks', got {self.remat!r}")

    @property
    def block_channels(self) -> tuple[tuple[int, int], ...]:
        """(in, out) channels of every residual block, in order."""
        c0, c1, c2 = self.sinc_filters, self.first_block_channels, self.second_block_channels
        chans = []
        cin = c0
        for _ in range(self.num_first_blocks):
            chans.append((cin, c1))
            cin = c1
        for _ in range(self.num_second_blocks):
            chans.append((cin, c2))
            cin = c2
        return tuple(chans)

    @property
    def sinc_impl(self) -> str:
        """``sinc_conv_impl`` resolved: "direct", "fft" or "matmul"."""
        if self.sinc_conv_impl != "auto":
            return self.sinc_conv_impl
        if self.sinc_kernel_size >= SINC_FFT_MIN_TAPS:
            return "fft"
        return "matmul" if self.sinc_pool > 1 else "direct"

    def gru_backward(self, backend: str) -> str:
        """``gru_impl`` resolved for a JAX backend ("cpu", "gpu", "tpu"): "scan" or "gemm"."""
        if self.gru_impl != "auto":
            return self.gru_impl
        return "gemm" if backend == "cpu" else "scan"

    @property
    def sinc_uses_fft(self) -> bool:
        """Whether the sinc conv runs as an FFT correlation (``sinc_conv_impl`` resolved)."""
        return self.sinc_impl == "fft"

    def architecture(self) -> dict[str, Any]:
        """The fields that define the network and its variables: everything but the name and
        the computation-only fields (``COMPUTATION_FIELDS``), for "is this the same model?"."""
        return {k: v for k, v in self.to_dict().items() if k != "name" and k not in COMPUTATION_FIELDS}

    def computation_neutral(self) -> ModelConfig:
        """This network with the name cleared and the computation-only fields at their
        defaults: configs with the same ``architecture()`` map to one equal (hashable) value."""
        defaults = {f.name: f.default for f in dataclasses.fields(self) if f.name in COMPUTATION_FIELDS}
        return self.replace(name="", **defaults)

    @property
    def min_num_samples(self) -> int:
        """Shortest input (samples) that still leaves one frame after every max-pool."""
        t = self.sinc_pool * self.block_pool ** len(self.block_channels)
        if self.sinc_padding == "valid":
            t += self.sinc_kernel_size - 1
        return t



CAA_RAWNET2 = ModelConfig(
    name="caa_rawnet2",
    layout="seed",
    num_samples=64000,
    pad_mode="zero",
    sinc_filters=128,
    sinc_kernel_size=129,
    sinc_scale="linear",
    sinc_formula="sincnet",
    sinc_learnable=False,
    stored_class_weights=(8.837, 1.0),
)

TAK2021 = ModelConfig(
    name="tak2021",
    layout="official",
    num_samples=64600,
    pad_mode="repeat",
    sinc_filters=128,
    sinc_kernel_size=129,
    sinc_scale="mel",
    sinc_formula="official",
    sinc_padding="valid",
    sinc_abs=True,
    sinc_pool=3,
    front_activation="selu",
    first_block_channels=128,
    second_block_channels=512,
    first_block_bn1=False,
    fms_mode="add",
    fms_position="after_pool",
    pre_gru_activation="selu",
    gru_hidden=1024,
    gru_layers=3,
    embedding_dim=1024,
    head_activation="none",
)

ASVSPOOF2021_BASELINE = TAK2021.replace(
    name="asvspoof2021_baseline",
    sinc_filters=20,
    sinc_kernel_size=1025,
    first_block_channels=20,
    second_block_channels=128,
    sinc_edges="asvspoof2021",
    # The baseline builds block0 with first=True too (no bn1); blocks 1..5 own a bn1 whose
    # output is discarded because conv1 reads the block input.
    first_block_bn1=False,
    bn1_bypassed=True,
    output_log_softmax=True,
)

PRESETS: dict[str, ModelConfig] = {
    c.name: c for c in (CAA_RAWNET2, TAK2021, ASVSPOOF2021_BASELINE)
}


def get_config(name: str, **overrides: Any) -> ModelConfig:
    """A named preset, optionally with fields replaced."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    cfg = PRESETS[name]
    return cfg.replace(**overrides) if overrides else cfg
