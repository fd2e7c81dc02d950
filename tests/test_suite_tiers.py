"""The suite's own machinery (tests/conftest.py): the list of slow tests names real tests, and
the fast / production XLA flags reach the processes they are meant for."""

import ast
import os
from pathlib import Path

import pytest

from tests.conftest import FAST_XLA_FLAGS, SLOW_TESTS, XLA_MODE_ENV

ROOT = Path(__file__).resolve().parents[1]


def test_every_slow_test_name_is_a_test():
    for name in sorted(SLOW_TESTS):
        path, func = name.split("::")
        tree = ast.parse((ROOT / path).read_text())
        funcs = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        assert func in funcs, f"conftest.SLOW_TESTS names {name}, which does not exist"


def test_listed_tests_are_marked_slow(request):
    items = [i for i in request.session.items if i.nodeid.split("[")[0] in SLOW_TESTS]
    assert all(i.get_closest_marker("slow") for i in items)


def test_fast_flags_in_this_process():
    flags = os.environ.get("XLA_FLAGS", "").split()
    if os.environ[XLA_MODE_ENV] == "fast":
        assert all(f in flags for f in FAST_XLA_FLAGS), flags
    else:
        assert not any(f in flags for f in FAST_XLA_FLAGS), flags


@pytest.mark.production_xla
def test_production_xla_runs_with_production_flags():
    assert os.environ[XLA_MODE_ENV] == "production"
    assert not any(f in os.environ.get("XLA_FLAGS", "").split() for f in FAST_XLA_FLAGS)
