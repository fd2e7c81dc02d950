"""The suite's own machinery (tests/conftest.py): the quick tier is chosen by markers in the test
files themselves (no list of names in conftest), every marker a test uses is registered, and the
fast / production XLA flags reach the processes they are meant for.

The tiers: a test is marked ``slow`` in its own file (``@pytest.mark.slow``, ``pytestmark`` for a
whole module, or ``pytest.param(..., marks=pytest.mark.slow)`` for some of its cases) when it takes
about 2.5 s or more in a loaded quick-tier run on the 2-core machine (most compile a model, train,
or start a subprocess), and so is a test whose module fixture compiles or trains for others (else
the next one pays). Kept quick on purpose, so the quick tier still compiles the model, a train step
and torch parity: test_parity_model's train-mode test of caa_rawnet2, test_residual's seed blocks,
test_pool, test_gru's cell tests, test_train_step's update test."""

import ast
import functools
import os
from pathlib import Path

import pytest

from tests.conftest import FAST_XLA_FLAGS, XLA_MODE_ENV

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
BUILTIN_MARKS = {"parametrize", "skip", "skipif", "xfail", "usefixtures", "filterwarnings"}


def _marks_used(tree: ast.AST) -> set[str]:
    """Every NAME of a ``pytest.mark.NAME`` in a parsed file."""
    return {node.attr for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
            and node.value.attr == "mark" and isinstance(node.value.value, ast.Name)
            and node.value.value.id == "pytest"}


@functools.cache
def _marks_by_file() -> dict[str, set[str]]:
    """``{test file name: the markers it uses}``, each file parsed once."""
    return {p.name: _marks_used(ast.parse(p.read_text())) for p in sorted(TESTS.glob("test_*.py"))}


def test_conftest_holds_no_list_of_test_names():
    tree = ast.parse((TESTS / "conftest.py").read_text())
    names = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
             and ".py::" in n.value]
    assert not names, f"conftest.py names tests ({names[:3]}): mark them in their own files instead"


def test_every_marker_used_is_registered(request):
    registered = {line.split(":", 1)[0].split("(", 1)[0].strip() for line in request.config.getini("markers")}
    assert {"slow", "parity", "production_xla"} <= registered, registered
    for name, marks in _marks_by_file().items():
        unknown = marks - registered - BUILTIN_MARKS
        assert not unknown, f"{name} uses unregistered markers {sorted(unknown)} (a typo deselects nothing)"


def test_slow_tests_are_marked_in_their_files():
    marked = [name for name, marks in _marks_by_file().items() if "slow" in marks]
    assert len(marked) >= 20, marked  # the tiers exist: the slow tests are spread over many files


def test_the_quick_tier_collects_no_slow_test(request):
    if "not slow" not in (request.config.option.markexpr or ""):
        pytest.skip("not a quick-tier run (-m 'not slow')")
    slow = [i.nodeid for i in request.session.items if i.get_closest_marker("slow")]
    assert not slow, slow


def test_fast_flags_in_this_process():
    flags = os.environ.get("XLA_FLAGS", "").split()
    if os.environ[XLA_MODE_ENV] == "fast":
        assert all(f in flags for f in FAST_XLA_FLAGS), flags
    else:
        assert not any(f in flags for f in FAST_XLA_FLAGS), flags


@pytest.mark.slow
@pytest.mark.production_xla
def test_production_xla_runs_with_production_flags():
    assert os.environ[XLA_MODE_ENV] == "production"
    assert not any(f in os.environ.get("XLA_FLAGS", "").split() for f in FAST_XLA_FLAGS)


def test_long_files_are_collected_first(request):
    """conftest puts the files marked ``long_file`` first; scripts/test.sh keeps that order."""
    order = [i.get_closest_marker("long_file") is not None for i in request.session.items]
    assert order == sorted(order, reverse=True), "a long_file test is collected after a short one"
    assert "--no-loadscope-reorder" in (ROOT / "scripts" / "test.sh").read_text()
