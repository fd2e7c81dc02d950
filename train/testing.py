"""Tiny configurations and in-memory data for fast training tests (2 CPU cores)."""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

import numpy as np

from rawnet2_jax.config import ModelConfig, get_config
from train.configs import CAA_PLATEAU, DEMO, PlateauConfig, TrainConfig


def tiny_model(base: str = "seed", num_samples: int = 810, **overrides) -> ModelConfig:
    """A RawNet2 with a handful of channels and two residual blocks (runs in milliseconds).

    ``base``: a layout (``"seed"``: caa_rawnet2, ``"official"``: tak2021) or any preset name,
    whose every choice but the sizes it keeps; ``overrides`` replace further fields.
    """
    preset = {"seed": "caa_rawnet2", "official": "tak2021"}.get(base, base)
    cfg = get_config(preset)
    sizes = dict(
        name=f"tiny_{base}",
        num_samples=num_samples,
        sinc_filters=4,
        sinc_kernel_size=17,
        first_block_channels=4,
        second_block_channels=8,
        num_first_blocks=1,
        num_second_blocks=1,
        gru_hidden=8,
        gru_layers=1 if cfg.layout == "seed" else 2,
        embedding_dim=8,
    )
    return cfg.replace(**{**sizes, **overrides})


def tiny_train_config(**overrides) -> TrainConfig:
    cfg = CAA_PLATEAU.replace(
        name="tiny",
        model=tiny_model(),
        batch_size=4,
        eval_batch_size=8,
        epochs=3,
        learning_rate=1e-3,
        plateau=PlateauConfig(patience=0),
        early_stopping_patience=None,
        checkpoint_every_steps=2,
        log_every_steps=2,
    )
    return cfg.replace(**overrides) if overrides else cfg


def sharded_step_all_gathers(cfg: TrainConfig, mesh, global_batch: int) -> int:
    """All-gathers in the compiled train step of ``cfg`` with its batch of ``global_batch``
    rows split over ``mesh`` (state replicated, as training places it): data parallelism moves
    gradients (all-reduce), never activations, so the answer should be 0."""
    import jax

    from rawnet2_jax.model import init_variables
    from train.sharding import replicated
    from train.state import create_train_state
    from train.step import build_model, make_train_step, step_shardings

    state = jax.device_put(create_train_state(init_variables(cfg.model, 0), cfg), replicated(mesh))
    step = make_train_step(build_model(cfg), cfg, shardings=step_shardings(state, mesh))
    batch = {"audio": np.zeros((global_batch, cfg.model.num_samples), np.float32),
             "label": np.zeros(global_batch, np.int32)}
    return step.core.lower(state, batch, None).compile().as_text().count("all-gather(")


def synthetic_records(n: int, seed: int, length: int = 900, prefix: str = "U") -> list[dict]:
    """Records in the pipeline's format: bona fide = low tone, spoof = high tone, + noise."""
    r = np.random.default_rng(seed)
    t = np.arange(length) / 16000.0
    out = []
    for i in range(n):
        y = i % 2
        f = (300.0 if y else 2500.0) * r.uniform(0.8, 1.2)
        x = 0.3 * np.sin(2 * np.pi * f * t + r.uniform(0, 6.28)) + 0.05 * r.standard_normal(length)
        out.append(
            {
                "audio": (x * 20000).astype(np.int16),
                "label": y,
                "utt_id": f"{prefix}{seed}_{i:04d}",
                "attack": "-" if y else "A01",
            }
        )
    return out


def synthetic_sources(n_train: int = 20, n_dev: int = 10, n_eval: int = 10) -> dict[str, list[dict]]:
    return {
        "train": synthetic_records(n_train, 1, prefix="T"),
        "dev": synthetic_records(n_dev, 2, prefix="D"),
        "eval": synthetic_records(n_eval, 3, prefix="E"),
    }


@contextlib.contextmanager
def strict_no_host_sync():
    """Refuse, in this thread, every conversion of a ``jax.Array`` to a host value.

    ``jax.transfer_guard_device_to_host`` cannot see such fetches on the CPU backend (device
    memory is host memory there), so tests put this in place of
    ``train.loop.no_host_sync``: any ``float(x)``, ``np.asarray(x)``, ``x.item()``,
    ``jax.device_get(x)`` or ``x.block_until_ready()`` in the guarded region raises
    :class:`HostSyncError`.
    """
    from jax._src.array import ArrayImpl

    me = threading.get_ident()
    saved = {name: ArrayImpl.__dict__[name] for name in _SYNC_POINTS}

    def refuse(name, original):
        def check(self, *a, **k):
            if threading.get_ident() == me:
                raise HostSyncError(f"host sync ({name}) inside a region that must not wait for the device")
            return original(self, *a, **k)

        return check

    for name, original in saved.items():
        if isinstance(original, property):
            setattr(ArrayImpl, name, property(refuse(name, original.fget)))
        else:
            setattr(ArrayImpl, name, refuse(name, original))
    try:
        yield
    finally:
        for name, original in saved.items():
            setattr(ArrayImpl, name, original)


_SYNC_POINTS = ("_value", "__array__", "block_until_ready")


class HostSyncError(AssertionError):
    pass


def demo_sources(root, demo_cfg) -> dict[str, list[dict]]:
    """The demo corpus (``rawnet2_jax.data.demo``) written under ``root`` and read back as
    in-memory records, without a TFDS build (for training tests on speech-like audio)."""
    import soundfile as sf

    from rawnet2_jax.data import protocols as P
    from rawnet2_jax.data.demo import make_demo_corpus

    la = make_demo_corpus(root, demo_cfg, progress=False)
    out = {}
    for split in P.LA_SPLITS:
        out[split] = [
            {
                "audio": sf.read(P.la_audio_path(la, split, e.utt_id), dtype="int16")[0],
                "label": 1 if e.key == "bonafide" else 0,
                "utt_id": e.utt_id,
                "attack": e.attack,
            }
            for e in P.parse_cm_protocol(P.la_protocol_path(la, split))
        ]
    return out


def short_demo_config(epochs: int, seconds: float, **overrides) -> TrainConfig:
    """The demo preset for a short run on demo clips of ``seconds``: ``epochs`` epochs, no early
    stopping, no mid-epoch checkpoints, the model seeing 75 % of a clip (the shortest one,
    lengths vary +-25 %) so nothing is padded. Shared by the bf16 test and its benchmark."""
    cfg = DEMO.replace(epochs=epochs, early_stopping_patience=None, checkpoint_every_steps=0, **overrides)
    return cfg.replace(model=cfg.model.replace(num_samples=int(0.75 * seconds * cfg.model.sample_rate)))


def dev_eer_curve(workdir) -> list[float]:
    """Dev EER (%) of each epoch of the run in ``workdir``, from its metrics.jsonl."""
    from train.loop import METRICS_FILE
    from train.runlog import epoch_records, read_metrics

    return [r["dev_eer"] for r in epoch_records(read_metrics(Path(workdir) / METRICS_FILE))]
