"""`python -m convert` under injected faults: half-precision and non-finite weights, write
failures (full disk, read-only), a conversion killed with -9, code in plain pickles."""

from __future__ import annotations

import errno
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from rawnet2_jax.checkpoint import restore_variables  # noqa: E402
from tests.conftest import refuse_as_read_only  # noqa: E402
from tests.test_convert_cli import TINY_SEED, _Evil, _fails, _reference, _sets  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CFG = TINY_SEED
ARGS = ["--preset", "caa_rawnet2", *_sets(TINY_SEED)]


@pytest.fixture(scope="module")
def tiny_sd():
    return {k: v.clone() for k, v in _reference(CFG).state_dict().items()}


def _main(argv):
    from convert.__main__ import main

    return main([str(a) for a in argv])


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_state_dicts_convert_exactly(tmp_path, capsys, tiny_sd, dtype):
    half = getattr(torch, dtype)
    sd = {k: v.to(half) if v.is_floating_point() else v for k, v in tiny_sd.items()}
    src = tmp_path / "half.pt"
    torch.save(sd, src)
    assert _main([src, tmp_path / "out", *ARGS]) == 0, capsys.readouterr().err
    assert "widened" in capsys.readouterr().out
    from convert.tables import torch_to_flax

    want = torch_to_flax({k: v.float().numpy() for k, v in sd.items()}, CFG, check=False)
    got = restore_variables(tmp_path / "out")
    flat_want = {"/".join(map(str, p)): a for p, a in _leaves(want)}
    flat_got = {"/".join(map(str, p)): a for p, a in _leaves(got)}
    assert flat_want.keys() == flat_got.keys()
    for k, a in flat_want.items():
        assert flat_got[k].dtype == np.asarray(a).dtype, k
        diff = float(np.max(np.abs(flat_got[k].astype(np.float64) - np.asarray(a, np.float64)), initial=0))
        assert diff == 0.0, f"{k}: max abs diff {diff:.3e} after {dtype} -> float32"


def _leaves(tree, prefix=()):
    for k, v in tree.items():
        if isinstance(v, dict):
            yield from _leaves(v, prefix + (k,))
        else:
            yield prefix + (k,), np.asarray(v)


@pytest.mark.slow
def test_integer_weights_are_refused(tmp_path, capsys, tiny_sd):
    sd = dict(tiny_sd)
    name = next(k for k, v in sd.items() if v.dtype == torch.float32 and v.ndim == 2)
    sd[name] = sd[name].to(torch.int64)
    torch.save(sd, tmp_path / "int.pt")
    _fails(capsys, [tmp_path / "int.pt", tmp_path / "out", *ARGS], f"1 tensor(s) hold integers where RawNet2 has "
           f"float weights: {name}", "(int64)", out=tmp_path / "out")


def test_nonfinite_weights_are_refused_unless_allowed(tmp_path, capsys, tiny_sd):
    sd = dict(tiny_sd)
    sd["fc.weight"] = sd["fc.weight"].clone()
    sd["fc.weight"][0, :3] = float("nan")
    sd["blocks.1.conv2.weight"] = sd["blocks.1.conv2.weight"].clone()
    sd["blocks.1.conv2.weight"].view(-1)[5] = float("inf")
    src = tmp_path / "nan.pt"
    torch.save(sd, src)
    err = _fails(capsys, [src, tmp_path / "out", *ARGS], "2 tensor(s) hold NaN/Inf", "fc.weight (3 NaN/Inf",
                 "blocks.1.conv2.weight (1 NaN/Inf", "--allow-nonfinite", out=tmp_path / "out")
    assert "Traceback" not in err
    assert _main([src, tmp_path / "out", *ARGS, "--allow-nonfinite"]) == 0
    assert "warning: non-finite values kept" in capsys.readouterr().out
    assert np.isnan(restore_variables(tmp_path / "out")["params"]["fc"]["kernel"]).sum() == 3


def test_disk_full_while_writing_is_one_line(tmp_path, capsys, tiny_sd, monkeypatch):
    import orbax.checkpoint as ocp

    src = tmp_path / "m.pt"
    torch.save(tiny_sd, src)

    def full(self, path, *a, **k):
        Path(path).mkdir(parents=True)
        (Path(path) / "half_written").write_bytes(b"\0" * 4096)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(ocp.StandardCheckpointer, "save", full)
    _fails(capsys, [src, tmp_path / "out", *ARGS], "no space left on the device", out=tmp_path / "out")


def test_read_only_output_is_one_line(tmp_path, capsys, tiny_sd, monkeypatch):
    from rawnet2_jax import fsutil

    src = tmp_path / "m.pt"
    torch.save(tiny_sd, src)

    monkeypatch.setattr(fsutil.tempfile, "mkdtemp", refuse_as_read_only(tmp_path))
    _fails(capsys, [src, tmp_path / "out", *ARGS], "read-only file system", out=tmp_path / "out")


KILLED_MID_WRITE = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    import orbax.checkpoint as ocp

    def save_then_die(self, path, *a, **k):
        Path(path).mkdir(parents=True)
        (Path(path) / "half_written").write_bytes(b"\\0" * 4096)
        os.kill(os.getpid(), signal.SIGKILL)

    ocp.StandardCheckpointer.save = save_then_die
    from convert.__main__ import main
    sys.exit(main(sys.argv[1:]))
""")


@pytest.mark.slow  # two subprocesses importing jax and torch: ~40 s on a busy 2-core machine
def test_conversion_killed_minus_9_leaves_no_temp_dir_behind(tmp_path, tiny_sd):
    src = tmp_path / "m.pt"
    torch.save(tiny_sd, src)
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
    argv = [str(src), str(tmp_path / "out"), *ARGS]
    r = subprocess.run([sys.executable, "-c", KILLED_MID_WRITE, *argv], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == -9, r.stderr
    left = [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.tmp-")]
    assert len(left) == 1 and not (tmp_path / "out").exists(), sorted(p.name for p in tmp_path.iterdir())
    r = subprocess.run([sys.executable, "-m", "convert", *argv], env=env, capture_output=True, text=True,
                       timeout=300, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt", "out"]


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_code_in_a_plain_pickle_is_unsafe_not_corrupt(tmp_path, capsys, protocol):
    marker = tmp_path / "PWNED"
    src = tmp_path / "evil.pkl"
    src.write_bytes(pickle.dumps({"fc.weight": [0.0], "hook": _Evil(marker)}, protocol=protocol))
    err = _fails(capsys, [src, tmp_path / "out"], "unsafe pickle", "system", out=tmp_path / "out")
    assert "corrupt" not in err
    assert not marker.exists()


def test_truncated_plain_pickle_is_still_corrupt(tmp_path, capsys):
    src = tmp_path / "t.pkl"
    src.write_bytes(pickle.dumps({"a": list(range(1000))}, protocol=4)[:200])
    err = _fails(capsys, [src, tmp_path / "out"], out=tmp_path / "out")
    assert "unsafe" not in err


def test_a_numpy_or_audio_file_named_pt_is_called_what_it_is(tmp_path, capsys):
    import soundfile as sf

    src = tmp_path / "npy.pt"  # its magic byte 0x93 would read as a STACK_GLOBAL without names
    with open(src, "wb") as f:
        np.save(f, np.zeros(3))
    err = _fails(capsys, [src, tmp_path / "out"], "is a NumPy .npy file, not a PyTorch checkpoint", out=tmp_path / "out")
    assert "unsafe" not in err and "references" not in err
    wav = tmp_path / "clip.pt"
    sf.write(wav, np.zeros(1600), 16000, format="WAV")
    _fails(capsys, [wav, tmp_path / "out"], "is a WAV (RIFF) audio file, not a PyTorch checkpoint", out=tmp_path / "out")


def test_symlink_loop_source(tmp_path, capsys):
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    a.symlink_to(b)
    b.symlink_to(a)
    _fails(capsys, [a, tmp_path / "out"], "symbolic link loop", out=tmp_path / "out")
