"""Plain data (YAML, JSON) typed into the configuration dataclasses, with one-line errors.

Used wherever a configuration is read back from data rather than from a command line:
``wsi-bench``'s YAML layers and its per-cell ``wsi-train`` sections, a run's saved
``config.json`` (``wsi-export-model``) and a model bundle's tiling record (``wsi-predict``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

from wsi_ncmi.errors import ConfigError

_T = TypeVar("_T")


def build(cls: type[_T], data: Any, where: str = "") -> _T:
    """Build dataclass ``cls`` (named ``where``) from a mapping, typing every value in it.

    Numbers convert (``1`` → ``1.0``, ``"5"`` → ``5``). Raises a :class:`ConfigError` that
    names the key: unknown, of the wrong type, or refused by the dataclass.
    """
    if not isinstance(data, Mapping | None):
        raise ConfigError(f"{where or 'config'} must be a mapping, got {data!r}")
    hints = _hints(cls)  # the fields, in order
    known(data or {}, list(hints), where or "config")
    values = {k: _typed(hints[k], v, f"{where}.{k}".lstrip(".")) for k, v in (data or {}).items()}
    try:
        return cls(**values)
    except (TypeError, ValueError) as err:  # a missing key, or the class's own checks
        raise ConfigError(f"{where or 'config'}: {err}") from err


def known(data: Mapping[str, Any], names: list[str], where: str, what: str = "keys") -> None:
    """Raise ``"<where> has unknown keys [...]; allowed: <names>"`` for keys not in ``names``."""
    unknown = sorted(set(data) - set(names), key=str)
    if unknown:
        raise ConfigError(f"{where} has unknown {what} {unknown}; allowed: {names}")


_hints: Callable[[type], dict[str, Any]] = functools.cache(typing.get_type_hints)


def _typed(hint: Any, value: Any, where: str) -> Any:
    """``value`` as a ``hint`` (see :func:`build`), or a ``ConfigError`` naming ``where``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return build(typing.cast(type, hint), value, where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        for option in options[:-1]:
            with contextlib.suppress(ConfigError):
                return _typed(option, value, where)
        return _typed(options[-1], value, where)
    if hint is Any or (origin is Literal and value in args) or type(value) is hint:
        return value
    if origin in (list, tuple) and isinstance(value, list | tuple):
        items = [_typed(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict and isinstance(value, Mapping):
        return {k: _typed(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if hint in (int, float, Path) and type(value) in (str, int):
        with contextlib.suppress(ValueError, TypeError):
            return hint(value)
    shown = origin if origin in (list, dict, tuple) else hint
    raise ConfigError(f"{where}: Expected a {shown}. Got value: {value}")


__all__ = ["build", "known"]
