"""How a job's config is read: dataclass fields declared with `option` (help text and range checks), filled from
defaults, then a YAML file (`--config`), then CLI flags; every value typed and range-checked by `validate`, which
also runs the config's own `check()`. A ConfigError names the flag and the fix, before any Ray or MLflow work.
`absolute` and `resolve_tracking_uri` resolve path values the same way in every process that reads a config.

Why a small hand-written layer and not pydantic (installed with Ray and MLflow) plus tyro or jsonargparse (a new
dependency): docs/configuration.md, "Why this config code".
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import os
import types
import typing
from dataclasses import field
from pathlib import Path
from typing import Any, Sequence

import yaml


class ConfigError(ValueError):
    """A config value a user must change; the message names the flag and the fix."""


def option(default: Any, doc: str, **checks: Any) -> Any:
    """A config field with its help text and range checks (min, max, gt, choices)."""
    return field(default=default, metadata={"doc": doc, **checks})


def flag_name(name: str) -> str:
    """The field's flag: class_ (a Python keyword with a trailing underscore) is --class."""
    return "--" + name.rstrip("_").replace("_", "-")


def field_type(cls: type, f: dataclasses.Field) -> type:
    hint = typing.get_type_hints(cls)[f.name]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def coerce(cls: type, f: dataclasses.Field, value: Any, source: str) -> Any:
    kind = field_type(cls, f)
    if f.default is None and (value is None or str(value).strip().lower() in ("auto", "none", "null", "")):
        return None  # a field whose default is unset (e.g. --conditional: auto) can be unset again
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("true", "yes", "1", "on"):
                return True
            if text in ("false", "no", "0", "off"):
                return False
            raise ValueError(value)
        if kind is int and isinstance(value, float) and not value.is_integer():
            raise ValueError(value)
        if kind is str and isinstance(value, dict):  # a YAML block: search: {lr: loguniform(1e-4,1e-3), nz: [32, 64]}
            return " ".join(f"{key}={','.join(map(str, v)) if isinstance(v, list) else v}" for key, v in value.items())
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{flag_name(f.name)} ({source}): {value!r} is not a valid {kind.__name__}; "
            f"{f.metadata['doc']}"
        ) from None


def validate(config: Any) -> Any:
    """Raise ConfigError naming the first field outside its documented range."""
    for f in dataclasses.fields(config):
        value, meta = getattr(config, f.name), f.metadata
        name = flag_name(f.name)
        if value is None and f.default is None:  # unset: the job decides (auto), nothing to range-check
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{name}={value} must be a finite number")
        problems = []
        if "choices" in meta and value not in meta["choices"]:
            problems.append(f"one of {', '.join(map(str, meta['choices']))}")
        if "min" in meta and value < meta["min"]:
            problems.append(f">= {meta['min']}")
        if "gt" in meta and not value > meta["gt"]:
            problems.append(f"> {meta['gt']}")
        if "max" in meta and value > meta["max"]:
            problems.append(f"<= {meta['max']}")
        if "lt" in meta and not value < meta["lt"]:
            problems.append(f"< {meta['lt']}")
        if problems:
            raise ConfigError(f"{name}={value} is out of range: it must be {' and '.join(problems)} ({meta['doc']})")
    if hasattr(config, "check"):
        config.check()
    return config


def parse(cls: type, argv: Sequence[str] | None = None, description: str = "") -> Any:
    """Defaults <- YAML file (--config) <- CLI flags; unknown keys and out-of-range values raise ConfigError."""
    parser = argparse.ArgumentParser(description=description or cls.__doc__)
    parser.add_argument("--config", help="YAML file with field: value pairs (flags override it).")
    for f in dataclasses.fields(cls):
        help_text = f.metadata["doc"].replace("%", "%%")  # argparse expands %-formats in help
        if field_type(cls, f) is bool:
            parser.add_argument(flag_name(f.name), dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                                help=f"{help_text} (default: {'auto' if f.default is None else f.default})")
        else:
            parser.add_argument(flag_name(f.name), dest=f.name, default=None, metavar=f.name.rstrip("_").upper(),
                                help=f"{help_text} (default: {'auto' if f.default is None else f.default})")
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        raise ConfigError(_unknown_flags(unknown, [flag_name(f.name) for f in dataclasses.fields(cls)]))

    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    if args.config:
        values.update(_read_yaml(args.config, cls, fields))
    for name, f in fields.items():
        given = getattr(args, name)
        if given is not None:
            values[name] = coerce(cls, f, given, "command line")
    return validate(cls(**values))


def _read_yaml(path: str, cls: type, fields: dict[str, dataclasses.Field]) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"--config {path}: no such file") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"--config {path}: not valid YAML ({error})") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"--config {path}: expected a mapping of field: value pairs")
    values = {}
    for key, value in loaded.items():
        name = str(key).replace("-", "_")
        if name not in fields:
            raise ConfigError(f"--config {path}: unknown field {key!r}; valid fields are {', '.join(fields)}")
        values[name] = coerce(cls, fields[name], value, f"in {path}")
    return values


def to_dict(config: Any) -> dict[str, Any]:
    """Plain dict for Ray's train_loop_config and MLflow params."""
    return dataclasses.asdict(config)


def from_dict(cls: type, values: dict[str, Any]) -> Any:
    return validate(cls(**values))


def _unknown_flags(unknown: list[str], flags: list[str]) -> str:
    """Names each flag this job does not have, with the nearest one it does."""
    named = []
    for given in (arg for arg in unknown if arg.startswith("-")):
        flag = given.split("=", 1)[0]
        close = difflib.get_close_matches(flag, flags, n=1)
        named.append(f"{flag}" + (f" (did you mean {close[0]}?)" if close else ""))
    return (f"unknown flag{'s' if len(named) > 1 else ''}: {', '.join(named) or ' '.join(unknown)}; run with --help "
            f"for the list")


def absolute(path: str) -> str:
    """Local paths become absolute so Ray workers (other cwd) see the same place; URIs stay as they are."""
    return path if "://" in path else str(Path(path).expanduser().resolve())


def resolve_tracking_uri(given: str) -> str:
    """--tracking-uri as every job reads it: the flag, else MLFLOW_TRACKING_URI, else sqlite:///mlruns.db; a
    relative sqlite path made absolute, so every process that gets it finds the same file."""
    tracking = given or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlruns.db"
    if tracking.startswith("sqlite:///") and not tracking.startswith("sqlite:////"):
        tracking = "sqlite:///" + absolute(tracking.removeprefix("sqlite:///"))
    return tracking
