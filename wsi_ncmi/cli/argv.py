"""The command line of the ``wsi-*`` commands: one spelling per option, its config key.

An option is spelled as its key in ``--print_config`` (``--grid.target_mpp``,
``--out_dir``). :func:`expand_argv` applies the value syntax only (a true/false option
given alone means true, a list option takes several words, ``--config NAME`` names a
packaged config) and refuses every other spelling with a one-line
:class:`~wsi_ncmi.errors.ConfigError` naming the option's spelling (:func:`misspelling`):
nothing is guessed.
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


#: Unit suffixes that an older spelling may have left out (``--thumb_size``).
UNIT_SUFFIXES = ("", "_px", "_s", "_um2")


def resolve_option(known: Mapping[str, argparse.Action], name: str) -> str | None:
    """The one option that a looser ``name`` (``--a-b``, ``--b`` for ``--section.b``) meant.

    Used only to word the error (:func:`misspelling`): dashes for underscores, a left-out
    section (``--target_mpp`` for ``--grid.target_mpp``) or unit suffix
    (:data:`UNIT_SUFFIXES`), as long as exactly one option fits.

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


def _key(name: str) -> str:
    return "--" + name[2:].replace("-", "_")


def misspelling(
    known: Mapping[str, argparse.Action], name: str, renamed: Mapping[str, str]
) -> str | None:
    """The one-line error for an option name that is not the parser's spelling.

    Args:
        known: The parser's option strings and their actions.
        name: An option name with its leading dashes, not in ``known``.
        renamed: Options renamed in this release: ``{old: new}``, a value after a space
            included (``{"--keep-pen": "--tissue.reject_pen false"}``).

    Returns:
        ``"--out was renamed to --out_dir"``, ``"--target-mpp is spelled
        --grid.target_mpp"``, ``"--no-progress is spelled --progress false"``, or ``None``
        for an unknown name (the parser then refuses it).
    """
    new = {_key(old): spelling for old, spelling in renamed.items()}.get(_key(name))
    if new is not None:
        return f"{name} was renamed to {new}"
    if name[2:5] in ("no-", "no_"):
        negated = resolve_option(known, "--" + name[5:])
        if negated is not None and _is_bool(known[negated]):
            return f"{name} is spelled {negated} false"
    spelled = resolve_option(known, name)
    return None if spelled is None else f"{name} is spelled {spelled}"


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


def expand_argv(
    parser: argparse.ArgumentParser, argv: Sequence[str], renamed: Mapping[str, str] | None = None
) -> list[str]:
    """The command line in the parser's syntax, or an error for a spelling it does not have.

    Rules, per option token (``--name`` or ``--name=value``):

    * ``--config NAME`` may name a packaged config (:func:`packaged_configs`);
    * a true/false option without a value gets ``true``;
    * a list option followed by several words takes them all (``--redo a b``), and one
      value after ``=`` is a list of one (``--redo=a``);
    * a name the parser does not have but that :func:`misspelling` recognises (a renamed
      option, dashes, a left-out section or unit suffix, ``--no-NAME``) is an error.

    Args:
        parser: The parser whose options are the targets.
        argv: The command line.
        renamed: Options renamed in this release (see :func:`misspelling`).

    Returns:
        The command line, with values made explicit.

    Raises:
        ConfigError: An option spelled otherwise than the parser spells it.
    """
    from wsi_ncmi.errors import ConfigError

    known = parser._option_string_actions
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
        action = known.get(name)
        if action is None:
            error = misspelling(known, name, renamed or {})
            if error is not None:
                raise ConfigError(error)
        elif _is_bool(action) and not eq:
            follows = argv[i].lower() if i < len(argv) else ""
            if follows not in ("true", "false", "yes", "no", "1", "0"):
                eq, value = "=", "true"
        elif _is_sequence(action) and eq and not value.startswith("[") and value != "null":
            value = f"[{value}]"  # --redo=a: a list of one
        elif _is_sequence(action) and not eq:
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


__all__ = ["UNIT_SUFFIXES", "expand_argv", "misspelling", "packaged_configs", "resolve_option"]
