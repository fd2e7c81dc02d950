"""rawnet2_jax/xla_flags.py: only flags the installed jaxlib knows reach XLA (it aborts on an
unknown one), for the test suite's cheap flags and the benchmark's compile probe alike."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from rawnet2_jax.xla_flags import FLAGS_UNTIL, flag_name, jaxlib_version, known_flags
from tests.conftest import FAST_XLA_FLAGS

BENCH = Path(__file__).resolve().parent.parent / "bench"
FLAGS = ("--xla_backend_optimization_level=0", "--xla_cpu_use_fusion_emitters=false")


def test_a_dropped_flag_is_kept_before_its_jaxlib_and_dropped_from_it():
    assert known_flags(FLAGS, (0, 10)) == (FLAGS, ())
    assert known_flags(FLAGS, (0, 11)) == (FLAGS[:1], FLAGS[1:])
    assert known_flags(FLAGS, (1, 0)) == (FLAGS[:1], FLAGS[1:])
    assert known_flags(reversed(FLAGS), (0, 12)) == (FLAGS[:1], FLAGS[1:])
    assert known_flags((), (0, 11)) == ((), ())


def test_the_installed_jaxlib_decides_and_the_suite_uses_it():
    import jaxlib.version

    assert jaxlib_version() == tuple(int(p) for p in jaxlib.version.__version__.split(".")[:2])
    kept, dropped = known_flags(FLAGS)
    assert kept == FAST_XLA_FLAGS
    assert all(jaxlib_version() >= FLAGS_UNTIL[flag_name(f)] for f in dropped)
    assert all(f in os.environ.get("XLA_FLAGS", "").split() for f in kept) or \
        os.environ.get("RAWNET2_TEST_XLA") == "production"


def test_the_compile_probe_drops_a_setting_the_jaxlib_does_not_know(capsys):
    sys.path.insert(0, str(BENCH))
    import bench_model

    pres: dict = {}
    names = list(bench_model.COMPILE_FLAGS)
    kept = bench_model._known_compile_flags(names, pres)
    gone = [n for n in names if known_flags(bench_model.COMPILE_FLAGS[n].split())[1]]
    assert kept == [n for n in names if n not in gone] and "default" in kept
    assert ("no_fusion_emitters" in gone) == (jaxlib_version() >= (0, 11))
    out = capsys.readouterr().out
    for n in gone:
        assert "does not know --xla_cpu_use_fusion_emitters=false" in pres["skipped"][f"compile probe {n}"]
        assert f"compile probe {n}: skipped" in out
    assert bool(pres) == bool(gone)
