"""Training state: device arrays (a pytree) and, apart from it, host-side bookkeeping (JSON).

``TrainState`` is a ``flax.struct`` dataclass of arrays only (params, batch_stats, buffers,
opt_state, rng, step, epoch, plus the static optimizer ``tx``): exactly what goes through
``jit`` (donated) and into the orbax checkpoint. ``HostState`` (plateau scheduler, early
stopping / model selection, data position, partial epoch sums) is plain Python owned by
the training loop and stored beside the arrays as JSON, so floats such as the plateau's
``best`` keep full double precision and changing it never touches a compiled step.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from train.configs import TrainConfig
from train.optim import EarlyStopState, PlateauState, make_optimizer, plateau_init


@dataclasses.dataclass(frozen=True)
class HostState:
    """Host-side state saved beside the arrays (JSON)."""

    plateau: PlateauState | None = None
    early_stop: EarlyStopState = dataclasses.field(default_factory=EarlyStopState)
    # Opaque, JSON-serialisable position of the training data iterator (the pipeline's
    # own resumable state) and the number of batches already consumed in this epoch.
    data_position: Any = None
    batches_in_epoch: int = 0
    epoch_done: bool = False  # True in a checkpoint written after the epoch's dev eval
    stopped_reason: str | None = None
    # Sums of the per-step training metrics over the batches of this epoch done so far
    # (all of them, also those before a resume), so epoch means stay exact across resumes.
    epoch_sums: dict[str, float] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "plateau": None if self.plateau is None else self.plateau.to_json(),
            "early_stop": self.early_stop.to_json(),
            "data_position": self.data_position,
            "batches_in_epoch": self.batches_in_epoch,
            "epoch_done": self.epoch_done,
            "stopped_reason": self.stopped_reason,
            "epoch_sums": dict(self.epoch_sums),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "HostState":
        return cls(
            plateau=None if d.get("plateau") is None else PlateauState.from_json(d["plateau"]),
            early_stop=EarlyStopState.from_json(d.get("early_stop") or {}),
            data_position=d.get("data_position"),
            batches_in_epoch=int(d.get("batches_in_epoch", 0)),
            epoch_done=bool(d.get("epoch_done", False)),
            stopped_reason=d.get("stopped_reason"),
            epoch_sums={k: float(v) for k, v in (d.get("epoch_sums") or {}).items()},
        )

    def replace(self, **kw: Any) -> "HostState":
        return dataclasses.replace(self, **kw)


@struct.dataclass
class TrainState:
    params: Any
    batch_stats: Any
    buffers: Any
    opt_state: Any
    rng: jax.Array  # base key; the step's key is fold_in(rng, step)
    step: jax.Array  # int32 scalar, global optimizer steps done
    epoch: jax.Array  # int32 scalar, epochs fully done (incl. their dev eval)
    tx: optax.GradientTransformation = struct.field(pytree_node=False, default=None)

    def arrays(self) -> dict[str, Any]:
        """The array part, as saved in the checkpoint."""
        return {
            "params": self.params,
            "batch_stats": self.batch_stats,
            "buffers": self.buffers,
            "opt_state": self.opt_state,
            "rng": self.rng,
            "step": self.step,
            "epoch": self.epoch,
        }

    def with_arrays(self, arrays: dict[str, Any]) -> "TrainState":
        return self.replace(**arrays)

    def variables(self) -> dict[str, Any]:
        """Model variables for ``model.apply`` (only the non-empty collections)."""
        v = {"params": self.params}
        if self.batch_stats:
            v["batch_stats"] = self.batch_stats
        if self.buffers:
            v["buffers"] = self.buffers
        return v


def create_train_state(
    variables: dict[str, Any], cfg: TrainConfig, rng: jax.Array | None = None
) -> TrainState:
    """A fresh state from initialised (or converted) model variables (see :func:`initial_host_state`)."""
    tx = make_optimizer(cfg)
    params = variables["params"]
    if rng is None:
        rng = jax.random.key(cfg.seed + 1)
    rng = jax.random.key_data(rng) if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key) else rng
    return TrainState(
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        buffers=variables.get("buffers", {}),
        opt_state=jax.jit(tx.init)(params),  # one program, not an eager op (and its compile) per leaf
        rng=rng,
        step=jnp.zeros((), jnp.int32),
        epoch=jnp.zeros((), jnp.int32),
        tx=tx,
    )


def initial_host_state(cfg: TrainConfig) -> HostState:
    """The bookkeeping of a run that has not taken a step yet."""
    return HostState(plateau=None if cfg.plateau is None else plateau_init(cfg.learning_rate, cfg.plateau))


def init_variables(model: Any, num_samples: int, seed: int, batch: int = 2) -> dict[str, Any]:
    """``model.init`` on a dummy batch; returns a plain dict of collections."""
    x = jnp.zeros((batch, num_samples), jnp.float32)
    variables = model.init(jax.random.key(seed), x, train=False)
    return jax.tree.map(lambda a: a, dict(variables))
