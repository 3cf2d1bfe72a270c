"""Typed job configuration: frozen dataclasses loaded from YAML and ``--set key=value`` overrides.

Unknown keys and values of the wrong type are errors that name the key, the value and what was
expected. The resolved configuration is written next to a job's outputs (``to_yaml``).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Convert a YAML/CLI value to ``annotation``, or raise a ValueError naming ``key``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if dataclasses.is_dataclass(annotation) and isinstance(value, annotation):
        return value  # already built (e.g. a task's degradation spec)
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise ValueError(f"{key}: expected a mapping of {annotation.__name__} fields, got {value!r}")
        return from_dict(annotation, value, prefix=key + ".")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in args:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except ValueError as exc:
                errors.append(str(exc))
        raise ValueError(errors[0] if errors else f"{key}: invalid value {value!r}")
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{key}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], key) for v in value)
        if len(args) != len(value):
            raise ValueError(f"{key}: expected {len(args)} values, got {list(value)!r}")
        return tuple(_coerce(v, a, key) for v, a in zip(value, args))
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ValueError(f"{key}: expected true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool):
            raise ValueError(f"{key}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ValueError(f"{key}: expected an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ValueError(f"{key}: expected a number, got {value!r}")
    if annotation is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ValueError(f"{key}: expected a string, got {value!r}")
    return value


def from_dict(cls: type[T], data: dict[str, Any], *, prefix: str = "") -> T:
    """Build the dataclass ``cls`` from a nested mapping; unknown keys are errors.

    Raises:
        ValueError: an unknown key (with the closest known key and the full list), a value of
            the wrong type (naming the key, the value and the expected type), or a value the
            dataclass itself rejects.
    """
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted((k for k in data if k not in known), key=str)
    if unknown:
        names = ", ".join(prefix + str(k) for k in unknown)
        close = difflib.get_close_matches(str(unknown[0]), list(known), n=1)
        hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
        raise ValueError(
            f"unknown config key{'s' if len(unknown) > 1 else ''} {names}{hint}; "
            f"known keys{' of ' + prefix.rstrip('.') if prefix else ''}: {', '.join(sorted(known))}"
        )
    kwargs = {name: _coerce(value, hints[name], prefix + name) for name, value in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ValueError(f"{prefix or 'config'}: {exc}") from exc


def to_dict(config: Any) -> dict[str, Any]:
    """A plain, YAML-friendly mapping (tuples become lists)."""

    def plain(value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(config))


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["optim.lr=1e-3", "model.widths=[16,24,32,48,64,96]"]`` -> nested dict (values parsed as YAML)."""
    result: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"--set expects key=value, got {pair!r}")
        key, raw = pair.split("=", 1)
        key = key.strip()
        if not key:
            raise ValueError(f"--set expects key=value, got {pair!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ValueError(f"--set {key}: cannot parse {raw!r} as a YAML value ({_first_line(exc)})") from exc
        node = result
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"--set {key}: {part} is not a section")
        node[parts[-1]] = value
    return result


def _first_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping held by a YAML file (empty file: ``{}``).

    Raises:
        FileNotFoundError: no such file. ValueError: not valid YAML, or not a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"config file {path} is not valid YAML: {_first_line(exc)}") from exc
    if not isinstance(loaded, dict):
        raise ValueError(f"config file {path} must hold a mapping, got {type(loaded).__name__}")
    return loaded


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``override``, recursively for nested mappings (neither is modified)."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(cls: type[T], *, path: str | Path | None = None, overrides: list[str] | None = None,
                base: dict[str, Any] | None = None) -> T:
    """Resolve a config: ``base`` (e.g. from command-line flags) <- YAML file <- ``--set`` overrides."""
    data: dict[str, Any] = dict(base or {})
    if path is not None:
        data = merge(data, read_yaml(path))
    if overrides:
        data = merge(data, parse_overrides(overrides))
    return from_dict(cls, data)


def to_yaml(config: Any) -> str:
    """The config as YAML that ``load_config`` reads back to an equal config: its own
    ``to_dict()`` where it has one (``TrainConfig``), else :func:`to_dict`."""
    return yaml.safe_dump(config.to_dict() if hasattr(config, "to_dict") else to_dict(config), sort_keys=False)
