"""rawnet2_jax.residual: one ResidualBlock against the torch reference block (convert/reference.py).

The block's weights come from a tiny torch reference model, through the converter's tables
(the one place that knows both namings), so this also pins the block's variable layout.
Covered: a block without and with a channel change (1x1 shortcut), every FMS mode and
position, the first block without bn1, the baseline's bypassed bn1; eval mode (plain and with
bn2 folded into conv1) and train mode with the updated running statistics.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rawnet2_jax.residual import Conv1d, ResidualBlock
from tests.conftest import assert_close, import_torch, randomise_torch_model, speech_like
from train.testing import tiny_model

torch = import_torch()
from convert.reference import reference_model  # noqa: E402  (needs torch)
from convert.tables import torch_to_flax  # noqa: E402

pytestmark = pytest.mark.parity

RTOL = 1e-5
ATOL_REL = 1e-6  # absolute term, times the tensor's max magnitude


def _np(t):
    return t.detach().cpu().numpy()


CASES = {
    "seed": tiny_model("caa_rawnet2"),
    "seed_mul_before_add": tiny_model("caa_rawnet2", fms_mode="mul", fms_position="before_add"),
    "seed_before_pool": tiny_model("caa_rawnet2", fms_position="before_pool"),
    "official_first_block_without_bn1": tiny_model("tak2021"),
    "baseline_bn1_bypassed": tiny_model("asvspoof2021_baseline"),
}


def _setup(cfg, index: int):
    """(torch block, its FMS linear, flax block, flax variables of the block, block input)."""
    torch.manual_seed(index)
    ref = reference_model(cfg)
    randomise_torch_model(ref, speech_like(1600, batch=3, seed=7), seed=index + 1)
    variables = torch_to_flax(ref.state_dict(), cfg)
    name = f"block{index}"
    block_vars = {col: tree[name] for col, tree in variables.items() if name in tree}
    fc = getattr(ref, f"fc_attention{index}")[0] if cfg.layout == "official" else ref._blocks[index].fms.fc
    c_in, c_out = cfg.block_channels[index]
    rng = np.random.default_rng(index)
    # (B, C, T) activations with per-channel offsets and scales, as a block sees them
    x = rng.normal(rng.normal(0, 1, (1, c_in, 1)), rng.uniform(0.5, 2, (1, c_in, 1)), (3, c_in, 92))
    block = ResidualBlock(
        c_out, has_bn1=cfg.first_block_bn1 or index > 0, bn1_bypassed=cfg.bn1_bypassed,
        kernel_size=cfg.block_kernel_size, pool=cfg.block_pool, slope=cfg.leaky_relu_slope,
        fms_mode=cfg.fms_mode, fms_position=cfg.fms_position,
    )
    return ref._blocks[index], fc, block, block_vars, x.astype(np.float32)


def _flax_in(x):
    return jnp.asarray(x.transpose(0, 2, 1))  # torch (B, C, T) -> flax (B, T, C)


@pytest.mark.parametrize("index", [0, 1], ids=["same_channels", "shortcut"])
@pytest.mark.parametrize("case", list(CASES))
def test_block_eval_matches_torch(case, index):
    ref, fc, block, v, x = _setup(CASES[case], index)
    ref.eval()
    with torch.no_grad():
        want = _np(ref(torch.from_numpy(x), fc)).transpose(0, 2, 1)
    for fold in (False, True):
        with jax.default_matmul_precision("highest"):
            got = jax.jit(lambda v, x: block.clone(fold_bn=fold).apply(v, x, train=False))(v, _flax_in(x))
        assert_close(got, want, rtol=RTOL, atol=ATOL_REL * np.abs(want).max(),
                     name=f"{case} block{index} eval fold_bn={fold}")


@pytest.mark.parametrize("index", [0, 1], ids=["same_channels", "shortcut"])
@pytest.mark.parametrize("case", list(CASES))
def test_block_train_and_running_stats_match_torch(case, index):
    ref, fc, block, v, x = _setup(CASES[case], index)
    ref.train()
    with torch.no_grad():
        want = _np(ref(torch.from_numpy(x), fc)).transpose(0, 2, 1)
    with jax.default_matmul_precision("highest"):
        got, upd = jax.jit(lambda v, x: block.apply(v, x, train=True, mutable=["batch_stats"]))(v, _flax_in(x))
    assert_close(got, want, rtol=RTOL, atol=ATOL_REL * np.abs(want).max(), name=f"{case} block{index} train")
    bns = [n for n in ("bn1", "bn2") if n in v["batch_stats"]]
    assert bns == (["bn1", "bn2"] if block.has_bn1 else ["bn2"])
    for name in bns:
        tbn = getattr(ref, name)
        for ours, theirs in (("mean", tbn.running_mean), ("var", tbn.running_var)):
            w = _np(theirs)
            assert_close(upd["batch_stats"][name][ours], w, rtol=RTOL, atol=ATOL_REL * np.abs(w).max(),
                         name=f"{case} block{index} {name} running {ours}")


def test_block_output_length_is_floor_of_pool():
    cfg = CASES["seed"]
    _, _, block, v, x = _setup(cfg, 1)
    for t in (90, 91, 92):  # torch's max_pool1d drops the incomplete last window
        y = jax.eval_shape(lambda v, x: block.apply(v, x, train=False), v, _flax_in(x[:, :, :t]))
        assert y.shape == (3, t // cfg.block_pool, cfg.block_channels[1][1])


def test_conv1d_matches_torch_and_folds_an_affine_map():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 7, 40)).astype(np.float32)  # (B, C_in, T)
    ref = torch.nn.Conv1d(7, 5, 3, padding=1)
    conv = Conv1d(5, 3)
    v = {"params": {"kernel": _np(ref.weight).transpose(2, 1, 0), "bias": _np(ref.bias)}}
    with torch.no_grad():
        want = _np(ref(torch.from_numpy(x))).transpose(0, 2, 1)
    with jax.default_matmul_precision("highest"):
        got = conv.apply(v, _flax_in(x))
        a = jnp.asarray(rng.uniform(0.5, 2, 5), jnp.float32)
        b = jnp.asarray(rng.normal(0, 1, 5), jnp.float32)
        folded = conv.apply(v, _flax_in(x), a, b)
    assert_close(got, want, rtol=RTOL, atol=ATOL_REL * np.abs(want).max(), name="conv1d")
    assert_close(folded, want * np.asarray(a) + np.asarray(b), rtol=RTOL, atol=1e-5, name="conv1d folded")
