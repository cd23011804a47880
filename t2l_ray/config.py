"""One config system: dataclasses with per-field docs, loaded from YAML, overridden by `--set key=value`.

Every config class is a plain dataclass whose fields carry their documentation in
`field(metadata={"doc": ...})`. `load_config(cls, path, overrides)` builds an instance from a YAML
file (missing keys keep their defaults, unknown keys are an error naming the key) and then applies
dotted overrides such as `train.lr=1e-4`, parsed as YAML scalars so numbers and booleans keep their type.

Fields that hold a local path say so (`doc(..., path=...)`), and `load_config` makes those paths absolute
(`resolve_paths`): Ray runs tasks, actors and train workers in other working directories, so a relative path
must not cross to them. The rule is `local_path`.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override that does not fit the dataclass it is meant for."""


PATH = "path"
"""A field that is a local path or a URI (output folders, data files): local values are made absolute."""
NAME_OR_PATH = "name_or_path"
"""A field that is a hub name, a preset or an encoder spec, or a local path: made absolute only when it looks
like a path (starts with `.`, `/` or `~`) or names something that exists here."""
_SPEC = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")  # s3://, gs://, file://, lol:NAME, base-model:NAME


def local_path(value: str, kind: str = PATH, names: tuple[str, ...] = ()) -> str:
    """`value` as an absolute local path when it is one; anything else unchanged.

    Unchanged: the empty string, a reserved word of the field (`names`, e.g. `suite`, `train`), a URI or a
    `word:` spec (`s3://...`, `file://...`, `lol:NAME`, `base-model:NAME`), and for NAME_OR_PATH fields a hub
    name or preset (`mistralai/Mistral-7B-Instruct-v0.2`, `mistral-7b-instruct-v0.2`) that is not a local
    file or folder. Everything else is a path relative to the current directory (`~` expanded).
    """
    if not value or value in names or _SPEC.match(value):
        return value
    expanded = os.path.expanduser(value)
    if kind == NAME_OR_PATH and not (value.startswith((".", "/", "~")) or os.path.exists(expanded)):
        return value
    return os.path.abspath(expanded)


def doc(text: str, default: Any = dataclasses.MISSING, default_factory: Any = dataclasses.MISSING,
        path: str | None = None, names: tuple[str, ...] = ()):
    """A dataclass field with its documentation attached (shown by `t2l-ray config`).

    `path` (PATH or NAME_OR_PATH) marks a field that may hold a local path, `names` its reserved words;
    `resolve_paths` makes such values absolute by `local_path`."""
    kwargs: dict[str, Any] = {"metadata": {"doc": text, "path": path, "names": names}}
    if default is not dataclasses.MISSING:
        kwargs["default"] = default
    if default_factory is not dataclasses.MISSING:
        kwargs["default_factory"] = default_factory
    return dataclasses.field(**kwargs)


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check and convert a YAML value to the annotated type; nested dataclasses recurse."""
    origin = typing.get_origin(tp)
    if _is_dataclass_type(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        last_error = None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as error:
                last_error = error
        raise last_error or ConfigError(f"{where}: {value!r} does not fit {tp}")
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{where}: {value!r} is not one of {list(typing.get_args(tp))}")
        return value
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        items = [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        (key_tp, value_tp) = typing.get_args(tp) or (Any, Any)
        return {_coerce(k, key_tp, where): _coerce(v, value_tp, f"{where}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:  # YAML 1.1 reads `3e-3` (no dot) as a string; users write learning rates that way
            return float(value)
        except ValueError:
            pass
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp is bool and isinstance(value, bool):
        return value
    if tp is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    raise ConfigError(f"{where}: expected {getattr(tp, '__name__', tp)}, got {value!r}")


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Build `cls` from a mapping; unknown keys are an error that names them and the valid ones."""
    types_by_name = _field_types(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys: {names}")
    kwargs = {k: _coerce(v, types_by_name[k], f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def _plain(value: Any) -> Any:
    """Lists, dicts and scalars only: dataclasses become dicts, tuples lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def to_dict(obj: Any) -> dict[str, Any]:
    """A plain, YAML- and JSON-ready dict of a config (tuples become lists)."""
    return _plain(obj)


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b=value` -> (["a", "b"], parsed value); the value is read as a YAML scalar."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value (for example train.lr=1e-4)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r} has an empty key")
    return key.split("."), yaml.safe_load(raw) if raw.strip() else ""


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `key.sub=value` overrides to a nested dict (a copy is returned)."""
    import copy

    result = copy.deepcopy(data)
    for text in overrides:
        path, value = parse_override(text)
        node = result
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {part!r} is not a section")
            node = child
        node[path[-1]] = value
    return result


def resolve_paths(obj: Any) -> Any:
    """Make every path field of a config (nested sections and lists of them included) absolute, in place,
    by `local_path`; returns `obj`. Idempotent."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            resolve_paths(value)
        elif isinstance(value, list) and value and all(dataclasses.is_dataclass(v) for v in value):
            for item in value:
                resolve_paths(item)
        elif f.metadata.get("path") and isinstance(value, str):
            setattr(obj, f.name, local_path(value, f.metadata["path"], f.metadata.get("names", ())))
    return obj


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Defaults <- YAML file <- overrides, with path fields made absolute (`resolve_paths`; relative paths
    are relative to the current directory, not to the YAML file). Errors name the file and the offending key."""
    data: dict[str, Any] = {}
    where = "config"
    if path is not None:
        where = str(path)
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: not valid YAML: {error}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
        data = loaded
    data = apply_overrides(data, overrides or [])
    return resolve_paths(from_dict(cls, data, where))


def describe(config: Any, prefix: str = "") -> list[tuple[str, Any, str]]:
    """(dotted key, value, doc) for every field, nested sections flattened; `t2l-ray config` prints them.

    `config` is a config class (values are the defaults; `dataclasses.MISSING` where a field has none) or an
    instance (its own values). Values are plain, as `to_dict` gives them.
    """
    cls = config if isinstance(config, type) else type(config)
    rows = []
    types_by_name = _field_types(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        tp = types_by_name[f.name]
        if not isinstance(config, type):
            value = getattr(config, f.name)
        elif f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            value = dataclasses.MISSING
        if _is_dataclass_type(tp):
            rows.extend(describe(tp if isinstance(config, type) else value, key + "."))
            continue
        rows.append((key, value if value is dataclasses.MISSING else _plain(value), f.metadata.get("doc", "")))
    return rows
