"""Config presets (JSON round trip) and ``ConfigMixin.with_overrides`` (rawnet2_jax.overrides)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from rawnet2_jax.config import PRESETS as MODEL_PRESETS
from rawnet2_jax.config import COMPUTATION_FIELDS, ModelConfig
from rawnet2_jax.errors import ConfigError, UserError
from rawnet2_jax.overrides import describe_fields
from train.configs import CAA_PLATEAU, DEMO, TAK2021_RECIPE, PlateauConfig, TrainConfig
from train.configs import PRESETS as TRAIN_PRESETS

ALL_PRESETS = [*MODEL_PRESETS.values(), *TRAIN_PRESETS.values()]


@pytest.mark.parametrize("cfg", ALL_PRESETS, ids=lambda c: f"{type(c).__name__}:{c.name}")
def test_preset_json_round_trip(cfg):
    back = type(cfg).from_dict(json.loads(cfg.to_json()))
    assert back == cfg
    hash(back)  # frozen and hashable again (tuples, not the lists JSON gives back)


def test_from_dict_refuses_unknown_fields():
    d = CAA_PLATEAU.to_dict()
    d["learning_rat"] = 1.0
    with pytest.raises(ValueError, match="unknown train config fields: learning_rat"):
        TrainConfig.from_dict(d)


def test_the_example_of_the_docstring():
    cfg = CAA_PLATEAU.with_overrides(
        ["model.fms_mode=mul", "learning_rate=3e-4", "plateau.patience=5", "class_weights=1,9"]
    )
    assert cfg.model == CAA_PLATEAU.model.replace(fms_mode="mul")
    assert cfg.learning_rate == 3e-4
    assert cfg.plateau == dataclasses.replace(CAA_PLATEAU.plateau, patience=5)
    assert cfg.class_weights == (1.0, 9.0)
    assert cfg.replace(model=CAA_PLATEAU.model, learning_rate=1e-4, plateau=CAA_PLATEAU.plateau,
                       class_weights=CAA_PLATEAU.class_weights) == CAA_PLATEAU


@pytest.mark.parametrize(
    "item,field,want",
    [
        ("drop_remainder=false", "drop_remainder", False),
        ("drop_remainder=Yes", "drop_remainder", True),
        ("drop_remainder=0", "drop_remainder", False),
        ("epochs=7", "epochs", 7),
        ("weight_decay=0", "weight_decay", 0.0),
        ("dataset=in_the_wild", "dataset", "in_the_wild"),
        ("compute_dtype=bfloat16", "compute_dtype", "bfloat16"),
        ("grad_clip_norm=none", "grad_clip_norm", None),
        ("grad_clip_norm=2.5", "grad_clip_norm", 2.5),
        ("early_stopping_patience=None", "early_stopping_patience", None),
        ("class_weights=(2, 0.5)", "class_weights", (2.0, 0.5)),
        ("plateau=none", "plateau", None),
    ],
)
def test_values_are_read_as_the_declared_type(item, field, want):
    got = getattr(CAA_PLATEAU.with_overrides([item]), field)
    assert got == want and type(got) is type(want), (item, got)


def test_model_config_overrides_and_variable_tuples():
    cfg = MODEL_PRESETS["caa_rawnet2"].with_overrides(["sinc_abs=true", "sinc_pool=3", "stored_class_weights=1,9"])
    assert (cfg.sinc_abs, cfg.sinc_pool, cfg.stored_class_weights) == (True, 3, (1.0, 9.0))
    assert MODEL_PRESETS["caa_rawnet2"].with_overrides(["stored_class_weights=none"]).stored_class_weights is None


def test_nested_config_that_is_none_starts_from_its_defaults():
    assert TAK2021_RECIPE.plateau is None
    cfg = TAK2021_RECIPE.with_overrides(["plateau.patience=5"])
    assert cfg.plateau == PlateauConfig(patience=5)
    # set to none, then a field: the later override builds a fresh default one
    cfg = CAA_PLATEAU.with_overrides(["plateau=none", "plateau.factor=0.5"])
    assert cfg.plateau == PlateauConfig(factor=0.5)
    # a field, then none: none wins
    assert CAA_PLATEAU.with_overrides(["plateau.factor=0.5", "plateau=none"]).plateau is None


@pytest.mark.parametrize("order", [1, -1])
def test_consistency_is_checked_once_all_overrides_are_in(order):
    items = ["num_classes=3", "stored_class_weights=1,1,2"][::order]
    cfg = MODEL_PRESETS["caa_rawnet2"].with_overrides(items)
    assert cfg.num_classes == 3 and cfg.stored_class_weights == (1.0, 1.0, 2.0)


def test_no_overrides_is_the_same_config():
    assert DEMO.with_overrides([]) is DEMO


@pytest.mark.parametrize(
    "item,needles",
    [
        ("fms_mode", ["expected FIELD=VALUE"]),
        ("model.fms_mod=mul", ["model has no field 'fms_mod'", "did you mean 'fms_mode'", "fms_position"]),
        ("learnin_rate=1", ["TrainConfig has no field 'learnin_rate'", "did you mean 'learning_rate'"]),
        ("plateau.x=1", ["plateau has no field 'x'", "patience"]),
        ("learning_rate.x=1", ["learning_rate is not a nested config"]),
        ("model.fms_mode=sideways", ["model.fms_mode=sideways", "one of add | mul"]),
        ("compute_dtype=float16", ["compute_dtype", "one of float32 | bfloat16"]),
        ("epochs=1.5", ["epochs=1.5", "an integer"]),
        ("epochs=none", ["epochs=none", "an integer"]),
        ("learning_rate=fast", ["learning_rate=fast", "a number"]),
        ("learning_rate=nan", ["learning_rate=nan", "a number"]),
        ("grad_clip_norm=off", ["grad_clip_norm=off", "a number | none"]),
        ("drop_remainder=maybe", ["drop_remainder", "true | false"]),
        ("class_weights=1", ["class_weights=1", "2 comma-separated numbers"]),
        ("class_weights=1,x", ["class_weights=1,x", "2 comma-separated numbers"]),
        ("model=tak2021", ["model=tak2021", "ModelConfig", "FIELD.SUBFIELD=VALUE"]),
        ("model.sinc_kernel_size=64", ["model.sinc_kernel_size=64", "must be odd"]),
        ("plateau.factor=2", ["plateau.factor=2", "factor must be > 0 and < 1, got 2.0"]),
        ("plateau.factor=-5", ["plateau factor must be > 0 and < 1, got -5.0"]),
        ("epochs=0", ["override epochs=0", "epochs must be >= 1, got 0"]),
        ("early_stopping_patience=0", ["early_stopping_patience must be >= 1 (or none: no early stopping), got 0"]),
        ("learning_rate=-1", ["learning_rate must be > 0, got -1.0"]),
        ("weight_decay=-1", ["weight_decay must be >= 0, got -1.0"]),
        ("adam_b1=5", ["adam_b1 must be >= 0 and < 1, got 5.0"]),
        ("checkpoint_every_steps=-1", ["checkpoint_every_steps must be >= 0"]),
        ("max_steps_per_epoch=0", ["max_steps_per_epoch must be >= 1 (or none: whole epochs), got 0"]),
        ("class_weights=-1,1", ["class_weights must be > 0 each, got (-1.0, 1.0)"]),
        ("model.num_classes=3", ["stored_class_weights must have num_classes entries"]),
    ],
)
def test_every_error_is_one_line_naming_the_field(item, needles):
    with pytest.raises(ConfigError) as e:
        CAA_PLATEAU.with_overrides([item])
    msg = str(e.value)
    assert isinstance(e.value, UserError) and "\n" not in msg
    for n in needles:
        assert n in msg, (n, msg)


def _as_text(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value)


def _leaves(cfg, prefix=""):
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            yield from _leaves(v, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", v


@pytest.mark.parametrize("cfg", ALL_PRESETS, ids=lambda c: f"{type(c).__name__}:{c.name}")
def test_every_field_takes_its_own_value_back(cfg):
    """Each field of each preset, written as text, parses back to exactly its value."""
    items = [f"{path}={_as_text(v)}" for path, v in _leaves(cfg)]
    assert cfg.with_overrides(items) == cfg
    for item in items:
        assert cfg.with_overrides([item]) == cfg, item


def test_describe_fields_lists_every_leaf():
    lines = describe_fields(TrainConfig)
    paths = {line.split(":", 1)[0] for line in lines}
    assert {p for p, _ in _leaves(CAA_PLATEAU)} <= paths
    assert "model.fms_mode: one of add | mul" in lines
    assert "plateau: none" in lines and "grad_clip_norm: a number | none" in lines
    assert {f"model.{f.name}" for f in dataclasses.fields(ModelConfig)} <= paths


@pytest.mark.parametrize("cfg", MODEL_PRESETS.values(), ids=lambda c: c.name)
def test_computation_neutral_keeps_the_architecture_only(cfg):
    variant = cfg.replace(name="mine", remat="blocks", gru_impl="scan", sinc_conv_impl="fft")
    neutral = variant.computation_neutral()
    assert neutral == cfg.computation_neutral() and hash(neutral) == hash(cfg.computation_neutral())
    assert neutral.architecture() == cfg.architecture() and neutral.name == ""
    defaults = {f.name: f.default for f in dataclasses.fields(ModelConfig)}
    assert all(getattr(neutral, f) == defaults[f] == "auto" for f in COMPUTATION_FIELDS)
    assert cfg.replace(gru_hidden=cfg.gru_hidden + 1).computation_neutral() != neutral


def test_lengths_and_rates_must_be_positive():
    base = MODEL_PRESETS["caa_rawnet2"]
    for field in ("sample_rate", "num_samples"):
        for bad in (0, -16000):
            with pytest.raises(ValueError, match=rf"{field} must be positive, got {bad}"):
                base.replace(**{field: bad})


def test_override_text_reads_back_as_the_value():
    from rawnet2_jax.overrides import override_text, parse_override

    cfg = MODEL_PRESETS["caa_rawnet2"]
    for field in ("gru_hidden", "fms_mode", "stored_class_weights", "sinc_learnable", "leaky_relu_slope"):
        value = getattr(cfg, field)
        assert parse_override(ModelConfig, f"{field}={override_text(value)}") == ((field,), value), field
    assert parse_override(TrainConfig, f"grad_clip_norm={override_text(None)}") == (("grad_clip_norm",), None)
