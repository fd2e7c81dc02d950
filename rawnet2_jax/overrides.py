"""``FIELD=VALUE`` overrides of frozen config dataclasses, dotted paths into nested configs.

The one parser behind ``python -m train --set`` and ``python -m convert --set`` (through
:meth:`rawnet2_jax.config.ConfigMixin.with_overrides`). Each value is read as the type the
field declares -- ``bool``, ``int``, ``float``, ``str``, ``Literal[...]``, ``X | None``
(written ``none``), ``tuple[X, ...]`` / ``tuple[X, X]`` (comma-separated) -- and a path may
step into a nested dataclass field (``model.fms_mode=mul``, ``plateau.patience=5``; a nested
config that is None starts from its defaults). All overrides are gathered first and each
dataclass is rebuilt once, so their order does not matter for the configs' own consistency
checks (``model.num_classes=3`` together with ``class_weights=1,1,1``). Every error is one
:class:`~rawnet2_jax.errors.ConfigError` line naming the field and what it accepts.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import types
import typing
from typing import Any, Iterable

from rawnet2_jax.errors import ConfigError, first_line

_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")
_NONE = ("none", "null")


class _Nested(dict):
    """Changes to the fields of one nested config; ``from_defaults``: it was None (or set to None)."""

    def __init__(self, from_defaults: bool = False):
        super().__init__()
        self.from_defaults = from_defaults


def apply_overrides(config: Any, items: Iterable[str]) -> Any:
    """``config`` (a dataclass instance) with every ``"a.b=value"`` of ``items`` applied."""
    items = list(items)
    changes = _Nested()
    for item in items:
        path, value = parse_override(type(config), item)
        _record(changes, path, value)
    if not changes:
        return config
    try:
        return _rebuild(config, changes)
    except (TypeError, ValueError) as e:
        msg = first_line(e)
        raise ConfigError(f"override {' '.join(items)}: {msg}") from None


def override_text(value: Any) -> str:
    """``value`` written as an override's VALUE (what :func:`parse_override` reads back):
    ``none``, comma-separated tuples, ``str`` of the rest."""
    if value is None:
        return "none"
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def parse_override(cls: type, item: str) -> tuple[tuple[str, ...], Any]:
    """``"model.fms_mode=mul"`` -> ``(("model", "fms_mode"), "mul")``, the value typed and checked."""
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected FIELD=VALUE, e.g. fms_mode=mul or model.fms_mode=mul")
    key, text = (s.strip() for s in item.split("=", 1))
    path = tuple(key.split("."))
    for depth, name in enumerate(path):
        hints = _hints(cls)
        if name not in hints:
            raise ConfigError(f"override {item}: {_unknown_field(cls, path[:depth], name)}")
        hint = hints[name]
        nested = _dataclass_of(hint)
        if depth < len(path) - 1:
            if nested is None:
                raise ConfigError(f"override {item}: {'.'.join(path[: depth + 1])} is not a nested config")
            cls = nested
    return path, _parse_value(hint, text, item)


def describe_fields(cls: type, prefix: str = "") -> list[str]:
    """``"model.fms_mode: add | mul"`` for every field reachable from ``cls`` (for help texts)."""
    lines = []
    for name, hint in _hints(cls).items():
        nested = _dataclass_of(hint)
        if nested is not None:
            lines += describe_fields(nested, f"{prefix}{name}.")
            if _allows_none(hint):
                lines.append(f"{prefix}{name}: none")
        else:
            lines.append(f"{prefix}{name}: {_expected(hint)}")
    return lines


# ----------------------------------------------------------------------------- building


def _record(changes: _Nested, path: tuple[str, ...], value: Any) -> None:
    node = changes
    for name in path[:-1]:
        sub = node.get(name)
        if not isinstance(sub, _Nested):  # untouched, or set to None earlier in the list
            sub = node[name] = _Nested(from_defaults=name in node)
        node = sub
    node[path[-1]] = value


def _rebuild(obj: Any, changes: _Nested) -> Any:
    values = {}
    for name, change in changes.items():
        if isinstance(change, _Nested):
            base = None if change.from_defaults else getattr(obj, name)
            if base is None:
                base = _defaults(_dataclass_of(_hints(type(obj))[name]), name)
            change = _rebuild(base, change)
        values[name] = change
    return dataclasses.replace(obj, **values)


def _defaults(cls: type, name: str) -> Any:
    try:
        return cls()
    except TypeError:
        raise ConfigError(f"{name} is none and {cls.__name__} has required fields; "
                          f"it cannot be built from single overrides") from None


# ----------------------------------------------------------------------------- types


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """Declared type of every init field of the dataclass ``cls``, in declaration order."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def _union_args(hint: Any) -> tuple[Any, ...] | None:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return None


def _allows_none(hint: Any) -> bool:
    args = _union_args(hint)
    return args is not None and type(None) in args


def _without_none(hint: Any) -> Any:
    args = _union_args(hint)
    if args is None:
        return hint
    rest = [a for a in args if a is not type(None)]
    return rest[0] if len(rest) == 1 else typing.Union[tuple(rest)]


def _dataclass_of(hint: Any) -> type | None:
    inner = _without_none(hint)
    return inner if dataclasses.is_dataclass(inner) and isinstance(inner, type) else None


_WORDS = {bool: ("true | false", "trues/falses"), int: ("an integer", "integers"),
          float: ("a number", "numbers"), str: ("text", "texts")}


def _expected(hint: Any, plural: bool = False) -> str:
    """What a field accepts, in words (the tail of every value error)."""
    none = " | none" if _allows_none(hint) else ""
    hint = _without_none(hint)
    if typing.get_origin(hint) is typing.Literal:
        return "one of " + " | ".join(map(str, typing.get_args(hint))) + none
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"comma-separated {_expected(args[0], plural=True)}{none}"
        if len(set(args)) == 1:
            return f"{len(args)} comma-separated {_expected(args[0], plural=True)}{none}"
        return f"{len(args)} comma-separated values ({', '.join(_expected(a) for a in args)}){none}"
    if dataclasses.is_dataclass(hint):
        return f"a {hint.__name__}: set its fields one by one (FIELD.SUBFIELD=VALUE){none}"
    words = _WORDS.get(hint)
    return (words[plural] if words else getattr(hint, "__name__", str(hint))) + none


def _parse_value(hint: Any, text: str, item: str) -> Any:
    if _allows_none(hint) and text.lower() in _NONE:
        return None
    value = _convert(_without_none(hint), text)
    if value is _BAD:
        raise ConfigError(f"override {item}: expected {_expected(hint)}")
    return value


_BAD = object()


def _convert(hint: Any, text: str) -> Any:
    """``text`` as a value of type ``hint``, or ``_BAD``."""
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return next((a for a in typing.get_args(hint) if str(a) == text), _BAD)
    if origin is tuple:
        return _convert_tuple(typing.get_args(hint), text)
    if hint is bool:
        low = text.lower()
        return True if low in _TRUE else False if low in _FALSE else _BAD
    if hint is int:
        try:
            return int(text)
        except ValueError:
            return _BAD
    if hint is float:
        try:
            value = float(text)
        except ValueError:
            return _BAD
        return value if math.isfinite(value) else _BAD
    if hint is str:
        return text
    return _BAD  # a nested dataclass or an unsupported type: not settable as a whole


def _convert_tuple(args: tuple[Any, ...], text: str) -> Any:
    parts = [p.strip() for p in text.strip("()[] ").split(",")]
    parts = [] if parts == [""] else parts
    if len(args) == 2 and args[1] is Ellipsis:
        args = (args[0],) * len(parts)
    if len(parts) != len(args):
        return _BAD
    values = tuple(_convert(a, p) for a, p in zip(args, parts))
    return _BAD if any(v is _BAD for v in values) else values


def _unknown_field(cls: type, parents: tuple[str, ...], name: str) -> str:
    where = ".".join(parents) or cls.__name__
    known = list(_hints(cls))
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"{where} has no field {name!r}; {hint}fields: {', '.join(known)}"
