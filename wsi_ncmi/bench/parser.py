"""The parser of ``wsi-bench``'s configuration: jsonargparse over :class:`BenchConfig`.

One parser serves the command line (:mod:`wsi_ncmi.cli.bench`) and the library
(:func:`wsi_ncmi.bench.parser.load_config`). Its options are the fields of
:class:`~wsi_ncmi.bench.config.BenchConfig` and of the dataclasses it embeds
(``--sweep.seeds``, ``--stats.bootstrap``, ``--prepare.grid.target_mpp``, ...), plus:

* ``--config FILE.yaml``: a bench config (``configs/bench/*.yaml``), repeatable;
* ``--quick``: apply the config's ``quick:`` section of dotted overrides;
* ``--set KEY=VALUE``: set any key, also inside the mapping-typed sections that have no
  flags of their own (``train.trainer.max_epochs``, ``prepare.extract.device``,
  ``quick``, ``sweep.splits.loho.kind``); the value is YAML. The key's option is set to
  the value as a whole (a section given as a mapping starts from its defaults), and the
  value is typed by the same parser as every other.

Layers: the dataclasses' defaults, then the ``--config`` files, then their ``quick``
section, then the other options in command-line order. ``--config`` and ``--quick``
are read first wherever they stand, so options always win over the file (as before the
bench moved to jsonargparse). The config's ``quick`` key has the flag
``--quick_section``: ``--quick`` is the switch.

Lists of losses and models are lists of dataclasses, which jsonargparse merges entry by
entry into a previous list of the same length (a new ``{name: transmil}`` would keep the
old ``abmil``'s ``kwargs``). Here a new list replaces the old one, whether it comes from
a file, ``--set`` or its flag (``--sweep.models``); ``--sweep.models+`` appends.
Mappings of dataclasses (``sweep.splits``) and sections given to their own flag
(``--sweep.split '{kind: fixed}'``) are updated key by key, as jsonargparse does.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import ActionConfigFile, ArgumentParser, Namespace

from wsi_ncmi.bench.config import BenchConfig
from wsi_ncmi.bench.typed import (
    dump_value,
    list_fields,
    locate,
    message,
    parse_override,
    set_dotted,
)
from wsi_ncmi.errors import ConfigError

_TRUE, _FALSE = ("true", "yes", "1", "on"), ("false", "no", "0", "off")


def add_config_arguments(parser: Any) -> None:
    """Add ``--config``, the :class:`BenchConfig` options, ``--quick`` and ``--set``.

    Args:
        parser: A ``jsonargparse.ArgumentParser`` without a ``--config`` option.
    """
    parser.add_argument(
        "--config",
        action=_ConfigFile,
        help="bench config YAML, e.g. configs/bench/*.yaml (repeatable; read before the "
        "other options wherever it stands, so they win)",
    )
    parser.add_class_arguments(BenchConfig, fail_untyped=True, sub_configs=True, skip={"quick"})
    parser.add_argument(
        "--quick_section",
        dest="quick",
        type=dict[str, Any],
        default={},
        metavar="MAPPING",
        help="the overrides that --quick applies, as dotted keys (the config's quick: "
        "section), e.g. '{sweep.seeds: [0, 1]}'",
    )
    parser.add_argument(
        "--quick",
        action=_Quick,
        nargs="?",
        const="true",
        default=argparse.SUPPRESS,
        metavar="BOOL",
        help="apply the config's quick: section (after --config, before the other options)",
    )
    parser.add_argument(
        "--set",
        action=_Set,
        default=argparse.SUPPRESS,
        metavar="KEY=VALUE",
        help="set any key to a YAML value, also inside the mapping sections, e.g. --set "
        "train.trainer.max_epochs=5 or --set 'sweep.split={kind: fixed}' (repeatable)",
    )


def parse_bench_args(parser: ArgumentParser, argv: Sequence[str]) -> Namespace:
    """Parse a command line with ``--config`` files first, then ``--quick``, then the rest.

    Args:
        parser: A parser with :func:`add_config_arguments`.
        argv: The command line (spelling rules already applied).

    Returns:
        The parsed namespace.

    Raises:
        ConfigError: Naming the key of a bad value, or the bad option.
    """
    argv = _layered(argv)
    try:
        return parser.parse_args(argv)
    except argparse.ArgumentError as err:
        raise ConfigError(_problem(parser, argv) or message(err)) from err


def config_from(parser: Any, namespace: Any) -> BenchConfig:
    """The checked :class:`BenchConfig` of a parsed namespace.

    Raises:
        ConfigError: A value the dataclasses or :func:`wsi_ncmi.bench.checks.validate`
            refuse.
    """
    from wsi_ncmi.bench.checks import validate

    try:
        values = parser.instantiate(namespace)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        names = [f.name for f in dataclasses.fields(BenchConfig)]
        data = {k: v for k, v in _plain(namespace).items() if k in names}
        raise ConfigError(locate(BenchConfig, data) or message(err)) from err
    config = BenchConfig(**{f.name: values[f.name] for f in dataclasses.fields(BenchConfig)})
    validate(config)
    return config


@functools.cache
def library_parser() -> ArgumentParser:
    """The parser of :func:`~wsi_ncmi.bench.parser.load_config` (no command-line extras)."""
    parser = ArgumentParser(prog="wsi-bench", exit_on_error=False, print_config=None)
    add_config_arguments(parser)
    return parser


def command_line(
    path: str | Path | None, overrides: dict[str, Any] | None, *, quick: bool
) -> list[str]:
    """The ``wsi-bench`` options of :func:`~wsi_ncmi.bench.parser.load_config`'s arguments.

    Raises:
        ConfigError: An override value YAML cannot hold.
    """
    argv = ["--config", str(path)] if path is not None else []
    argv += ["--quick=true"] if quick else []
    for key, value in (overrides or {}).items():
        try:
            argv += ["--set", f"{key}={dump_value(value)}"]
        except yaml.YAMLError as err:
            raise ConfigError(f"{key}: a value must be plain YAML data, got {value!r}") from err
    return argv


def apply_override(parser: Any, cfg: Any, key: str, value: Any) -> None:
    """Set ``key`` (dotted) to ``value`` in a namespace being parsed, typed by ``parser``.

    The key's longest prefix that is an option or a section of the parser is set as a
    whole: a section given as a mapping starts from its defaults; below a mapping-typed
    option (``train``, ``sweep.splits``) the value replaces one entry of the mapping.

    Raises:
        ConfigError: An unknown key, or a value of the wrong type, naming the key.
    """
    parts = key.split(".")
    defaults = parser.get_defaults()
    heads = [".".join(parts[:n]) for n in range(len(parts), 0, -1)]
    head = next((h for h in heads if h in defaults and h != "config"), None)
    if head is None:
        raise ConfigError(locate(BenchConfig, _nested(key, value)) or f"unknown key {key!r}")
    rest = key[len(head) + 1 :]
    if rest:
        current = _plain(cfg.get(head))
        if current is None:
            current = {}
        if not isinstance(current, dict):
            raise ConfigError(f"cannot set {key!r}: {head!r} is {current!r}, not a mapping")
        set_dotted(current, rest, value)
        value = current
    data = _nested(head, copy.deepcopy(value))  # jsonargparse turns dataclasses into namespaces
    try:
        full = parser.parse_object(data, namespace=_emptied_lists(data))
    except argparse.ArgumentError as err:
        raise ConfigError(locate(BenchConfig, _nested(head, value)) or message(err)) from err
    cfg[head] = full[head]


@functools.cache
def _list_keys() -> tuple[str, ...]:
    return tuple(list_fields(BenchConfig))


def _emptied_lists(data: Any) -> Namespace:
    """Empty lists for the ``list[dataclass]`` options that ``data`` sets.

    Read over them, a new list replaces the old one instead of being merged into it
    entry by entry (jsonargparse's way with lists of the same length).
    """
    emptied = Namespace()
    for key in _list_keys():
        node = data
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None:
            emptied[key] = []
    return emptied


def _nested(key: str, value: Any) -> dict[str, Any]:
    """``{"a": {"b": value}}`` for ``key = "a.b"``."""
    for part in reversed(key.split(".")):
        value = {part: value}
    return value


def _plain(value: Any) -> Any:
    """Plain data of a value in the namespace (dataclass values held as namespaces)."""
    if isinstance(value, Namespace):
        if "class_path" in value and "init_args" in value:  # a dataclass in a list or mapping
            return _plain(value["init_args"])
        return {k: _plain(v) for k, v in vars(value).items()}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return copy.deepcopy(value)


def _layered(argv: Sequence[str]) -> list[str]:
    """``argv`` with the ``--config`` options first, then ``--quick``, then the rest."""
    configs: list[str] = []
    quick: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        name, eq, _ = token.partition("=")
        if token == "--":
            rest.extend(argv[i:])
            break
        i += 1
        if name[2:] in _list_keys():  # a new list, not merged into the old one (see --set)
            if not eq and i < len(argv):
                token, i = f"{token}={argv[i]}", i + 1
            rest += ["--set", token[2:]]
            continue
        bucket = {"--config": configs, "--quick": quick}.get(name, rest)
        bucket.append(token)
        if bucket is not rest and not eq and i < len(argv):
            follows = argv[i]
            if name == "--config" or follows.lower() in (*_TRUE, *_FALSE):
                bucket.append(follows)
                i += 1
    return configs + quick + rest


def _problem(parser: Any, argv: Sequence[str]) -> str | None:
    """Where a refused ``--config`` file or ``--set`` value is wrong, if :func:`locate` says.

    jsonargparse checks some keys only once every option is read, when it no longer
    knows which file or override a value came from.
    """
    names = {f.name for f in dataclasses.fields(BenchConfig)}
    others = set(vars(parser.get_defaults())) - names  # the command's own options
    pairs = [t.partition("=")[::2] for t in argv if t.startswith(("--config=", "--set="))]
    pairs += [(k, v) for k, v in itertools.pairwise(argv) if k in ("--config", "--set")]
    for option, value in pairs:
        try:
            data = _config_data(value) if option == "--config" else _nested(*parse_override(value))
        except ConfigError:
            continue
        if isinstance(data, dict):
            data = {k: v for k, v in data.items() if k not in others}
        found = locate(BenchConfig, data)
        if found:
            return f"{value}: {found}" if option == "--config" and Path(value).is_file() else found
    return None


def _config_data(value: str) -> Any:
    """The data of a ``--config`` file or YAML text.

    Raises:
        ConfigError: A path that cannot be read (jsonargparse's message says why).
    """
    path = Path(value)
    try:
        data = yaml.safe_load(path.read_text() if path.is_file() else value)
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(str(err)) from err
    if isinstance(data, str) and not path.is_file():
        raise ConfigError(f"cannot read {value!r}")
    return data


class _ConfigFile(ActionConfigFile):
    """``--config``: jsonargparse's, but a file's list of losses or models is new."""

    def __call__(self, parser: Any, cfg: Any, values: Any, option_string: Any = None) -> None:
        try:
            data = _config_data(str(values))
        except ConfigError:
            data = None  # jsonargparse says what is wrong
        for key in _emptied_lists(data).keys():
            cfg[key] = []
        super().__call__(parser, cfg, values, option_string)


class _Set(argparse.Action):
    """``--set KEY=VALUE``: :func:`apply_override` in command-line order."""

    def __call__(self, parser: Any, cfg: Any, values: Any, option_string: Any = None) -> None:
        key, value = parse_override(str(values))
        apply_override(parser, cfg, key, value)


class _Quick(argparse.Action):
    """``--quick``: the ``quick:`` section's dotted overrides, applied in its order."""

    _typehint = bool  # a true/false option for the spelling rules (--quick, --no-quick)

    def __call__(self, parser: Any, cfg: Any, values: Any, option_string: Any = None) -> None:
        word = str(values).lower()
        if word not in (*_TRUE, *_FALSE):
            raise ConfigError(f"--quick must be true or false, got {values!r}")
        if word in _FALSE:
            return
        section = cfg.get("quick")
        if not isinstance(section, dict) or not section:
            files = [str(p) for p in cfg.get("config") or [] if p is not None]
            named = ", ".join(repr(f) for f in files) or "the config"
            raise ConfigError(f"--quick: {named} has no 'quick' section of overrides")
        for key, value in section.items():
            if str(key).split(".")[0] == "quick":
                raise ConfigError("quick: an override must not set 'quick' itself")
            apply_override(parser, cfg, str(key), copy.deepcopy(value))


def load_config(
    path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    *,
    quick: bool = False,
) -> BenchConfig:
    """Defaults, then the YAML file, then its ``quick`` section, then dotted overrides.

    The same parser as ``wsi-bench --config PATH [--quick] --set KEY=VALUE ...``
    (:mod:`wsi_ncmi.bench.parser`).

    Args:
        path: YAML file, or ``None`` for the defaults.
        overrides: ``{"dotted.key": value}`` applied after the file, in order.
        quick: Apply the file's ``quick`` overrides (``wsi-bench --quick``).

    Returns:
        The validated configuration.

    Raises:
        ConfigError: Unreadable file, unknown key, wrong type or invalid value.
    """
    parser = library_parser()
    argv = command_line(path, overrides, quick=quick)
    return config_from(parser, parse_bench_args(parser, argv))
