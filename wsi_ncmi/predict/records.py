"""What a model bundle's manifest says about the features its model takes.

``model.json`` records the encoder and the tiling of the training features
(:func:`wsi_ncmi.train.export.fold_manifest`). :class:`EncoderRecord` and
:class:`TilingRecord` are those records read back, typed, for ``wsi-predict``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from wsi_ncmi.errors import ConfigError
from wsi_ncmi.plaindata import build
from wsi_ncmi.tiling.grid import GridParams
from wsi_ncmi.tiling.tissue import TissueParams
from wsi_ncmi.train.bundle import BundleError


@dataclass(frozen=True)
class EncoderRecord:
    """The encoder of a model's training features.

    Attributes:
        name: Registry name (``wsi-extract --encoder``).
        identity_hash: The encoder spec's identity hash (``""`` if the features did not
            record it).
        out_dim: Feature width ``D``.
        random_init: Whether the encoder ran with random weights.
        dtype: Storage dtype of the features (``float16`` where not recorded).
    """

    name: str
    identity_hash: str
    out_dim: int
    random_init: bool = False
    dtype: str = "float16"

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EncoderRecord:
        """The record of a manifest's ``encoder`` object."""
        return cls(
            name=str(data["name"]),
            identity_hash=str(data.get("identity_hash") or ""),
            out_dim=int(data["out_dim"]),
            random_init=bool(data.get("random_init", False)),
            dtype=str(data.get("dtype", "float16")),
        )


@dataclass(frozen=True)
class TilingRecord:
    """The tiling of a model's training features (``None``: the features did not say).

    Attributes:
        target_mpp: Patch resolution in µm/px.
        patch_size_px: Patch side in pixels.
        grid: The grid parameters of the coordinates files.
        segmentation: Their tissue-detection parameters.
    """

    target_mpp: float | None
    patch_size_px: int | None
    grid: GridParams | None = None
    segmentation: TissueParams | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TilingRecord:
        """The record of a manifest's ``tiling`` object.

        Raises:
            BundleError: A grid or segmentation record this version cannot read.
        """
        mpp, size = data.get("target_mpp"), data.get("patch_size_px")
        grid, segmentation = data.get("grid"), data.get("segmentation")
        try:
            return cls(
                target_mpp=None if mpp is None else float(mpp),
                patch_size_px=None if size is None else int(size),
                grid=build(GridParams, grid, "tiling.grid") if grid else None,
                segmentation=build(TissueParams, segmentation, "tiling.segmentation")
                if segmentation
                else None,
            )
        except ConfigError as err:
            raise BundleError(
                f"model.json: unreadable tiling record {dict(data)!r}: {err}"
            ) from err


__all__ = ["EncoderRecord", "TilingRecord"]
