"""The flag-spelling layer of the ``wsi-*`` commands: argv rewritten into the parser's own.

Dashes and underscores, a left-out section or unit suffix, ``--no-NAME``, a bare
true/false flag, a list given as several words, older spellings (``aliases``) and
``--config NAME`` of a packaged config are all rewritten here, before jsonargparse parses
(:func:`~wsi_ncmi.cli.common.parse`).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence


def _hint(action: argparse.Action) -> object:
    """The type hint of a jsonargparse option, ``X`` for ``X | None``."""
    import typing

    hint = getattr(action, "_typehint", None)
    args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    return args[0] if len(args) == 1 and type(None) in typing.get_args(hint) else hint


def _is_bool(action: argparse.Action) -> bool:
    return _hint(action) is bool


def _is_sequence(action: argparse.Action) -> bool:
    return getattr(_hint(action), "__origin__", None) in (list, tuple)


#: Unit suffixes an option name may be given without (``--thumb_size`` = ``--thumb_size_px``).
UNIT_SUFFIXES = ("", "_px", "_s", "_um2")


def resolve_option(known: Mapping[str, argparse.Action], name: str) -> str | None:
    """The parser option that ``name`` (``--a-b``, ``--a_b``, ``--section.a_b``) spells.

    Dashes and underscores are interchangeable; a name may leave out its section
    (``--target_mpp`` = ``--grid.target_mpp``) and its unit suffix (:data:`UNIT_SUFFIXES`)
    as long as exactly one option fits.

    Args:
        known: The parser's option strings and their actions.
        name: An option name with its leading dashes.

    Returns:
        The option string, or ``None`` when no single option fits.
    """
    if name in known:
        return name
    bare = name[2:].replace("-", "_")
    for suffix in UNIT_SUFFIXES:
        hits = [opt for opt in known if opt[2:].rsplit(".", 1)[-1] == bare + suffix]
        if len({id(known[opt]) for opt in hits}) == 1:
            return hits[0]
    return None


def packaged_configs(argv: Sequence[str]) -> list[str]:
    """Let ``--config NAME`` name a packaged config when no file ``NAME`` exists here.

    ``--config camelyon17/abmil_ncmi.yaml`` and the README's
    ``--config configs/camelyon17/abmil_ncmi.yaml`` then work from any directory, with the
    wheel installed (:func:`wsi_ncmi.packaged.resolve_packaged`).

    Args:
        argv: The command line.

    Returns:
        The command line with such ``--config`` values replaced by the packaged file's path.
    """
    from wsi_ncmi.packaged import resolve_packaged

    out: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        i += 1
        if token == "--":
            out.extend(argv[i - 1 :])
            break
        if token == "--config" and i < len(argv):
            out += [token, resolve_packaged(argv[i], "configs")]
            i += 1
        elif token.startswith("--config="):
            out.append("--config=" + resolve_packaged(token.split("=", 1)[1], "configs"))
        else:
            out.append(token)
    return out


def normalize_argv(
    parser: argparse.ArgumentParser, argv: Sequence[str], aliases: Mapping[str, str] | None = None
) -> list[str]:
    """Rewrite older or looser flag spellings into the parser's own.

    Rules, per option token (``--name`` or ``--name=value``):

    * ``--config NAME`` may name a packaged config (:func:`packaged_configs`);
    * ``aliases`` renames (``{"--keep-pen": "--tissue.reject_pen=false"}``);
    * :func:`resolve_option` finds the option (dashes, section and unit suffix);
    * ``--no-NAME`` becomes ``--NAME=false`` for a true/false option;
    * a true/false option without a value gets ``true``;
    * a list option followed by several words takes them all (``--redo a b``).

    Args:
        parser: The parser whose options are the targets.
        argv: The command line.
        aliases: Older spellings and what they mean now (a value after ``=`` included),
            keyed by their dash spelling.

    Returns:
        The rewritten command line.
    """
    known = parser._option_string_actions
    aliases = aliases or {}
    argv = packaged_configs(argv) if "--config" in known else list(argv)
    out: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        i += 1
        if token == "--":
            out.extend(argv[i - 1 :])
            break
        if not token.startswith("--"):
            out.append(token)
            continue
        name, eq, value = token.partition("=")
        renamed = aliases.get(name) or aliases.get(name.replace("_", "-"), name)
        name, eq2, alias_value = renamed.partition("=")
        if eq2:
            eq, value = "=", alias_value
        negated = resolve_option(known, "--" + name[5:]) if name[:5] in ("--no-", "--no_") else None
        name = resolve_option(known, name) or name
        if name not in known and negated and _is_bool(known[negated]) and not eq:
            name, eq, value = negated, "=", "false"
        action = known.get(name)
        if action is not None and _is_bool(action) and not eq:
            follows = argv[i].lower() if i < len(argv) else ""
            if follows not in ("true", "false", "yes", "no", "1", "0"):
                eq, value = "=", "true"
        elif action is not None and _is_sequence(action) and not eq:
            words: list[str] = []
            while i < len(argv) and not argv[i].startswith("-"):
                words.append(argv[i])
                i += 1
            if len(words) > 1 or (words and not words[0].startswith("[")):
                eq, value = "=", "[" + ", ".join(words) + "]"
            else:
                out.append(name)
                out.extend(words)
                continue
        out.append(f"{name}{eq}{value}")
    return out


__all__ = ["UNIT_SUFFIXES", "normalize_argv", "packaged_configs", "resolve_option"]
