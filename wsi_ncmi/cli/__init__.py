"""Thin command-line entry points, one module per ``wsi-*`` command.

The commands: ``wsi-tile``, ``wsi-extract``, ``wsi-train``, ``wsi-bench``,
``wsi-import-features`` and ``wsi-synth-cohort``. Each module has ``main(argv=None) ->
int`` that parses its arguments and calls one library function (:mod:`wsi_ncmi.tiling`,
:mod:`wsi_ncmi.features`, :mod:`wsi_ncmi.train`, :mod:`wsi_ncmi.bench`); heavy imports
happen inside ``main``. :mod:`wsi_ncmi.cli.common` holds what they share: the jsonargparse
parser over the stages' dataclasses, the flag spellings and one exit-code table applied
by ``run_cli`` (Ctrl-C: a resume hint, 130).
"""
