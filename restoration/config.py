"""Typed settings: pydantic models loaded from YAML and ``--set key=value`` overrides.

Every settings class derives from :class:`Settings` (a frozen pydantic model that forbids
unknown keys); its checks are field constraints and validators. A bad value is a one-line
``ValueError`` naming the key (its full dotted path, e.g. ``output.png_compression``), the value
and what is allowed; an unknown key names the closest known key and lists them all.
:func:`settings_error` is the one place a pydantic ``ValidationError`` becomes that line. The
resolved settings are written next to a job's outputs (:func:`to_yaml`), and read back equal.

Settings held as plain dataclasses elsewhere (a task's degradation spec, the model's
``Architecture``) load through the same rules: :func:`from_dict` mirrors their fields in a
:class:`Settings` model, then builds the dataclass (whose ``__post_init__`` checks the rest).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
)
from pydantic_core import PydanticCustomError, core_schema

T = TypeVar("T")


class SettingError(ValueError):
    """A bad value, raised by a validator with what is allowed (``"must be >= 1, got 0"``); the
    key is prefixed when the error becomes one line. ``field``: the field of the model whose
    (cross-field) validator raised it, else the error's own location names the key."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def check(test: Callable[[Any], bool], allowed: str) -> AfterValidator:
    """A field validator: the value if ``test(value)``, else ``KEY must be ALLOWED, got VALUE``
    (for ``Annotated[int, check(lambda v: v >= 1, ">= 1")]``; an ``allowed`` that starts with
    ``must`` is the whole phrase)."""
    phrase = allowed if allowed.startswith("must ") else f"must be {allowed}"

    def validate(value: Any) -> Any:
        if not test(value):
            raise SettingError(f"{phrase}, got {value!r}")
        return value

    return AfterValidator(validate)


def at_least(limit: float, allowed: str | None = None) -> AfterValidator:
    """``value >= limit`` (and finite): ``KEY must be >= LIMIT, got VALUE``."""
    return check(lambda v: math.isfinite(v) and v >= limit, allowed or f">= {limit}")


def above(limit: float, allowed: str | None = None) -> AfterValidator:
    """``value > limit`` (and finite): ``KEY must be > LIMIT, got VALUE``."""
    return check(lambda v: math.isfinite(v) and v > limit, allowed or f"> {limit}")


def within(low: float, high: float, allowed: str | None = None) -> AfterValidator:
    """``low <= value <= high``: ``KEY must be in [LOW, HIGH], got VALUE``."""
    return check(lambda v: math.isfinite(v) and low <= v <= high, allowed or f"in [{low}, {high}]")


def one_of(choices: typing.Iterable[Any], allowed: str | None = None) -> AfterValidator:
    """``value in choices``: ``KEY must be one of A, B, C, got VALUE``."""
    choices = tuple(choices)
    return check(lambda v: v in choices, allowed or f"one of {', '.join(map(str, choices))}")


def _options(annotation: Any) -> tuple[Any, ...]:
    """The types a field's annotation allows (``int | None`` -> ``(int,)``), Annotated unwrapped."""
    if typing.get_origin(annotation) is typing.Annotated:
        return _options(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return tuple(t for a in typing.get_args(annotation) if a is not type(None) for t in _options(a))
    return (annotation,)


class Settings(BaseModel):
    """A settings section: frozen, unknown keys refused, values of the wrong type refused
    (YAML's and ``--set``'s strings are converted where they are unambiguous: ``"20"`` for an
    integer, ``"yes"`` for a boolean, ``"a,b"`` for a list; a boolean is never a number).

    ``section``: the key of the section in its config (``predictor``), which names the keys of
    errors when the section is made on its own (``PredictorConfig(ensemble=3)``). Made directly,
    a bad value is the same one-line ``ValueError`` as when the config loads, and an unknown
    keyword a ``TypeError`` (as for any Python call).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", coerce_numbers_to_str=True,
                              arbitrary_types_allowed=True)

    section: ClassVar[str] = ""

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            error = settings_error(exc, type(self), prefix=type(self).section)
            raise (TypeError(str(error)) if _is_unknown_key(exc) else error) from None

    # Only a direct call runs this __init__: pydantic validates nested sections without it (as
    # for BaseModel's own), so their errors keep their full location.
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    @field_validator("*", mode="before")
    @classmethod
    def _plain_values(cls, value: Any, info: ValidationInfo) -> Any:
        """Refuse booleans as numbers; split ``"a,b"`` into a list; count fixed-length lists."""
        field = cls.model_fields.get(info.field_name or "")
        if field is None or value is None:
            return value
        options = _options(field.annotation)
        if isinstance(value, bool) and bool not in options:
            if int in options:
                raise PydanticCustomError("int_type", "expected an integer")
            if float in options:
                raise PydanticCustomError("float_type", "expected a number")
        for option in options:
            if typing.get_origin(option) is not tuple:
                continue
            if isinstance(value, str):
                value = [v for v in value.split(",") if v.strip()]
            args = typing.get_args(option)
            if isinstance(value, (list, tuple)) and args and args[-1] is not Ellipsis and len(value) != len(args):
                raise PydanticCustomError("tuple_length", "expected {count} values",
                                          {"count": len(args), "values": list(value)})
        return value


# --------------------------------------------------------------------------------------------
# Plain dataclasses as settings


@functools.cache
def mirror(cls: type) -> type[Settings]:
    """A :class:`Settings` model with the init fields (types and defaults) of the dataclass ``cls``."""
    hints = typing.get_type_hints(cls)
    fields: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        if not field.init:
            continue
        if field.default is not dataclasses.MISSING:
            fields[field.name] = (hints[field.name], field.default)
        elif field.default_factory is not dataclasses.MISSING:
            fields[field.name] = (hints[field.name], Field(default_factory=field.default_factory))
        else:
            fields[field.name] = (hints[field.name], ...)
    return create_model(cls.__name__, __base__=Settings, __module__=cls.__module__, **fields)


def _build(cls: type[T], model: Settings) -> T:
    return cls(**{name: getattr(model, name) for name in type(model).model_fields})


class FromDataclass:
    """``Annotated[SomeDataclass, FromDataclass()]``: a field holding a plain dataclass, built
    from a mapping under the :class:`Settings` rules (an instance is taken as it is) and written
    back as a mapping (tuples as lists)."""

    def __get_pydantic_core_schema__(self, source: type, handler: Any) -> core_schema.CoreSchema:
        settings = mirror(source)

        def validate(value: Any, next_: Callable[[Any], Any]) -> Any:
            if isinstance(value, source):
                return value
            return _build(source, next_(value))

        return core_schema.no_info_wrap_validator_function(
            validate, handler.generate_schema(settings),
            serialization=core_schema.plain_serializer_function_ser_schema(_plain_dataclass),
        )


def _plain_dataclass(value: Any) -> Any:
    return _plain(dataclasses.asdict(value)) if dataclasses.is_dataclass(value) else value


# --------------------------------------------------------------------------------------------
# One line per bad config

_TYPE_ERRORS: dict[str, str] = {
    "int_type": "expected an integer", "int_parsing": "expected an integer", "int_from_float": "expected an integer",
    "int_parsing_size": "expected an integer", "float_type": "expected a number", "float_parsing": "expected a number",
    "bool_type": "expected true or false", "bool_parsing": "expected true or false", "string_type": "expected a string",
    "tuple_type": "expected a list", "list_type": "expected a list", "iterable_type": "expected a list",
    "dict_type": "expected a mapping",
}


def _is_unknown_key(exc: ValidationError) -> bool:
    return any(error["type"] == "extra_forbidden" for error in exc.errors())


def _dotted(prefix: str, loc: tuple[Any, ...]) -> str:
    """``prefix`` and the error location's keys (list positions left out) as ``a.b.c``."""
    parts = [prefix] if prefix else []
    parts += [str(part) for part in loc if not isinstance(part, int)]
    return ".".join(parts)


def _model_at(cls: type, loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The settings model that the keys at ``loc`` belong to (``cls`` for ``()``)."""
    model: Any = mirror(cls) if dataclasses.is_dataclass(cls) else cls
    for part in loc:
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            return None
        nested = [o for o in _options(model.model_fields[part].annotation) if isinstance(o, type)]
        nested = [mirror(o) if dataclasses.is_dataclass(o) else o for o in nested]
        models = [o for o in nested if issubclass(o, BaseModel)]
        model = models[0] if models else None
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _unknown_keys(cls: type, errors: list[dict[str, Any]], prefix: str) -> str:
    """``unknown config key(s) A.x, A.y (did you mean A.z?); known keys of A: ...`` for the
    unknown keys of the first section that has some."""
    parent = errors[0]["loc"][:-1]
    names = sorted((str(e["loc"][-1]) for e in errors if e["loc"][:-1] == parent), key=str)
    section = _dotted(prefix, parent)
    lead = section + "." if section else ""
    model = _model_at(cls, parent)
    known = sorted(model.model_fields) if model is not None else []
    close = difflib.get_close_matches(names[0], known, n=1)
    hint = f" (did you mean {lead}{close[0]}?)" if close else ""
    note = getattr(model, "unknown_key_note", "")
    return (f"unknown config key{'s' if len(names) > 1 else ''} {', '.join(lead + n for n in names)}{hint}; "
            f"known keys{' of ' + section if section else ''}: {', '.join(known)}{'; ' + note if note else ''}")


def settings_error(exc: ValidationError, cls: type, *, prefix: str = "") -> ValueError:
    """The one-line ValueError for a pydantic ``ValidationError`` of ``cls`` (whose keys lie
    under ``prefix``): unknown keys first, else the first bad value, named by its dotted key."""
    errors = exc.errors()
    unknown = [e for e in errors if e["type"] == "extra_forbidden"]
    if unknown:
        return ValueError(_unknown_keys(cls, unknown, prefix))
    error = errors[0]
    key, kind, value, context = _dotted(prefix, error["loc"]), error["type"], error.get("input"), error.get("ctx") or {}
    if kind == "value_error" and isinstance(context.get("error"), ValueError):
        cause = context["error"]
        if isinstance(cause, SettingError):
            key = _dotted(key, (cause.field,)) if cause.field else key
            return ValueError(f"{key} {cause}" if key else str(cause))
        message = str(cause)
        if not key or message.startswith(key) or f"{key}." in message:
            return ValueError(message)  # it names its keys itself
        return ValueError(f"{key}: {message}")
    if kind in _TYPE_ERRORS:
        return ValueError(f"{key}: {_TYPE_ERRORS[kind]}, got {value!r}")
    if kind in ("model_type", "model_attributes_type", "dataclass_type"):
        name = context.get("class_name") or getattr(_model_at(cls, error["loc"]), "__name__", "settings")
        return ValueError(f"{key}: expected a mapping of {name} fields, got {value!r}")
    if kind == "tuple_length":
        return ValueError(f"{key}: expected {context['count']} values, got {context['values']!r}")
    return ValueError(f"{key or 'config'}: {error['msg']}, got {value!r}")


def from_dict(cls: type[T], data: dict[str, Any], *, prefix: str = "") -> T:
    """Build ``cls`` (a :class:`Settings` model, or a plain dataclass through :func:`mirror`)
    from a nested mapping whose keys lie under ``prefix`` (``"degradation."``).

    Raises:
        ValueError: one line -- an unknown key (with the closest known key and the full list), a
            value of the wrong type (naming the key, the value and the expected type), or a value
            out of range (naming the key, the value and what is allowed).
    """
    prefix = prefix.rstrip(".")
    if not isinstance(data, dict):
        raise ValueError(f"{prefix or 'config'}: expected a mapping, got {data!r}")
    settings = mirror(cls) if dataclasses.is_dataclass(cls) else cls
    try:
        model = settings.model_validate(_string_keys(data))
    except ValidationError as exc:
        raise settings_error(exc, cls, prefix=prefix) from None
    if settings is cls:
        return typing.cast(T, model)
    try:
        return _build(cls, model)
    except ValueError as exc:
        message = str(exc)
        raise ValueError(message if not prefix or prefix + "." in message else f"{prefix}: {message}") from None


def _string_keys(value: Any) -> Any:
    """YAML's keys as strings (``1:`` is key ``"1"``, named as such if it is unknown)."""
    if isinstance(value, dict):
        return {str(k): _string_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_string_keys(v) for v in value]
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def to_dict(config: Any) -> dict[str, Any]:
    """A plain, YAML-friendly mapping of settings (tuples become lists)."""
    if isinstance(config, BaseModel):
        return _plain(config.model_dump())
    return _plain(dataclasses.asdict(config))


# --------------------------------------------------------------------------------------------
# YAML and --set


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
