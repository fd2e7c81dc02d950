"""Model directories: save_model / restore_variables / load_pretrained (no torch needed)."""

from __future__ import annotations

import json
import os
import shutil

import jax
import numpy as np
import pytest

from rawnet2_jax import checkpoint as ck
from rawnet2_jax.errors import CheckpointError
from train.testing import tiny_model

TINY = tiny_model("caa_rawnet2", num_samples=2200)


@pytest.fixture(scope="module")
def tiny_vars():
    from rawnet2_jax.model import init_variables

    v = init_variables(TINY, 0, num_samples=TINY.num_samples)
    # Non-trivial running statistics so that eval mode depends on them.
    rng = np.random.default_rng(0)
    v = jax.tree.map(np.asarray, v)

    def perturb(tree):
        out = {}
        for k, val in tree.items():
            if isinstance(val, dict):
                out[k] = perturb(val)
            elif k == "mean":
                out[k] = rng.normal(0, 0.1, val.shape).astype(np.float32)
            elif k == "var":
                out[k] = rng.uniform(0.5, 2.0, val.shape).astype(np.float32)
            else:
                out[k] = val
        return out
    v["batch_stats"] = perturb(v["batch_stats"])
    return v


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tiny_vars):
    d = tmp_path_factory.mktemp("ck") / "model"
    ck.save_model(d, tiny_vars, TINY, {"source": "unit test"})
    return d


def _audio(b, t, seed=0):
    return (np.random.default_rng(seed).standard_normal((b, t)) * 0.1).astype(np.float32)


def _fresh_copy(saved, tmp_path):
    d = tmp_path / "copy"
    shutil.copytree(saved, d)
    return d


@pytest.mark.slow
def test_layout_and_metadata(saved):
    assert sorted(p.name for p in saved.iterdir()) == ["config.json", "manifest.json", "metadata.json", "variables"]
    meta = ck.load_metadata(saved)
    assert meta["format_version"] == ck.FORMAT_VERSION
    assert meta["source"] == "unit test"
    assert ck.load_config(saved) == TINY
    # No temporary siblings left behind.
    assert [p.name for p in saved.parent.iterdir()] == ["model"]


def test_restore_is_exact(saved, tiny_vars):
    got = ck.restore_variables(saved)
    assert set(got) == {"params", "batch_stats", "buffers"}
    want_flat = jax.tree_util.tree_leaves_with_path(tiny_vars)
    got_flat = dict(jax.tree_util.tree_leaves_with_path(got))
    assert len(want_flat) == len(got_flat)
    for path, leaf in want_flat:
        np.testing.assert_array_equal(np.asarray(got_flat[path]), np.asarray(leaf), err_msg=str(path))
        assert np.asarray(got_flat[path]).dtype == np.asarray(leaf).dtype


@pytest.mark.slow
def test_load_pretrained_logits_match_model(saved, tiny_vars):
    from rawnet2_jax.model import RawNet2

    m = ck.load_pretrained(saved)
    assert m.config == TINY and isinstance(m.model, RawNet2)
    for t in (TINY.num_samples, 3000):  # any T, used exactly as given
        x = _audio(3, t, seed=t)
        want, _ = RawNet2(TINY).apply(tiny_vars, x, train=False)
        got = m.logits(x)
        assert got.shape == (3, 2) and isinstance(got, np.ndarray)
        np.testing.assert_allclose(got, np.asarray(want), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(m.scores(x), got[:, 1] - got[:, 0], rtol=1e-6)
    one = m.logits(x[0])
    np.testing.assert_allclose(one, got[:1], rtol=1e-5, atol=1e-6)


def test_workdir_best_model(tmp_path, saved):
    work = tmp_path / "run"
    (work / "checkpoints" / "5").mkdir(parents=True)
    shutil.copytree(saved, work / ck.BEST_MODEL_DIRNAME)
    m = ck.load_pretrained(work)
    assert m.directory == work / ck.BEST_MODEL_DIRNAME
    assert ck.load_pretrained(str(work)).config == TINY


def test_save_overwrite_rules(tmp_path, tiny_vars):
    d = tmp_path / "m"
    d.mkdir()
    (d / "junk.txt").write_text("x")
    with pytest.raises(CheckpointError, match="not empty"):
        ck.save_model(d, tiny_vars, TINY, overwrite=False)
    assert (d / "junk.txt").exists()
    with pytest.raises(CheckpointError, match=r"holds files that are not a model directory \(junk.txt, ...\); "
                                              "--force replaces only a model directory"):
        ck.save_model(d, tiny_vars, TINY, overwrite=True)  # e.g. `convert best.pt . --force`
    assert [p.name for p in d.iterdir()] == ["junk.txt"]
    (d / "junk.txt").unlink()
    ck.save_model(d, tiny_vars, TINY, {"epoch": 1}, overwrite=True)
    ck.save_model(d, tiny_vars, TINY, {"epoch": 2}, overwrite=True)  # a model dir: replaced
    assert ck.load_metadata(d)["epoch"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["m"]
    umask = os.umask(0)
    os.umask(umask)
    assert d.stat().st_mode & 0o777 == 0o777 & ~umask  # not mkdtemp's 0700: others can load it


def test_save_rejects_wrong_shapes(tmp_path, tiny_vars):
    bad = jax.tree.map(lambda a: a, tiny_vars)
    bad["params"] = dict(bad["params"])
    bad["params"]["fc"] = {"kernel": np.zeros((3, 3), np.float32), "bias": np.zeros(3, np.float32)}
    with pytest.raises(CheckpointError, match="wrong shape"):
        ck.save_model(tmp_path / "m", bad, TINY)
    assert not (tmp_path / "m").exists()


def _one_line(e):
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


def test_error_missing_dir(tmp_path):
    with pytest.raises(CheckpointError) as e:
        ck.load_pretrained(tmp_path / "nope")
    assert "does not exist" in _one_line(e)


def test_error_not_a_model_dir(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError) as e:
        ck.load_pretrained(tmp_path / "empty")
    assert "not a model directory" in _one_line(e)


def test_error_missing_config(saved, tmp_path):
    d = _fresh_copy(saved, tmp_path)
    (d / "config.json").unlink()
    with pytest.raises(CheckpointError) as e:
        ck.load_pretrained(d)
    assert "config.json is missing" in _one_line(e)


@pytest.mark.parametrize(
    "text,needle",
    [("{not json", "corrupt"), ("[1, 2]", "corrupt"), ('{"name": "x"}', "not a valid model config")],
)
def test_error_corrupt_config(saved, tmp_path, text, needle):
    d = _fresh_copy(saved, tmp_path)
    (d / "config.json").write_text(text)
    with pytest.raises(CheckpointError) as e:
        ck.load_pretrained(d)
    assert needle in _one_line(e)


def test_config_without_sinc_conv_impl_loads(saved, tmp_path, tiny_vars):
    # config.json written before the sinc_conv_impl field existed: loads with the default
    d = _fresh_copy(saved, tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    del cfg["sinc_conv_impl"]
    (d / "config.json").write_text(json.dumps(cfg))
    (d / ck.MANIFEST_FILE).unlink()  # such directories predate manifests too
    assert ck.load_config(d) == TINY and ck.load_config(d).sinc_conv_impl == "auto"
    ck.load_pretrained(d)
    # a non-default choice is saved and read back
    fft = TINY.replace(sinc_conv_impl="fft")
    ck.save_model(tmp_path / "fft", tiny_vars, fft, {"source": "unit test"})
    assert ck.load_config(tmp_path / "fft") == fft
    assert type(fft).from_dict(json.loads(fft.to_json())) == fft


def test_error_unknown_config_field(saved, tmp_path):
    d = _fresh_copy(saved, tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    cfg["wings"] = 2
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError) as e:
        ck.load_pretrained(d)
    assert "wings" in _one_line(e)


def test_error_orbax_restore_failure(saved, tmp_path):
    d = _fresh_copy(saved, tmp_path)
    (d / ck.MANIFEST_FILE).unlink()  # what orbax says about a model without a manifest
    for p in (d / "variables").rglob("*"):
        if p.is_file() and p.name not in ("_CHECKPOINT_METADATA",):
            p.write_bytes(b"garbage")
    with pytest.raises(CheckpointError) as e:
        ck.load_pretrained(d)
    assert "cannot restore variables" in _one_line(e)


def test_error_missing_variables(saved, tmp_path):
    d = _fresh_copy(saved, tmp_path)
    shutil.rmtree(d / "variables")
    with pytest.raises(CheckpointError) as e:
        ck.load_pretrained(d)
    assert "variables" in _one_line(e)


def test_error_shape_mismatch_against_config(saved, tmp_path):
    d = _fresh_copy(saved, tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    cfg["second_block_channels"] = 24
    (d / "config.json").write_text(json.dumps(cfg))
    (d / ck.MANIFEST_FILE).unlink()  # else the manifest names the edited config.json first
    with pytest.raises(CheckpointError) as e:
        ck.load_pretrained(d)
    msg = _one_line(e)
    assert "do not match model config" in msg and "wrong shape" in msg
