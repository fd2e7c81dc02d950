"""PyTorch reference RawNet2 models whose ``state_dict()`` matches the real checkpoints.

* ``SeedRawNet2(cfg)``: the "seed" layout (``best.pt`` of the improved RawNet2): keys
  ``sinc.*``, ``front_bn``, ``blocks.{i}.*``, ``pre_gru_bn``, ``gru``, ``fc``, ``classifier``,
  ``class_weights``.
* ``OfficialRawNet2(cfg)``: the eurecom / ASVspoof 2021 layout: ``first_bn``, ``block{i}.0.*``,
  ``fc_attention{i}.0``, ``bn_before_gru``, ``gru``, ``fc1_gru``, ``fc2_gru``; no sinc keys.

Written from the papers / public descriptions with plain torch ops, ``nn.BatchNorm1d`` and
``nn.GRU``, independently of the Flax code, so that parity tests compare two implementations.
Both honour the same ``ModelConfig`` fields as the Flax model (that is what lets the BN-stats
check try candidate forwards of the seed). ``forward(x (B, T))`` returns
``(logits (B, n), intermediates)`` with intermediates channels-first (B, C, T) as torch makes
them, under the same names as the Flax model.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rawnet2_jax.config import ModelConfig

# --------------------------------------------------------------------------------------------
# sinc filters (numpy float64 for the official formula, torch for SincNet)
# --------------------------------------------------------------------------------------------


def _mel(hz):
    return 2595 * np.log10(1 + hz / 700)


def _hz(mel):
    return 700 * (10 ** (mel / 2595) - 1)


def official_filterbank_np(cfg: ModelConfig) -> np.ndarray:
    """(N, K) float64 filters of the eurecom / ASVspoof 2021 SincConv."""
    n, k, sr = cfg.sinc_filters, cfg.sinc_kernel_size, cfg.sample_rate
    nyq = float(int(sr / 2))
    if cfg.sinc_edges == "asvspoof2021":
        edges = _hz(np.linspace(0.0, _mel(nyq), n + 1))
    elif cfg.sinc_scale == "linear":
        edges = np.linspace(0.0, nyq, n + 3)[: n + 1]
    else:
        edges = _hz(np.linspace(0.0, _mel(nyq), n + 3))[: n + 1]
        if cfg.sinc_scale == "inverse_mel":
            edges = np.abs(edges[::-1] - 1)
    t = np.arange(k) - (k - 1) / 2  # symmetric time axis in samples
    f_lo, f_hi = edges[:-1, None], edges[1:, None]
    ideal = 2 * f_hi / sr * np.sinc(2 * f_hi * t / sr) - 2 * f_lo / sr * np.sinc(2 * f_lo * t / sr)
    return ideal * np.hamming(k)[None, :]


class SeedSinc(nn.Module):
    """Holds the four stored SincNet tensors under the seed's names."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        c, k, sr = cfg.sinc_filters, cfg.sinc_kernel_size, cfg.sample_rate
        edges = np.linspace(0, sr / 2, c + 1)
        if cfg.sinc_scale in ("mel", "inverse_mel"):
            edges = _hz(np.linspace(0, _mel(sr / 2), c + 1))
            if cfg.sinc_scale == "inverse_mel":
                edges = sr / 2 - edges[::-1]
        self.low_hz_ = nn.Parameter(torch.tensor(edges[:-1, None], dtype=torch.float32),
                                    requires_grad=cfg.sinc_learnable)
        self.band_hz_ = nn.Parameter(torch.tensor(np.diff(edges)[:, None], dtype=torch.float32),
                                     requires_grad=cfg.sinc_learnable)
        half = (k - 1) // 2
        steps = torch.linspace(0, k / 2 - 1, steps=k // 2)
        self.register_buffer("n_axis", 2 * math.pi * torch.arange(-half, 0).view(1, -1).float() / sr)
        self.register_buffer("window", 0.54 - 0.46 * torch.cos(2 * math.pi * steps / k))

    def filters(self) -> torch.Tensor:  # (C, K)
        cfg = self.cfg
        if cfg.sinc_formula == "official":
            return torch.tensor(official_filterbank_np(cfg), dtype=torch.float32)
        f_lo = cfg.sinc_min_low_hz + self.low_hz_.abs()
        f_hi = torch.clamp(f_lo + cfg.sinc_min_band_hz + self.band_hz_.abs(),
                           cfg.sinc_min_low_hz, cfg.sample_rate / 2)
        bw = f_hi - f_lo  # (C, 1)
        t = self.n_axis  # (1, K//2), negative times in radians/Hz
        half = (torch.sin(f_hi * t) - torch.sin(f_lo * t)) / (t / 2) * self.window
        full = torch.cat([half, 2 * bw, half.flip(1)], dim=1)
        return full / (2 * bw)


# --------------------------------------------------------------------------------------------
# building blocks
# --------------------------------------------------------------------------------------------


def _act(name: str, slope: float) -> nn.Module:
    return {"selu": nn.SELU(), "leaky_relu": nn.LeakyReLU(slope), "relu": nn.ReLU(),
            "none": nn.Identity()}[name]


class RefBlock(nn.Module):
    """Residual block; FMS inside (seed naming ``fms.fc``) or handled by the parent (official)."""

    def __init__(self, cfg: ModelConfig, c_in: int, c_out: int, has_bn1: bool,
                 shortcut_name: str, own_fms: bool):
        super().__init__()
        self.cfg = cfg
        k = cfg.block_kernel_size
        bn = lambda c: nn.BatchNorm1d(c, eps=cfg.bn_eps, momentum=cfg.bn_momentum)  # noqa: E731
        if has_bn1:
            self.bn1 = bn(c_in)
        self.has_bn1 = has_bn1
        self.conv1 = nn.Conv1d(c_in, c_out, k, padding=(k - 1) // 2)
        self.bn2 = bn(c_out)
        self.conv2 = nn.Conv1d(c_out, c_out, k, padding=(k - 1) // 2)
        self.shortcut_name = shortcut_name if c_in != c_out else None
        if self.shortcut_name:
            setattr(self, shortcut_name, nn.Conv1d(c_in, c_out, 1))
        if own_fms:
            self.fms = nn.Module()
            self.fms.fc = nn.Linear(c_out, c_out)
        self.act = nn.LeakyReLU(cfg.leaky_relu_slope)

    def forward(self, x, fc: nn.Linear):
        cfg = self.cfg
        h = x
        if self.has_bn1:
            h_bn = self.act(self.bn1(x))
            h = x if cfg.bn1_bypassed else h_bn
        h = self.conv2(self.act(self.bn2(self.conv1(h))))
        skip = getattr(self, self.shortcut_name)(x) if self.shortcut_name else x

        def fms(v):
            s = torch.sigmoid(fc(v.mean(dim=2))).unsqueeze(-1)  # (B, C, 1)
            return v * s + s if cfg.fms_mode == "add" else v * s

        if cfg.fms_position == "before_add":
            h = fms(h)
        h = h + skip
        if cfg.fms_position == "before_pool":
            h = fms(h)
        h = F.max_pool1d(h, cfg.block_pool)
        if cfg.fms_position == "after_pool":
            h = fms(h)
        return h


class _RefRawNet2(nn.Module):
    _official = False

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        off = self._official
        bn = lambda c: nn.BatchNorm1d(c, eps=cfg.bn_eps, momentum=cfg.bn_momentum)  # noqa: E731
        c0 = cfg.sinc_filters
        if off:
            filt = torch.tensor(official_filterbank_np(cfg), dtype=torch.float32)
            self.register_buffer("_filters", filt, persistent=False)  # not in the state dict
            self.first_bn = bn(c0)
        else:
            self.sinc = SeedSinc(cfg)
            self.front_bn = bn(c0)
        blocks = []
        for i, (ci, co) in enumerate(cfg.block_channels):
            has_bn1 = cfg.first_block_bn1 or i > 0
            blk = RefBlock(cfg, ci, co, has_bn1, "conv_downsample" if off else "shortcut",
                           own_fms=not off)
            blocks.append(blk)
            if off:
                setattr(self, f"block{i}", nn.Sequential(blk))
                setattr(self, f"fc_attention{i}", nn.Sequential(nn.Linear(co, co)))
        if not off:
            self.blocks = nn.ModuleList(blocks)
        self._blocks = blocks  # plain list: attribute lookups only, no extra state-dict names
        c_last = cfg.block_channels[-1][1]
        if off:
            self.bn_before_gru = bn(c_last)
        else:
            self.pre_gru_bn = bn(c_last)
        self.gru = nn.GRU(c_last, cfg.gru_hidden, num_layers=cfg.gru_layers, batch_first=True)
        lin1 = nn.Linear(cfg.gru_hidden, cfg.embedding_dim)
        lin2 = nn.Linear(cfg.embedding_dim, cfg.num_classes)
        if off:
            self.fc1_gru, self.fc2_gru = lin1, lin2
        else:
            self.fc, self.classifier = lin1, lin2
            if cfg.stored_class_weights is not None:
                self.register_buffer("class_weights",
                                     torch.tensor(cfg.stored_class_weights, dtype=torch.float32))
        self.front_act = _act(cfg.front_activation, cfg.leaky_relu_slope)
        self.pre_gru_act = _act(cfg.pre_gru_activation, cfg.leaky_relu_slope)
        self.head_act = _act(cfg.head_activation, cfg.leaky_relu_slope)

    def forward(self, x: torch.Tensor):
        cfg, off = self.cfg, self._official
        inter = {}
        filt = self._filters if off else self.sinc.filters()
        k = cfg.sinc_kernel_size
        pad = k // 2 if cfg.sinc_padding == "same" else 0
        h = F.conv1d((x * cfg.input_scale).unsqueeze(1), filt.unsqueeze(1), padding=pad)  # (B, C, T')
        if cfg.sinc_abs:
            h = h.abs()
        if cfg.sinc_pool > 1:
            h = F.max_pool1d(h, cfg.sinc_pool)
        inter["sinc"] = h
        h = self.front_act((self.first_bn if off else self.front_bn)(h))
        inter["front"] = h
        for i, blk in enumerate(self._blocks):
            fc = getattr(self, f"fc_attention{i}")[0] if off else blk.fms.fc
            h = blk(h, fc)
            inter[f"block{i}"] = h
        h = self.pre_gru_act((self.bn_before_gru if off else self.pre_gru_bn)(h))
        inter["pre_gru"] = h
        seq, _ = self.gru(h.transpose(1, 2))  # (B, T, H)
        h = seq[:, -1, :]
        inter["gru"] = h
        h = self.head_act((self.fc1_gru if off else self.fc)(h))
        inter["embedding"] = h
        logits = (self.fc2_gru if off else self.classifier)(h)
        if cfg.output_log_softmax:
            logits = F.log_softmax(logits, dim=1)
        return logits, inter


class SeedRawNet2(_RefRawNet2):
    _official = False


class OfficialRawNet2(_RefRawNet2):
    _official = True


def reference_model(cfg: ModelConfig) -> nn.Module:
    """The reference module of ``cfg.layout``."""
    return OfficialRawNet2(cfg) if cfg.layout == "official" else SeedRawNet2(cfg)
