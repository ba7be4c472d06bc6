"""Params dataclasses: coercion from YAML/flags with every error reported, and serialisation.

Every stage has one frozen params dataclass. Field names are the keys of the stage's section in
the pipeline file and map 1:1 onto the command's flags (``max_tokens`` <-> ``--max-tokens``).
"""
from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Mapping

from uniseg_cli.errors import UsageError


def _type_name(t: Any) -> str:
    return getattr(t, "__name__", None) or str(t).replace("typing.", "")


def _coerce_value(value: Any, t: Any, where: str) -> Any:
    origin = typing.get_origin(t)
    args = typing.get_args(t)
    if t is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce_value(value, a, where)
            except (TypeError, ValueError) as e:
                errors.append(str(e))
        raise TypeError(f"{where}: expected {' or '.join(_type_name(a) for a in args)}, got {value!r}")
    if origin is typing.Literal:
        if value in args:
            return value
        raise ValueError(f"{where}: must be one of {', '.join(map(repr, args))}, got {value!r}")
    if origin in (tuple, list):
        if isinstance(value, str) and value.strip().startswith("["):
            import yaml

            value = yaml.safe_load(value)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"{where}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis and len(args) != len(value):
            raise TypeError(f"{where}: expected {len(args)} items, got {len(value)}")
        inner = args[0] if args else Any
        items = [
            _coerce_value(v, args[i] if origin is tuple and args and args[-1] is not Ellipsis else inner, f"{where}[{i}]")
            for i, v in enumerate(value)
        ]
        return tuple(items)
    if origin in (dict, Mapping) or t is dict:
        if not isinstance(value, Mapping):
            raise TypeError(f"{where}: expected a mapping, got {value!r}")
        if args:
            return {str(k): _coerce_value(v, args[1], f"{where}.{k}") for k, v in value.items()}
        return dict(value)
    if t is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
            return value.lower() in ("true", "yes", "1", "on")
        raise TypeError(f"{where}: expected true or false, got {value!r}")
    if t is int:
        if isinstance(value, bool):
            raise TypeError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise TypeError(f"{where}: expected an integer, got {value!r}")
    if t is float:
        if isinstance(value, bool):
            raise TypeError(f"{where}: expected a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise TypeError(f"{where}: expected a number, got {value!r}")
    if t is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise TypeError(f"{where}: expected a string, got {value!r}")
    if dataclasses.is_dataclass(t):
        if not isinstance(value, Mapping):
            raise TypeError(f"{where}: expected a mapping, got {value!r}")
        obj, errs = coerce(t, value, where)
        if errs:
            raise TypeError("; ".join(errs))
        return obj
    return value


def coerce(cls: type, values: Mapping[str, Any] | None, where: str = "") -> tuple[Any, list[str]]:
    """Build ``cls`` from ``values``; return (instance or None, every problem found)."""
    values = dict(values or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    errors, kwargs = [], {}
    for key in values:
        k = str(key).replace("-", "_")
        if k not in fields:
            close = [f for f in fields if f.startswith(k[:3])]
            errors.append(
                f"{where + '.' if where else ''}{key}: unknown key"
                + (f" (did you mean {', '.join(close)}?)" if close else f" (known: {', '.join(fields)})")
            )
            continue
        try:
            kwargs[k] = _coerce_value(values[key], hints[k], f"{where + '.' if where else ''}{key}")
        except (TypeError, ValueError) as e:
            errors.append(str(e))
    if errors:
        return None, errors
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as e:
        return None, [f"{where or cls.__name__}: {e}"]
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate()
        except (ValueError, UsageError) as e:
            return None, [f"{where or cls.__name__}: {getattr(e, 'message', e)}"]
    return obj, []


def build_params(cls: type, *layers: Mapping[str, Any] | None, where: str = "") -> Any:
    """Merge layers (later wins; ``None`` values in a layer are skipped) and coerce; UsageError on problems."""
    merged: dict[str, Any] = {}
    for layer in layers:
        for k, v in (layer or {}).items():
            if v is not None:
                merged[str(k).replace("-", "_")] = v
    obj, errors = coerce(cls, merged, where)
    if errors:
        raise UsageError("invalid parameters: " + "; ".join(errors), hint="see the command's --help for each option.")
    return obj


def to_dict(params: Any) -> dict:
    """Params as plain JSON types (tuples become lists)."""
    from uniseg_cli.artifacts import _canonical

    return _canonical(dataclasses.asdict(params))


def field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]
