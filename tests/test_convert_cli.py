"""`python -m convert`: round trips against the torch reference modules, container variants,
and every failure: one clear line on stderr, non-zero exit, no output directory."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from convert import converter, torch_load  # noqa: E402
from convert.__main__ import main  # noqa: E402
from convert.reference import OfficialRawNet2, SeedRawNet2  # noqa: E402
from rawnet2_jax.config import get_config  # noqa: E402
from rawnet2_jax.data.synth import speech_like  # noqa: E402
from train.testing import tiny_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

# The tests' tiny models under their presets' names: `--preset NAME` + `_sets(cfg)` rebuilds them.
TINY_SEED = tiny_model("caa_rawnet2", name="caa_rawnet2")
TINY_OFFICIAL = tiny_model("tak2021", name="tak2021")


def _sets(cfg):
    """``--set FIELD=VALUE`` for every field in which ``cfg`` differs from its preset."""
    base = get_config(cfg.name)
    out = []
    for f in dataclasses.fields(cfg):
        if getattr(cfg, f.name) != getattr(base, f.name):
            out += ["--set", f"{f.name}={getattr(cfg, f.name)}"]
    return out


def _reference(cfg, seed=0):
    """Reference module with random weights AND non-trivial BatchNorm statistics."""
    torch.manual_seed(seed)
    m = (SeedRawNet2 if cfg.layout == "seed" else OfficialRawNet2)(cfg)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm1d):
                c = mod.num_features
                mod.running_mean.copy_(torch.randn(c, generator=g) * 0.2)
                mod.running_var.copy_(torch.rand(c, generator=g) + 0.5)
                mod.weight.copy_(torch.rand(c, generator=g) + 0.5)
                mod.bias.copy_(torch.randn(c, generator=g) * 0.1)
                mod.num_batches_tracked.fill_(int(torch.randint(1, 1000, (1,), generator=g)))
    return m.eval()


def _audio(cfg, t, n=2):
    return speech_like(t, batch=n, seed=10, sample_rate=cfg.sample_rate)


def _assert_logits_match(ref, out_dir, x):
    import jax

    from rawnet2_jax import load_pretrained

    with torch.no_grad():
        want = ref(torch.from_numpy(x))[0].numpy()
    m = load_pretrained(out_dir)
    with jax.default_matmul_precision("highest"):
        got = m.logits(x)
    assert got.shape == want.shape == (x.shape[0], 2)
    diff = float(np.max(np.abs(got - want)))
    scale = float(np.max(np.abs(want)))
    assert diff <= 1e-5 * max(scale, 1e-3), f"max abs diff {diff:.3e} (max |torch| {scale:.3e})"
    np.testing.assert_allclose(m.scores(x), got[:, 1] - got[:, 0], rtol=1e-6, atol=1e-7)
    return m


# ----------------------------------------------------------------------------- round trips


@pytest.mark.slow
@pytest.mark.parity
def test_seed_full_size_wrapped_prefixed_detected(tmp_path, capsys):
    cfg = get_config("caa_rawnet2")
    ref = _reference(cfg)
    sd = {"module." + k: v for k, v in ref.state_dict().items()}
    src = tmp_path / "best.pt"
    torch.save({"model_state_dict": sd, "epoch": 7, "optimizer_state_dict": {}}, src)
    out = tmp_path / "out"
    assert main([str(src), str(out)]) == 0
    text = capsys.readouterr().out
    assert "ignoring the other keys: epoch, optimizer_state_dict" in text
    assert "'module.'" in text and "caa_rawnet2" in text and str(out) in text
    m = _assert_logits_match(ref, out, _audio(cfg, 3000))
    assert m.config == cfg
    assert m.metadata["layout"] == "seed" and m.metadata["preset"] == "caa_rawnet2"
    assert len(m.metadata["source_sha256"]) == 64


@pytest.mark.slow
@pytest.mark.parity
def test_asvspoof2021_baseline_full_size_bare_detected(tmp_path):
    cfg = get_config("asvspoof2021_baseline")
    ref = _reference(cfg, seed=3)
    src = tmp_path / "pre_trained_DF_RawNet2.pth"
    torch.save(ref.state_dict(), src)
    out = tmp_path / "df"
    assert main([str(src), str(out)]) == 0
    m = _assert_logits_match(ref, out, _audio(cfg, max(4000, cfg.min_num_samples)))
    assert m.config.name == "asvspoof2021_baseline"


@pytest.mark.slow
@pytest.mark.parity
@pytest.mark.parametrize("cfg", [TINY_OFFICIAL, TINY_SEED], ids=lambda c: c.name)
def test_tiny_round_trip_with_verify(tmp_path, capsys, cfg):
    ref = _reference(cfg, seed=5)
    src = tmp_path / "m.pt"
    torch.save(ref.state_dict(), src)
    out = tmp_path / "out"
    rc = main([str(src), str(out), "--preset", cfg.name, *_sets(cfg), "--verify",
               "--verify-samples", "3000"])
    text = capsys.readouterr().out
    assert rc == 0, text
    blocks = [f"block{i}" for i in range(cfg.num_first_blocks + cfg.num_second_blocks)]
    for name in ("logits", "sinc", "front", *blocks, "pre_gru", "gru", "embedding"):
        assert f"\n{name} " in text, text
    assert "FAIL" not in text
    _assert_logits_match(ref, out, _audio(cfg, 2500, n=3))


def test_detects_tak2021_by_shapes():
    cfg = get_config("tak2021")
    shapes = {k: tuple(v.shape) for k, v in OfficialRawNet2(cfg).state_dict().items()}
    got, notes = converter.choose_config(shapes)
    assert got.name == "tak2021", notes
    base = {k: tuple(v.shape) for k, v in
            OfficialRawNet2(get_config("asvspoof2021_baseline")).state_dict().items()}
    assert converter.choose_config(base)[0].name == "asvspoof2021_baseline"


# ----------------------------------------------------------------------------- containers


@pytest.mark.parametrize("wrap", ["bare", "wrapped", "prefixed", "wrapped+prefixed", "state_dict"])
def test_container_variants(wrap):
    sd = {"a.weight": torch.ones(2, 3), "b.bias": torch.zeros(2)}
    obj = sd
    if "prefixed" in wrap:
        obj = {"module." + k: v for k, v in obj.items()}
    if wrap.startswith("wrapped"):
        obj = {"model_state_dict": obj, "epoch": 1}
    if wrap == "state_dict":
        obj = {"state_dict": obj}
    got, notes = torch_load.unwrap_state_dict(obj)
    assert sorted(got) == ["a.weight", "b.bias"]
    assert ("wrapper" in " ".join(notes)) == (wrap.startswith("wrapped") or wrap == "state_dict")


# ----------------------------------------------------------------------------- failures


@pytest.fixture(scope="module")
def seed_sd():
    return {k: v.clone() for k, v in SeedRawNet2(get_config("caa_rawnet2")).state_dict().items()}


def _fails(capsys, argv, *needles, out=None):
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    assert rc == 1, err
    assert err.startswith("error: ") and "\n" not in err, err
    assert "Traceback" not in err
    for n in needles:
        assert n in err, err
    if out is not None:
        assert not Path(out).exists()
        assert not [p for p in Path(out).parent.iterdir() if p.name.startswith(f".{Path(out).name}")]
    return err


def test_missing_key(tmp_path, capsys, seed_sd):
    sd = dict(seed_sd)
    del sd["fc.bias"]
    torch.save(sd, tmp_path / "m.pt")
    _fails(capsys, [tmp_path / "m.pt", tmp_path / "out", "--preset", "caa_rawnet2"],
           "missing 1: fc.bias", out=tmp_path / "out")


def test_extra_key(tmp_path, capsys, seed_sd):
    sd = dict(seed_sd, **{"extra.weight": torch.zeros(3)})
    torch.save(sd, tmp_path / "m.pt")
    _fails(capsys, [tmp_path / "m.pt", tmp_path / "out"], "unexpected 1: extra.weight",
           out=tmp_path / "out")


def test_wrong_shape(tmp_path, capsys, seed_sd):
    sd = dict(seed_sd)
    sd["classifier.weight"] = torch.zeros(3, 1024)
    torch.save(sd, tmp_path / "m.pt")
    _fails(capsys, [tmp_path / "m.pt", tmp_path / "out", "--preset", "caa_rawnet2"],
           "wrong shape 1: classifier.weight (3, 1024) (expected (2, 1024))", out=tmp_path / "out")


def test_all_problems_in_one_message(tmp_path, capsys, seed_sd):
    sd = dict(seed_sd)
    del sd["front_bn.running_var"]
    sd["surprise"] = torch.zeros(1)
    sd["fc.bias"] = torch.zeros(7)
    torch.save({"model_state_dict": sd}, tmp_path / "m.pt")
    _fails(capsys, [tmp_path / "m.pt", tmp_path / "out", "--preset", "caa_rawnet2"],
           "missing 1: front_bn.running_var", "unexpected 1: surprise", "wrong shape 1: fc.bias",
           out=tmp_path / "out")


def test_unknown_layout(tmp_path, capsys):
    torch.save({"encoder.layer0.weight": torch.zeros(4, 4)}, tmp_path / "m.pt")
    _fails(capsys, [tmp_path / "m.pt", tmp_path / "out"], "unknown layout", out=tmp_path / "out")


def test_unknown_preset(tmp_path, capsys, seed_sd):
    torch.save(seed_sd, tmp_path / "m.pt")
    _fails(capsys, [tmp_path / "m.pt", tmp_path / "out", "--preset", "nope"], "unknown preset",
           out=tmp_path / "out")


@pytest.mark.parametrize("kind", ["truncated", "garbage", "garbage_text", "empty", "legacy_truncated"])
def test_corrupt_files(tmp_path, capsys, kind):
    src = tmp_path / "m.pt"
    sd = {"a": torch.arange(1000, dtype=torch.float32)}
    if kind == "legacy_truncated":
        torch.save(sd, src, _use_new_zipfile_serialization=False)
    else:
        torch.save(sd, src)
    data = src.read_bytes()
    src.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"not a checkpoint at all",
                     "garbage_text": b"garbage\n",  # an invalid pickle opcode, not code
                     "empty": b"", "legacy_truncated": data[: len(data) // 2]}[kind])
    err = _fails(capsys, [src, tmp_path / "out"], str(src), out=tmp_path / "out")
    assert "corrupt" in err or "empty" in err
    assert "unsafe" not in err, err


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_with_code_is_refused_not_run(tmp_path, capsys):
    marker = tmp_path / "PWNED"
    src = tmp_path / "evil.pt"
    torch.save({"model_state_dict": {"fc.weight": torch.zeros(2)}, "hook": _Evil(marker)}, src)
    err = _fails(capsys, [src, tmp_path / "out"], "unsafe pickle", "refusing to load",
                 "torch.save(model.state_dict())", out=tmp_path / "out")
    assert "system" in err
    assert not marker.exists()


def test_pickled_module_is_refused(tmp_path, capsys):
    src = tmp_path / "module.pt"
    torch.save(torch.nn.Linear(2, 2), src)
    _fails(capsys, [src, tmp_path / "out"], "unsafe pickle", out=tmp_path / "out")


def test_missing_file(tmp_path, capsys):
    _fails(capsys, [tmp_path / "nope.pt", tmp_path / "out"], "no such file", out=tmp_path / "out")


def test_not_a_state_dict(tmp_path, capsys):
    torch.save(torch.zeros(3), tmp_path / "t.pt")
    _fails(capsys, [tmp_path / "t.pt", tmp_path / "out"], "not a state dict", out=tmp_path / "out")


@pytest.mark.slow
def test_refuses_non_empty_out_dir_unless_force(tmp_path, capsys):
    cfg = TINY_SEED
    src = tmp_path / "m.pt"
    torch.save(_reference(cfg).state_dict(), src)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    _fails(capsys, [src, out, "--preset", "caa_rawnet2", *_sets(TINY_SEED)], "not empty", "--force")
    assert (out / "keep.txt").read_text() == "precious"
    # --force replaces a model directory only: not a folder of other files, nor the source's own folder.
    _fails(capsys, [src, out, "--preset", "caa_rawnet2", *_sets(TINY_SEED), "--force"], "not a model directory")
    _fails(capsys, [src, tmp_path, "--preset", "caa_rawnet2", *_sets(TINY_SEED), "--force"], "not a model directory")
    assert (out / "keep.txt").read_text() == "precious" and src.is_file()
    (out / "keep.txt").unlink()
    assert main([str(src), str(out), "--preset", "caa_rawnet2", *_sets(TINY_SEED)]) == 0  # empty: no --force needed
    assert main([str(src), str(out), "--preset", "caa_rawnet2", *_sets(TINY_SEED), "--force"]) == 0  # a model: replaced
    assert (out / "config.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt", "out"]


@pytest.mark.slow
def test_verify_failure_writes_nothing(tmp_path, capsys, monkeypatch):
    import convert.tables as tables

    cfg = TINY_SEED
    src = tmp_path / "m.pt"
    torch.save(_reference(cfg).state_dict(), src)
    real = tables.torch_to_flax

    def broken(sd, cfg, **kw):
        v = real(sd, cfg, **kw)
        v["params"]["classifier"]["bias"] = np.asarray(v["params"]["classifier"]["bias"]) + 0.5
        return v

    monkeypatch.setattr(tables, "torch_to_flax", broken)
    out = tmp_path / "out"
    rc = main([str(src), str(out), "--preset", "caa_rawnet2", *_sets(TINY_SEED), "--verify",
               "--verify-samples", "2500"])
    cap = capsys.readouterr()
    assert rc == 3
    assert "FAIL" in cap.out and "logits" in cap.out
    assert "verification failed" in cap.err and "\n" not in cap.err.strip()
    assert not out.exists()


def test_bad_set_override(tmp_path, capsys, seed_sd):
    torch.save(seed_sd, tmp_path / "m.pt")
    _fails(capsys, [tmp_path / "m.pt", tmp_path / "out", "--set", "fms_mode=sideways"],
           "fms_mode", out=tmp_path / "out")


# ----------------------------------------------------------------------------- subprocess


def _run(*args):
    return subprocess.run([sys.executable, "-m", "convert", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def test_cli_help_teaches():
    r = _run("--help")
    assert r.returncode == 0
    for needle in ("weights_only", "model_state_dict", "--check-bn-stats", "load_pretrained",
                   "examples:", "exit status"):
        assert needle in r.stdout, needle


@pytest.mark.slow
def test_cli_subprocess_failure_is_one_line(tmp_path):
    src = tmp_path / "evil.pt"
    marker = tmp_path / "PWNED"
    torch.save({"x": _Evil(marker)}, src)
    r = _run(src, tmp_path / "out")
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: "), r.stderr
    assert "unsafe pickle" in r.stderr and "Traceback" not in r.stderr
    assert not marker.exists() and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_cli_subprocess_success(tmp_path):
    cfg = TINY_OFFICIAL
    src = tmp_path / "m.pth"
    torch.save(_reference(cfg).state_dict(), src)
    r = _run(src, tmp_path / "out", "--preset", "tak2021", *_sets(TINY_OFFICIAL))
    assert r.returncode == 0, r.stderr
    assert f"wrote {tmp_path / 'out'}" in r.stdout
    assert (tmp_path / "out" / "config.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize("weights", [None, (2.0, 1.0)])
def test_seed_class_weights_follow_the_checkpoint(tmp_path, weights):
    from rawnet2_jax.checkpoint import load_config, restore_variables

    cfg = TINY_SEED
    sd = _reference(cfg).state_dict()
    if weights is None:
        del sd["class_weights"]
    else:
        sd["class_weights"] = torch.tensor(weights)
    torch.save(sd, tmp_path / "m.pt")
    out = tmp_path / "out"
    assert main([str(tmp_path / "m.pt"), str(out), "--preset", "caa_rawnet2", *_sets(TINY_SEED)]) == 0
    assert load_config(out).stored_class_weights == weights
    buffers = restore_variables(out)["buffers"]
    if weights is None:
        assert "class_weights" not in buffers
    else:
        np.testing.assert_array_equal(buffers["class_weights"], np.asarray(weights, np.float32))


@pytest.mark.slow
def test_seed_sinc_tensor_doubts_are_warned(tmp_path, capsys):
    cfg = TINY_SEED
    sd = _reference(cfg).state_dict()
    k = cfg.sinc_kernel_size
    sd["sinc.n_axis"] = torch.tensor(np.arange(k // 2)[None] * np.pi / cfg.sample_rate,
                                     dtype=torch.float32)
    torch.save(sd, tmp_path / "m.pt")
    out = tmp_path / "out"
    assert main([str(tmp_path / "m.pt"), str(out), "--preset", "caa_rawnet2", *_sets(TINY_SEED)]) == 0
    assert "warning: sinc.n_axis" in capsys.readouterr().out
    from rawnet2_jax.checkpoint import load_metadata

    assert any("sinc.n_axis" in n for n in load_metadata(out)["notes"])
