"""rawnet2_jax.treecheck: every difference between two {key: shape} maps, in one line."""

from __future__ import annotations

import pytest

from rawnet2_jax.errors import CheckpointError
from rawnet2_jax.treecheck import raise_problems, shape_problems, summarize


def test_summarize_cuts_long_lists_and_counts_the_rest():
    assert summarize(["a", "b"], 3) == "a, b"
    assert summarize(["a", "b", "c", "d", "e"], 2) == "a, b, ... (3 more)"


def test_every_kind_of_difference_is_reported_once():
    want = {"z": (2,), "a": (1, 2), "m": (3,)}
    got = {"a": (2, 1), "m": (3,), "x": (1,), "b": (1,)}
    assert shape_problems(want, got, limit=10) == [
        "missing 1: z", "unexpected 2: b, x", "wrong shape 1: a (2, 1) (expected (1, 2))"]
    assert shape_problems(want, dict(want), limit=10) == []


def test_wanted_order_and_labels():
    want = {"z": (1,), "a": (1,), "k": (2,)}
    probs = shape_problems(want, {"k": (3,)}, limit=5, wanted_order=True, misshapen_label="bad", expects="layout has")
    assert probs == ["missing 2: z, a", "bad 1: k (3,) (layout has (2,))"]
    assert shape_problems(want, {}, limit=5)[0] == "missing 3: a, k, z"  # sorted without wanted_order


def test_raise_problems_is_one_line_and_silent_without_problems():
    raise_problems([], "never: ")
    with pytest.raises(CheckpointError) as e:
        raise_problems(["missing 1: z", "unexpected 1: x"], "model dir m: ", " (re-convert it)")
    assert str(e.value) == "model dir m: missing 1: z; unexpected 1: x (re-convert it)"
    assert "\n" not in str(e.value)
