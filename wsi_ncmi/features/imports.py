"""Moved: the CLAM/TRIDENT coords converter is :mod:`wsi_ncmi.tiling.imports` (it writes tilings).

This module re-exports it so that existing imports keep working.
"""

from wsi_ncmi.tiling.imports import import_external_coords

__all__ = ["import_external_coords"]
