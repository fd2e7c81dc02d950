"""Shared test helpers (importable as ``from tests.conftest import ...``).

* ``import_torch()`` / fixture ``torch``: torch or a clean skip.
* ``speech_like(num_samples, batch=None, seed=0)``: deterministic speech (``rawnet2_jax.data.synth``).
* ``assert_close(a, b, rtol, atol, name)``: allclose with max abs/rel differences in the message.
* ``refuse_as_read_only(path)`` / fixture ``unwritable_dir``: a write the file system refuses
  (simulated / for real, as root too).
* One persistent JAX compilation cache (set here, before anything compiles; see
  ``_test_compilation_cache``) shared by the test process and every subprocess it starts
  (``python -m train``, kill -9 runs, CLIs).
* XLA's cheap compile flags (``FAST_XLA_FLAGS``, see ``_test_xla_flags``) for the test process
  and its subprocesses; a test marked ``production_xla`` runs in a subprocess compiled with
  XLA's production flags instead (``RAWNET2_TEST_XLA=production`` gives the whole run those).
* Tiers: ``-m "not slow"`` (the quick tier) leaves out the tests marked ``slow`` in their own
  files (``@pytest.mark.slow`` or a module's ``pytestmark``); no list of names lives here.
"""

from __future__ import annotations

import atexit
import errno
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import NamedTuple

from rawnet2_jax.xla_flags import known_flags  # no JAX backend starts here


def _test_compilation_cache() -> None:
    """One persistent JAX compilation cache for this process and every process it starts.

    Many tests build fresh jitted closures (``make_train_step``, CLIs in subprocesses, kill -9
    runs) for the same tiny models: JAX's in-memory caches miss and XLA would compile identical
    programs again. A persistent-cache hit loads the executable compiled before, so results are
    bit-identical to compiling again. A cache the caller set up is kept."""
    if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        cache = tempfile.mkdtemp(prefix="rawnet2-jax-test-cache-")
        atexit.register(shutil.rmtree, cache, ignore_errors=True)
        os.environ["JAX_COMPILATION_CACHE_DIR"] = cache
    # Anything that takes a tenth of a second to compile is worth a file (JAX's default: 1 s).
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")
    import jax  # config read from the environment above; no backend starts here

    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():  # something compiled first: correct, only slower
        warnings.warn("tests/conftest.py: a JAX backend started before the compilation cache was set")
    jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
    jax.config.update("jax_persistent_cache_min_compile_time_secs",
                      float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))


# Compiling, not running, is most of the suite's time (a tiny train step: 34 s with XLA's
# production flags on the busy 2-core machine, 5 s with these). Without LLVM's optimisation and
# the fusion emitters the programs compute the same functions; the parity tests pass with their
# tolerances either way. Tests whose bars were set on production numerics or that mostly run
# (not compile) carry the ``production_xla`` marker.
_CHEAP_XLA_FLAGS = ("--xla_backend_optimization_level=0", "--xla_cpu_use_fusion_emitters=false")
# XLA aborts the process on a flag it does not know, and jaxlib 0.11's XLA dropped the fusion
# emitters flag: only the flags of the installed jaxlib are used (rawnet2_jax/xla_flags.py).
FAST_XLA_FLAGS, _DROPPED_XLA_FLAGS = known_flags(_CHEAP_XLA_FLAGS)
XLA_MODE_ENV = "RAWNET2_TEST_XLA"  # "fast" (the default) or "production"


def _test_xla_flags() -> None:
    """Put ``FAST_XLA_FLAGS`` into ``XLA_FLAGS`` for this process and every process it starts, or
    take them out again where ``RAWNET2_TEST_XLA=production`` (flags the caller set are kept; a
    flag the caller set to another value wins)."""
    mode = os.environ.setdefault(XLA_MODE_ENV, "fast")
    if mode not in ("fast", "production"):
        raise ValueError(f"{XLA_MODE_ENV}={mode!r}: expected 'fast' or 'production'")
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if f not in _CHEAP_XLA_FLAGS]
    if mode == "fast":
        have = {f.split("=", 1)[0] for f in flags}
        flags += [f for f in FAST_XLA_FLAGS if f.split("=", 1)[0] not in have]
    if flags:
        os.environ["XLA_FLAGS"] = " ".join(flags)
    else:
        os.environ.pop("XLA_FLAGS", None)


_test_xla_flags()
_test_compilation_cache()

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from rawnet2_jax.data.synth import speech_like  # noqa: E402, F401  (re-exported for the tests)

__all__ = ["assert_close", "import_torch", "max_diffs", "randomise_torch_model", "refuse_as_read_only",
           "speech_like"]

# A suite started in the background by a non-interactive shell (`cmd &`, nohup) inherits SIGINT
# ignored, and so would every process it starts: the Ctrl-C tests need SIGINT as a terminal
# delivers it. A handled signal is reset to its default in child processes.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def import_torch():
    """torch, or skip the calling test with the reason."""
    return pytest.importorskip("torch", reason="PyTorch not installed (pip install '.[torch]')")


@pytest.fixture
def torch():
    return import_torch()


def refuse_as_read_only(path):
    """A stand-in for a function that writes, failing as on a read-only file system (EROFS,
    naming ``path``): CI runs as root, where chmod would not stop the write."""

    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    return refuse


class Unwritable(NamedTuple):
    path: Path  # a directory path nothing can be written below
    reason: str  # what the one-line error must say


@pytest.fixture(params=["file_in_path", "no_permission"])
def unwritable_dir(request, tmp_path):
    """A directory path where writes fail for real, and the words the one-line error must say:
    ``tmp_path/file/ro``, below a regular file (ENOTDIR, which root gets too: CI runs as root),
    and ``tmp_path/ro`` without write permission (EACCES; skipped as root, who writes anyway)."""
    if request.param == "file_in_path":
        (tmp_path / "file").write_text("a regular file, not a folder\n")
        yield Unwritable(tmp_path / "file" / "ro", "a part of the path is a file, not a folder")
        return
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only directories (the file_in_path case runs)")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    yield Unwritable(ro, "permission denied")
    ro.chmod(0o755)


def assert_close(a, b, rtol: float = 1e-5, atol: float = 1e-6, name: str = "value") -> None:
    """np.testing-style closeness check whose message names the tensor and the worst errors."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, f"{name}: shape {a.shape} != {b.shape}"
    diff = np.abs(a - b)
    if diff.size == 0:
        return
    tol = atol + rtol * np.abs(b)
    bad = diff > tol
    if np.any(bad) or not np.all(np.isfinite(a) == np.isfinite(b)):
        rel = diff / np.maximum(np.abs(b), 1e-30)
        worst = np.unravel_index(np.argmax(diff - tol), diff.shape)
        raise AssertionError(
            f"{name}: {int(bad.sum())}/{diff.size} elements off (rtol={rtol}, atol={atol}); "
            f"max abs diff {diff.max():.3e}, max rel diff {rel.max():.3e}, "
            f"worst at {tuple(int(i) for i in worst)}: {a[worst]:.8g} vs {b[worst]:.8g}; "
            f"scale max|b| {np.abs(b).max():.3e}"
        )


def randomise_torch_model(model, x, seed: int = 0, stat_jitter: float = 0.1) -> None:
    """Give a torch RawNet2 non-trivial, *realistic* weights and BN running statistics.

    BN affine params are drawn around (1, 0). Running statistics are set, in forward order, from
    the eval-mode input each BatchNorm actually receives for ``x`` (so every layer sees inputs
    of a sane scale and nothing saturates), then jittered (mean shifted by ``stat_jitter`` std,
    var scaled by U(0.7, 1.4)) so that eval differs from train mode. ``num_batches_tracked`` gets
    a random count. Parameters keep torch's random default init.
    """
    torch = import_torch()
    g = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d)]

    def calibrate(mod, inputs):
        v = inputs[0].detach()
        dims = [0] + list(range(2, v.ndim))
        mean, var = v.mean(dims), v.var(dims, unbiased=True)
        var = torch.clamp(var, min=0.05 * float(var.mean()) + 1e-8)  # no near-constant channel
        with torch.no_grad():
            mod.running_mean.copy_(mean + stat_jitter * var.sqrt() * torch.randn(mean.shape, generator=g))
            mod.running_var.copy_(var * torch.empty(var.shape).uniform_(0.7, 1.4, generator=g))
            mod.num_batches_tracked.fill_(int(torch.randint(1, 100000, (1,), generator=g)))

    with torch.no_grad():
        for mod in bns:
            mod.weight.uniform_(0.5, 1.5, generator=g)
            mod.bias.normal_(0.0, 0.2, generator=g)
    handles = [m.register_forward_pre_hook(calibrate) for m in bns]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.as_tensor(x))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)


def max_diffs(a, b) -> tuple[float, float]:
    """(max abs diff, max abs diff / max |b|) for reporting."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    d = float(np.abs(a - b).max()) if a.size else 0.0
    return d, d / max(float(np.abs(b).max()) if b.size else 0.0, 1e-30)


def pytest_report_header(config):
    if _DROPPED_XLA_FLAGS:
        return f"XLA flags this jaxlib does not know, left out of the cheap test flags: {' '.join(_DROPPED_XLA_FLAGS)}"
    return None


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "production_xla: compiled with XLA's production flags (in a subprocess when the run uses the fast test flags)",
    )


def pytest_collection_modifyitems(config, items):
    """Files marked ``long_file`` first (a stable sort: nothing else moves). With two workers
    taking whole files in collection order (scripts/test.sh: ``--dist loadfile
    --no-loadscope-reorder``), the longest files start at once and the short ones fill in beside
    them; xdist's own order (most tests first) left the one-test bf16 file, the longest, to the
    end of the run, alone on one core."""
    items.sort(key=lambda item: item.get_closest_marker("long_file") is None)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    """A ``production_xla`` test in a run with the fast flags runs again in a fresh pytest
    process with XLA's production flags (XLA reads its flags once per process), and its outcome
    is this test's. The fixtures it asked for were set up here too, unused: keep them cheap."""
    if pyfuncitem.get_closest_marker("production_xla") is None or os.environ[XLA_MODE_ENV] == "production":
        return None
    env = {**os.environ, XLA_MODE_ENV: "production"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "--no-header", "-p", "no:cacheprovider", pyfuncitem.nodeid]
    proc = subprocess.run(cmd, cwd=pyfuncitem.config.rootpath, env=env, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    print(out)  # shown with the test's report when it fails
    last = out.strip().splitlines()[-1] if out.strip() else ""
    if proc.returncode == 0 and " passed" in last:
        return True
    if proc.returncode == 0 and " skipped" in last:
        reasons = [line for line in out.splitlines() if line.startswith("SKIPPED")]
        pytest.skip(reasons[0] if reasons else last)
    pytest.fail(f"with production XLA flags (RAWNET2_TEST_XLA=production): exit {proc.returncode}, {last}\n"
                f"{out[-4000:]}", pytrace=False)
