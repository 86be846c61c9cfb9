"""Thin command-line entry points: ``wsi-tile``, ``wsi-extract``, ``wsi-train``, ``wsi-bench``.

Each module has ``main(argv=None) -> int`` that parses its arguments and calls one library
function (:mod:`wsi_ncmi.tiling`, :mod:`wsi_ncmi.features`, :mod:`wsi_ncmi.train`,
:mod:`wsi_ncmi.bench`); heavy imports happen inside ``main``.
"""
