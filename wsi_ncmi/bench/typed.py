"""Dataclasses from plain mappings through jsonargparse, and dotted overrides.

jsonargparse checks every value (the bench parser in :mod:`wsi_ncmi.bench.parser`, and
:func:`build` for one dataclass such as a ``wsi-train`` section). This module adds what
it does not do: :func:`locate` says *where* a refused mapping is wrong (the item of a list
or mapping of dataclasses, the keys a section allows), :func:`set_dotted` sets a key
inside a mapping-typed option (``train.trainer.max_epochs``), and :func:`parse_override`
reads ``KEY=VALUE`` with a YAML value.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import re
import types
import typing
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import yaml

from wsi_ncmi.errors import ConfigError

_PARSER_KEY = re.compile(r'^Parser key "([^"]+)":\s*')

if TYPE_CHECKING:
    from _typeshed import DataclassInstance
    from jsonargparse import ArgumentParser

_T = TypeVar("_T", bound="DataclassInstance")


def message(err: BaseException, where: str = "") -> str:
    """The message of a jsonargparse error on one line, ``Parser key "k":`` as ``where.k:``."""
    text = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
    found = _PARSER_KEY.match(text)
    if found:
        return f"{join(where, found.group(1))}: {text[found.end() :]}"
    return f"{where}: {text}" if where else text


def join(where: str, key: str) -> str:
    """``where.key`` (``key`` alone at the top)."""
    return f"{where}.{key}" if where else key


_PARSERS: dict[type[Any], ArgumentParser] = {}


def _class_parser(cls: type[Any]) -> ArgumentParser:
    """A jsonargparse parser of one dataclass (made once per class)."""
    if cls not in _PARSERS:
        from jsonargparse import ArgumentParser

        parser: ArgumentParser = ArgumentParser(exit_on_error=False, print_config=None)
        parser.add_class_arguments(cls, fail_untyped=True, sub_configs=True)
        _PARSERS[cls] = parser
    return _PARSERS[cls]


def build(cls: type[_T], data: Any, where: str) -> _T:
    """Build dataclass ``cls`` from a mapping, typed by jsonargparse.

    Args:
        cls: A dataclass type.
        data: The mapping (``None``: all defaults).
        where: Dotted name of the section, for messages (``train.trainer``).

    Returns:
        The instance.

    Raises:
        ConfigError: Naming the key: an unknown key, a wrong type, or a value the
            dataclass itself refuses.
    """
    if data is not None and not isinstance(data, Mapping):
        raise ConfigError(f"{where} must be a mapping, got {data!r}")
    parser = _class_parser(cls)
    try:
        namespace = parser.parse_object(copy.deepcopy(dict(data or {})))
        values = parser.instantiate(namespace)
        return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls)})
    except argparse.ArgumentError as err:
        raise ConfigError(locate(cls, data, where) or message(err, where)) from err
    except (TypeError, ValueError) as err:  # the dataclass's own checks (__post_init__)
        raise ConfigError(message(err, where)) from err


def _item_class(hint: Any) -> tuple[str, type[Any]] | None:
    """``("field" | "list" | "dict", D)`` for ``D``, ``D | None``, ``list[D]``, ``dict[str, D]``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        return _item_class(options[0]) if len(options) == 1 else None
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return "field", hint
    item = args[-1] if origin in (list, dict) and args else None
    if isinstance(item, type) and dataclasses.is_dataclass(item):
        return ("list" if origin is list else "dict"), item
    return None


def list_fields(cls: type[Any], where: str = "") -> list[str]:
    """Dotted names of the ``list[dataclass]`` fields of ``cls`` and of its sections.

    jsonargparse merges such a list item by item into a previous list of the same
    length (an entry would keep the previous entry's other settings); the bench parser
    empties these lists before it reads a new one.
    """
    names = []
    for name, hint in typing.get_type_hints(cls).items():
        item = _item_class(hint)
        if item is not None and item[0] == "list":
            names.append(join(where, name))
        elif item is not None and item[0] == "field" and typing.get_origin(hint) is None:
            names += list_fields(item[1], join(where, name))
    return names


def _items(kind: str, value: Any) -> dict[str, Any]:
    """``{suffix of the item's name: item}`` of a field's value (nothing if not the kind)."""
    if kind == "list" and isinstance(value, list):
        return {f"[{i}]": v for i, v in enumerate(value)}
    if kind == "dict" and isinstance(value, Mapping):
        return {f".{k}": v for k, v in value.items()}
    return {"": value} if kind == "field" else {}


def locate(cls: type[Any], data: Any, where: str = "") -> str | None:
    """Where a mapping that jsonargparse refused for dataclass ``cls`` is wrong.

    jsonargparse names the option but neither the item of a list or mapping of
    dataclasses (``sweep.losses``, ``sweep.splits``) nor the keys a section allows. Only
    called after a refusal; the items are typed by :func:`build`.

    Args:
        cls: The dataclass.
        data: The refused mapping.
        where: Dotted name of ``data`` (``""``: the whole config).

    Returns:
        A message naming the key (``sweep.losses[2].kwargs: ...``, ``prepare has
        unknown keys ['x']; allowed: [...]``), or ``None`` when nothing is found.
    """
    if not isinstance(data, Mapping):
        return f"{where or 'config'} must be a mapping, got {data!r}"
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names), key=str)
    if unknown:
        return f"{where or 'config'} has unknown keys {unknown}; allowed: {names}"
    hints = typing.get_type_hints(cls)
    for name, value in data.items():
        item = _item_class(hints[name])
        if item is None or value is None:
            continue
        kind, item_cls = item
        for suffix, item_value in _items(kind, value).items():
            try:
                build(item_cls, item_value, join(where, name) + suffix)
            except ConfigError as err:
                return str(err)
    return None


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """Set ``data["a"]["b"] = value`` for ``key = "a.b"``, creating mappings as needed."""
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set {key!r}: {part!r} is {child!r}, not a mapping")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``"a.b=value"`` → ``("a.b", yaml.safe_load("value"))``.

    Raises:
        ConfigError: No ``=`` or unparsable value.
    """
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(
            f"--set expects KEY=VALUE (e.g. train.trainer.max_epochs=5), got {text!r}"
        )
    try:
        return key.strip(), yaml.safe_load(raw)
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {text!r}: value is not valid YAML: {err}") from err


def dump_value(value: Any) -> str:
    """``value`` as one line of YAML that :func:`parse_override` reads back equal."""
    text = yaml.safe_dump(
        value, default_flow_style=True, width=2**31, allow_unicode=True, sort_keys=False
    )
    return text.strip().removesuffix("\n...").strip()
