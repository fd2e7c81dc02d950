"""Compare wanted and found ``{key: shape}`` maps; report every difference in one message.

Shared by the converter (torch state dicts), ``convert.tables`` and model directories
(:func:`rawnet2_jax.checkpoint.check_variables`). Pure Python: no jax, no torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from rawnet2_jax.errors import CheckpointError

__all__ = ["raise_problems", "shape_problems", "summarize"]


def summarize(items: Iterable[str], limit: int) -> str:
    """``a, b, c`` -- or the first ``limit`` items and ``... (N more)``."""
    items = list(items)
    if len(items) <= limit:
        return ", ".join(items)
    return ", ".join(items[:limit]) + f", ... ({len(items) - limit} more)"


def shape_problems(
    want: Mapping[str, tuple],
    got: Mapping[str, tuple],
    *,
    limit: int,
    misshapen_label: str = "wrong shape",
    expects: str = "expected",
    wanted_order: bool = False,
) -> list[str]:
    """``["missing N: ...", "unexpected N: ...", "<misshapen_label> N: key (got) (<expects> want)"]``,
    only the non-empty ones ([] when ``got`` fits ``want``).

    Unexpected keys are sorted. Missing and misshapen keys are sorted too, or with
    ``wanted_order`` listed in the order of ``want``.
    """
    want = {k: tuple(v) for k, v in want.items()}
    got = {k: tuple(v) for k, v in got.items()}
    missing = [k for k in want if k not in got]
    unexpected = sorted(k for k in got if k not in want)
    misshapen = [f"{k} {got[k]} ({expects} {want[k]})" for k in want if k in got and got[k] != want[k]]
    if not wanted_order:
        missing, misshapen = sorted(missing), sorted(misshapen)
    problems = []
    if missing:
        problems.append(f"missing {len(missing)}: {summarize(missing, limit)}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)}: {summarize(unexpected, limit)}")
    if misshapen:
        problems.append(f"{misshapen_label} {len(misshapen)}: {summarize(misshapen, limit)}")
    return problems


def raise_problems(problems: list[str], prefix: str, suffix: str = "") -> None:
    """Raise one-line :class:`CheckpointError` ``prefix + "; ".join(problems) + suffix``
    when ``problems`` (from :func:`shape_problems`) is not empty."""
    if problems:
        raise CheckpointError(prefix + "; ".join(problems) + suffix)
