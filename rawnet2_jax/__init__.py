"""rawnet2-jax: RawNet2 speech anti-spoofing in JAX/Flax."""

from rawnet2_jax.config import PRESETS, ModelConfig, get_config

__all__ = ["PRESETS", "ModelConfig", "get_config", "load_pretrained"]


def __getattr__(name):
    # Lazy: importing the package must stay cheap (no JAX/orbax) for the metrics CLI.
    if name == "load_pretrained":
        from rawnet2_jax.checkpoint import load_pretrained

        return load_pretrained
    raise AttributeError(name)
