"""Torch <-> Flax naming tables: exact round trips, one error listing every problem, layouts."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from convert.tables import (
    check_seed_sinc_tensors,
    detect_layout,
    expected_torch_shapes,
    flax_to_torch,
    table,
    torch_to_flax,
)
from rawnet2_jax.config import PRESETS, get_config
from rawnet2_jax.errors import CheckpointError
from rawnet2_jax.model import init_variables
from rawnet2_jax.sinc import seed_sinc_tensors


def fake_state_dict(cfg, seed=0) -> dict[str, np.ndarray]:
    """Random arrays with exactly the keys/shapes/dtypes of a real checkpoint (no torch needed)."""
    rng = np.random.default_rng(seed)
    out = {}
    for key, shape in expected_torch_shapes(cfg).items():
        if key.endswith("num_batches_tracked"):
            out[key] = np.asarray(rng.integers(0, 10**6), dtype=np.int64)
        else:
            out[key] = rng.standard_normal(shape).astype(np.float32)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("preset", list(PRESETS))
def test_round_trip_exact(preset):
    cfg = PRESETS[preset]
    sd = fake_state_dict(cfg)
    back = flax_to_torch(torch_to_flax(sd, cfg), cfg)
    assert list(back) == list(sd)
    for k, v in sd.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape, k
        np.testing.assert_array_equal(back[k], v, err_msg=k)


@pytest.mark.slow
@pytest.mark.parametrize("preset", list(PRESETS))
def test_tree_matches_model_init(preset):
    """Converted variables have exactly the tree, shapes and dtypes of a fresh model."""
    cfg = PRESETS[preset]
    converted = torch_to_flax(fake_state_dict(cfg), cfg)
    fresh = jax.eval_shape(lambda: init_variables(cfg, 0, num_samples=4000))
    spec = lambda t: jax.tree.map(lambda a: (tuple(a.shape), np.dtype(a.dtype)), t)  # noqa: E731
    assert spec(converted) == spec(fresh)


@pytest.mark.slow
def test_round_trip_learnable_sinc_goes_to_params():
    cfg = get_config("caa_rawnet2", sinc_learnable=True)
    sd = fake_state_dict(cfg)
    v = torch_to_flax(sd, cfg)
    assert set(v["params"]["sinc"]) == {"low_hz_", "band_hz_"}
    assert set(v["buffers"]["sinc"]) == {"n_axis", "window"}
    back = flax_to_torch(v, cfg)
    for k in sd:
        np.testing.assert_array_equal(back[k], sd[k])


@pytest.mark.slow
def test_round_trip_with_torch_tensors():
    pytest.importorskip("torch")
    from convert.reference import reference_model

    for cfg in PRESETS.values():
        sd = reference_model(cfg).state_dict()
        back = flax_to_torch(torch_to_flax(sd, cfg), cfg)
        assert list(back) == list(expected_torch_shapes(cfg))
        assert set(back) == set(sd)
        for k, t in sd.items():
            assert str(t.dtype).replace("torch.", "") == str(back[k].dtype), k
            np.testing.assert_array_equal(back[k], t.numpy(), err_msg=k)


@pytest.mark.slow
def test_module_prefix_and_half_precision_tensors():
    torch = pytest.importorskip("torch")
    cfg = PRESETS["tak2021"]
    sd = {"module." + k: torch.from_numpy(np.asarray(v)) for k, v in fake_state_dict(cfg).items()}
    sd["module.fc1_gru.weight"] = sd["module.fc1_gru.weight"].to(torch.bfloat16)
    v = torch_to_flax(sd, cfg)
    assert v["params"]["fc"]["kernel"].dtype == np.float32
    np.testing.assert_array_equal(
        v["params"]["fc"]["kernel"], sd["module.fc1_gru.weight"].float().numpy().T)


@pytest.mark.slow
def test_known_transforms():
    cfg = PRESETS["tak2021"]
    sd = fake_state_dict(cfg)
    v = torch_to_flax(sd, cfg)
    np.testing.assert_array_equal(
        v["params"]["block2"]["conv1"]["kernel"], sd["block2.0.conv1.weight"].transpose(2, 1, 0))
    np.testing.assert_array_equal(
        v["params"]["block2"]["shortcut"]["kernel"][0], sd["block2.0.conv_downsample.weight"][:, :, 0].T)
    np.testing.assert_array_equal(v["params"]["block3"]["fms"]["fc"]["kernel"],
                                  sd["fc_attention3.0.weight"].T)
    np.testing.assert_array_equal(v["params"]["gru"]["l2"]["w_hh"], sd["gru.weight_hh_l2"].T)
    np.testing.assert_array_equal(v["batch_stats"]["pre_gru_bn"]["var"], sd["bn_before_gru.running_var"])
    np.testing.assert_array_equal(v["params"]["front_bn"]["scale"], sd["first_bn.weight"])
    assert v["buffers"]["front_bn"]["num_batches_tracked"].dtype == np.int32
    assert "bn1" not in v["params"]["block0"] and "bn1" in v["params"]["block1"]
    np.testing.assert_array_equal(v["params"]["classifier"]["kernel"], sd["fc2_gru.weight"].T)


def test_seed_shapes_match_layout_doc():
    shapes = expected_torch_shapes(PRESETS["caa_rawnet2"])
    assert shapes["sinc.low_hz_"] == (128, 1) and shapes["sinc.n_axis"] == (1, 64)
    assert shapes["sinc.window"] == (64,)
    assert shapes["blocks.2.shortcut.weight"] == (512, 128, 1)
    assert shapes["blocks.0.bn1.weight"] == (128,)  # every seed block has bn1
    assert shapes["gru.weight_ih_l0"] == (3072, 512) and shapes["gru.weight_hh_l0"] == (3072, 1024)
    assert shapes["classifier.weight"] == (2, 1024) and shapes["class_weights"] == (2,)
    assert shapes["front_bn.num_batches_tracked"] == ()
    assert "blocks.3.shortcut.weight" not in shapes
    n_values = sum(int(np.prod(s)) for s in shapes.values())
    assert 12.8e6 < n_values < 12.9e6  # "about 12.8 M values"


def test_official_shapes():
    shapes = expected_torch_shapes(PRESETS["asvspoof2021_baseline"])
    assert not any(k.startswith("sinc") for k in shapes)
    assert "block0.0.bn1.weight" not in shapes and shapes["block1.0.bn1.weight"] == (20,)
    assert shapes["block2.0.conv_downsample.weight"] == (128, 20, 1)
    assert shapes["gru.weight_ih_l0"] == (3072, 128) and shapes["gru.weight_ih_l2"] == (3072, 1024)
    assert shapes["fc2_gru.weight"] == (2, 1024)


def test_all_problems_in_one_error():
    cfg = PRESETS["caa_rawnet2"]
    sd = fake_state_dict(cfg)
    del sd["fc.bias"], sd["blocks.3.bn2.running_var"]
    sd["blocks.2.conv1.weight"] = np.zeros((512, 128, 5), np.float32)
    sd["extra.thing"] = np.zeros(3, np.float32)
    with pytest.raises(CheckpointError) as info:
        torch_to_flax(sd, cfg)
    msg = str(info.value)
    assert "\n" not in msg
    for needle in ("missing 2", "fc.bias", "blocks.3.bn2.running_var", "unexpected 1", "extra.thing",
                   "misshapen 1", "blocks.2.conv1.weight (512, 128, 5)", "(512, 128, 3)"):
        assert needle in msg, (needle, msg)


def test_wrong_preset_for_checkpoint_is_reported():
    sd = fake_state_dict(PRESETS["tak2021"])
    with pytest.raises(CheckpointError, match="asvspoof2021_baseline.*misshapen"):
        torch_to_flax(sd, PRESETS["asvspoof2021_baseline"])


@pytest.mark.slow
def test_flax_to_torch_reports_missing():
    cfg = PRESETS["tak2021"]
    v = torch_to_flax(fake_state_dict(cfg), cfg)
    del v["params"]["fc"]
    with pytest.raises(CheckpointError, match="params/fc/kernel"):
        flax_to_torch(v, cfg)


def test_detect_layout():
    assert detect_layout(expected_torch_shapes(PRESETS["caa_rawnet2"])) == "seed"
    assert detect_layout(expected_torch_shapes(PRESETS["tak2021"])) == "official"
    assert detect_layout(["module." + k for k in expected_torch_shapes(PRESETS["tak2021"])]) == "official"
    for bad in ([], ["encoder.weight", "decoder.bias"], ["front_bn.weight", "first_bn.weight"]):
        with pytest.raises(CheckpointError):
            detect_layout(bad)


def test_table_entries_unique():
    for cfg in PRESETS.values():
        entries = table(cfg)
        assert len({e.torch_key for e in entries}) == len(entries)
        assert len({(e.collection, e.path) for e in entries}) == len(entries)


@pytest.mark.slow
def test_apply_without_carried_buffers():
    """num_batches_tracked / class_weights are carried for the round trip only: variables
    without them (e.g. a training state that drops them) still apply, with the same result."""
    import jax.numpy as jnp

    from rawnet2_jax.model import RawNet2

    cfg = get_config("caa_rawnet2", sinc_filters=8, first_block_channels=8, second_block_channels=8,
                     gru_hidden=8, embedding_dim=8)
    v = init_variables(cfg)
    lean = {"params": v["params"], "batch_stats": v["batch_stats"],
            "buffers": {"sinc": v["buffers"]["sinc"]}}  # the sinc tensors are used: they stay
    x = jnp.linspace(-0.5, 0.5, 2 * 1000).reshape(2, 1000)
    forward = jax.jit(lambda variables: RawNet2(cfg).apply(variables, x)[0])  # not op by op: half the time
    np.testing.assert_array_equal(forward(lean), forward(v))


def test_check_seed_sinc_tensors():
    cfg = get_config("caa_rawnet2")
    st = seed_sinc_tensors(cfg)
    assert check_seed_sinc_tensors(st, cfg) == []
    other = dict(st)
    other["n_axis"] = (np.arange(64) * np.pi / 16000).reshape(1, 64).astype(np.float32)
    other["window"] = np.hamming(129)[:64].astype(np.float32)
    other["band_hz_"] = np.zeros((128, 1), np.float32)
    del other["low_hz_"]
    msgs = " | ".join(check_seed_sinc_tensors(other, cfg))
    for needle in ("low_hz_ is missing", "contains 0", "j*pi/sr", "hamming(K)[:K//2]"):
        assert needle in msgs, msgs
    other["low_hz_"] = st["low_hz_"]
    assert "zero bandwidth" in " | ".join(check_seed_sinc_tensors(other, cfg))
