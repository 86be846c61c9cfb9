"""One convention for every ``wsi-*`` command: exit codes, Ctrl-C, flag spellings, configs.

Every command's ``main(argv)`` goes through :func:`run_cli`, which turns the package's
exceptions (:mod:`wsi_ncmi.errors`) into one table of exit codes (:data:`EXIT_CODES_HELP`)
and Ctrl-C into a one-line resume hint and exit code 130. Parsers are jsonargparse parsers
(:func:`new_parser`) whose flags are generated from the stages' own dataclasses, each
spelled as its config key; :func:`~wsi_ncmi.cli.argv.expand_argv` refuses other spellings
(:data:`RENAMED`: the options renamed in this release) with a one-line error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from wsi_ncmi.cli.argv import expand_argv

if TYPE_CHECKING:
    from jsonargparse import ArgumentParser, Namespace

T = TypeVar("T")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_MISSING_INPUTS = 3
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = """\
exit codes (the same for every wsi-* command):
  0    success: every item ok, skipped (already done) or without tissue
  1    some items failed (listed in the run report), or the run stopped at a failure
       (--skip_errors false, a dead DataLoader worker, NaN/inf values, a corrupt file)
  2    bad arguments or configuration (ConfigError, ManifestError, MissingMppError)
  3    missing inputs: features not extracted or encoder weights unavailable
  130  interrupted (Ctrl-C): rerun the same command to resume
"""

CONVENTIONS_HELP = """\
conventions: --config FILE.yaml loads options (flags given after it win); --print_config
prints the resolved options as YAML, which --config reads back. Each option has one
spelling, its key in --print_config (--grid.target_mpp, --out_dir); a true/false option
given alone means true (--progress false turns one off); a list option takes several
words (--redo a b).
"""
#: The conventions of a command without options files (``python -m wsi_ncmi.demo``).
SPELLING_HELP = """\
conventions: each option has one spelling; a true/false option given alone means true
(--progress false turns one off).
"""

RESUME_HINT = "rerun the same command to resume (finished slides and cells are skipped)"

#: Options renamed in this release, per command, and their spelling now (a value after a
#: space included). Each is an error naming the new spelling (:func:`~wsi_ncmi.cli.argv.
#: misspelling`), not an alias. To be removed in the next release: the options are then
#: simply unknown.
RENAMED = {
    "wsi-tile --out": "--out_dir",
    "wsi-tile --slides_dir": "--slide_dir",
    "wsi-tile --keep-pen": "--tissue.reject_pen false",
    "wsi-tile --keep-black": "--tissue.reject_black false",
    "wsi-tile --mpp": "--mpp_override",
    "wsi-tile --report": "--report_path",
    "wsi-extract --out": "--out_dir",
    "wsi-extract --slides_dir": "--slide_dir",
    "wsi-extract --coords": "--coords_dir",
    "wsi-extract --no-wait": "--wait_locked false",
    "wsi-extract --coords-hash": "--expect_coords_hash",
    "wsi-extract --compile": "--compile_model",
    "wsi-train --out": "--out_dir",
    "wsi-train --slides_dir": "--data.slide_dir",
    "wsi-predict --out": "--out_dir",
    "wsi-predict --model": "--models",
    "wsi-bench --out": "--output_root",
    "wsi-bench --workers": "--jobs",
    "wsi-bench --manifest": "--data.manifest",
    "wsi-bench --slides_dir": "--data.slide_dir",
    "wsi-bench --slides": "--data.slide_dir",
    "wsi-bench --features": "--data.features_root",
    "wsi-bench --encoder": "--data.encoder",
    "wsi-bench --seeds": "--sweep.seeds",
    "wsi-bench --quick": "--config configs/bench/synthetic_quick.yaml",
    "wsi-synth-cohort --quiet": "--progress false",
    "wsi-synth-cohort --out": "--out_dir",
    "wsi-import-features --out": "--out_dir",
    "wsi-export-model --out": "--out_dir",
    "python -m wsi_ncmi.demo --out": "--out_dir",
    "python -m wsi_ncmi.demo --slides-per-center": "--slides_per_center",
    "python -m wsi_ncmi.demo --no-progress": "--progress false",
}


def renamed_for(prog: str) -> dict[str, str]:
    """``{old spelling: new spelling}`` of one command's renamed options (:data:`RENAMED`)."""
    pairs = ([*key.rsplit(" ", 1), new] for key, new in RENAMED.items())
    return {old: new for command, old, new in pairs if command == prog}


def renamed_help(prog: str) -> str:
    """The ``--help`` paragraph listing a command's renamed options (empty if none)."""
    renamed = renamed_for(prog)
    lines = ["renamed in this release (the old spelling is an error that names the new one):"]
    lines += [f"  {old:<24} {new}" for old, new in renamed.items()]
    return "\n".join(lines) + "\n" if renamed else ""


def exit_code(err: BaseException) -> int:
    """The exit code of an exception that ended a command (see :data:`EXIT_CODES_HELP`).

    Args:
        err: The exception.

    Returns:
        ``3`` for missing features or weights, ``2`` for bad arguments or configuration
        (including parse errors), ``1`` for every other :class:`~wsi_ncmi.errors.WsiNcmiError`
        (a failed item, a stopped batch), ``130`` for :class:`KeyboardInterrupt`.

    Raises:
        TypeError: ``err`` is none of these (a bug: the caller re-raises it).
    """
    from wsi_ncmi.errors import (
        ConfigError,
        ManifestError,
        MissingFeaturesError,
        MissingMppError,
        WeightsUnavailableError,
        WsiNcmiError,
    )

    if isinstance(err, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(err, MissingFeaturesError | WeightsUnavailableError):
        return EXIT_MISSING_INPUTS
    if isinstance(err, ConfigError | ManifestError | MissingMppError | argparse.ArgumentError):
        return EXIT_USAGE
    if isinstance(err, WsiNcmiError):
        return EXIT_FAILED
    raise TypeError(f"no exit code for {type(err).__name__}: {err}")


_LABELS = {EXIT_FAILED: "failed", EXIT_USAGE: "error", EXIT_MISSING_INPUTS: "missing input"}


def run_cli(prog: str, body: Callable[[], int], *, resume_hint: str = RESUME_HINT) -> int:
    """Run a command's body under the shared exit-code table.

    Args:
        prog: Command name for messages (``wsi-tile``).
        body: Parses the arguments, runs the command and returns its exit code.
        resume_hint: What to do after Ctrl-C (one line).

    Returns:
        ``body()``'s code, or the code of the exception it raised (:func:`exit_code`); the
        exception is printed as one line on stderr, without a traceback. Exceptions that
        are not the package's (bugs) propagate with their traceback.
    """
    try:
        return body()
    except SystemExit as done:
        # --help, --print_config and argparse errors exit; so does Lightning's graceful
        # shutdown after Ctrl-C (sys.exit(1) while handling the KeyboardInterrupt).
        if not isinstance(done.__context__, KeyboardInterrupt):
            return done.code if isinstance(done.code, int) else int(done.code is not None)
    except KeyboardInterrupt:
        pass
    except Exception as err:
        try:
            code = exit_code(err)
        except TypeError:
            raise err from None
        kind = "" if isinstance(err, argparse.ArgumentError) else f"{type(err).__name__}: "
        print(f"{prog}: {_LABELS[code]}: {kind}{err}", file=sys.stderr)
        return code
    print(f"\n{prog}: interrupted; {resume_hint}", file=sys.stderr)
    return EXIT_INTERRUPTED


def new_parser(
    prog: str,
    description: str,
    *,
    epilog: str = "",
    config_file: bool = True,
    conventions: str = CONVENTIONS_HELP,
) -> ArgumentParser:
    """A jsonargparse parser with ``--config``/``--print_config`` and the shared epilog.

    Args:
        prog: Command name.
        description: One paragraph on what the command does.
        epilog: Command-specific help shown before the conventions and exit codes.
        config_file: Add ``--config FILE.yaml`` (and with it jsonargparse's
            ``--print_config``); off for a command that adds its own (``wsi-bench``: the
            bench parser's ``--config``, and a ``--print_config`` of the checked config).
        conventions: The help paragraph on spellings and options files.

    Returns:
        A ``jsonargparse.ArgumentParser`` that raises ``ArgumentError`` instead of exiting.
    """
    from jsonargparse import ActionConfigFile, ArgumentParser, DefaultHelpFormatter

    class Formatter(argparse.RawDescriptionHelpFormatter, DefaultHelpFormatter):
        """Keep the epilog's line breaks."""

    import textwrap

    parts = [epilog, renamed_help(prog), conventions, EXIT_CODES_HELP]
    parser = ArgumentParser(
        prog=prog,
        description=textwrap.fill(description, width=88),
        epilog="\n".join(part for part in parts if part),
        formatter_class=Formatter,
        exit_on_error=False,
        allow_abbrev=False,  # one spelling: no prefix of a flag either
        print_config="--print_config" if config_file else None,
    )
    if config_file:
        parser.add_argument(
            "--config",
            action=ActionConfigFile,
            help="YAML file of options (repeatable; later files and flags win)",
        )
    return parser


def parse(
    parser: ArgumentParser, argv: Sequence[str] | None, *, instantiate: bool = True
) -> Namespace:
    """Parse ``argv`` (default: ``sys.argv[1:]``) after :func:`expand_argv`.

    Args:
        parser: A :func:`new_parser` parser (its ``prog`` names its :data:`RENAMED` options).
        argv: The command line.
        instantiate: Turn nested dataclass groups into instances.

    Returns:
        The parsed namespace.

    Raises:
        ConfigError: An option spelled otherwise than the parser spells it.
    """
    argv = sys.argv[1:] if argv is None else argv
    namespace = parser.parse_args(expand_argv(parser, argv, renamed_for(parser.prog)))
    return parser.instantiate(namespace) if instantiate else namespace


def fields_of(target: Callable[..., object], namespace: object) -> dict[str, object]:
    """The values in ``namespace`` named like the fields of a class or a function's options.

    Args:
        target: A dataclass (its fields name the keys), or a function (its keyword-only
            parameters name them).
        namespace: A parsed namespace.

    Returns:
        ``{name: value}`` for every such name the namespace has.
    """
    import inspect

    params = list(inspect.signature(target).parameters.values())
    if not isinstance(target, type):
        params = [p for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]
    values = dict(vars(namespace))
    return {p.name: values[p.name] for p in params if p.name in values}


def build_from(target: Callable[..., T], namespace: object, /, *args: object, **given: object) -> T:
    """``target(*args, **values)``: the :func:`fields_of` ``namespace``, then ``given``.

    Args:
        target: A dataclass, or a function whose keyword-only options the namespace sets.
        namespace: A parsed namespace.
        *args: ``target``'s positional arguments.
        **given: Values that replace the namespace's (or that it lacks).

    Returns:
        What ``target`` returns.
    """
    return target(*args, **(fields_of(target, namespace) | given))
