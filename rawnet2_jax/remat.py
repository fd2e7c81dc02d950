"""Rematerialisation that XLA's CPU backend keeps (``ModelConfig.remat = "blocks"``).

``jax.checkpoint`` (``flax.linen.remat``) marks its recomputation with an optimisation
barrier, but XLA's CPU pipeline expands the barrier early, and common-subexpression
elimination then merges the recomputed forward pass back into the original one: every
intermediate is kept and nothing is saved (bench/README.md). Here, instead, a custom VJP:

* ``recomputed(f)(params, x)``: the forward pass keeps only ``(params, x)``; the backward pass
  recomputes ``f`` from ``x + 0 * g[0]`` -- arithmetically void (exactly ``x`` for a finite
  incoming gradient ``g``), but a value no forward op has, so XLA can neither hoist the
  recomputation into the forward pass nor merge the two -- and differentiates it with
  ``jax.vjp``. The input gradient it returns is tied the same way to the parameter gradients,
  so XLA cannot postpone their reductions (holding full-size cotangents) until the optimizer
  update, which its scheduler otherwise does.
* ``remat_call(module, x, *static)``: the same for one call of a bound Flax module.

The same ops run on the same values, so gradients equal plain autodiff's up to float32
rounding of a different fusion (tests/test_remat.py). Only a non-finite ``g[0]`` changes
anything: it makes the whole recomputation non-finite, where a gradient is broken anyway.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array


def _void(tree: Any) -> Array:
    """A scalar zero that depends on every leaf of ``tree``."""
    leaves = [leaf.reshape(-1)[0].astype(jnp.float32) for leaf in jax.tree_util.tree_leaves(tree)]
    return jnp.zeros((), jnp.float32) * sum(leaves)


def _after(x: Any, tree: Any) -> Any:
    """``x`` (an array or a pytree of arrays), made to depend on ``tree`` (arithmetically void
    for finite values)."""
    zero = _void(tree)
    return jax.tree_util.tree_map(lambda a: a + zero.astype(a.dtype), x)


def recomputed(f: Callable[[Any, Array], Any]) -> Callable[[Any, Array], Any]:
    """``f(params, x)``, a pure function, with a backward pass that keeps only ``(params, x)``
    and recomputes ``f`` (the same ops: the same gradients as plain autodiff)."""

    @jax.custom_vjp
    def g(params, x):
        return f(params, x)

    def fwd(params, x):
        return f(params, x), (params, x)

    def bwd(res, ct):
        params, x = res
        _, vjp = jax.vjp(f, params, _after(x, ct))
        p_t, x_t = vjp(ct)
        return p_t, _after(x_t, p_t)

    g.defvjp(fwd, bwd)
    return g


def remat_call(module: nn.Module, x: Any, *static: Any) -> Any:
    """``module(x, *static)`` for a bound module (usually the caller, ``self``), recomputed in
    the backward pass from its ``params`` and ``x`` (an array or a tuple of arrays).

    The module must not update any variable in this call (ResidualBlock updates its BatchNorm
    statistics outside it); its other collections are read as they are now. ``static`` are
    Python values (flags).
    """
    variables = module.variables
    others = {k: v for k, v in variables.items() if k != "params"}
    pure = module.clone(parent=None)  # the same definition, applied functionally

    def apply(params, xx):
        return pure.apply({"params": params, **others}, xx, *static)

    return recomputed(apply)(variables["params"], x)
