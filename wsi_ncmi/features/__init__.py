"""Patch features: encoder registry, streaming extraction on Lightning, HDF5 store.

The ``wsi-extract`` path, in the order a slide meets it:

* :mod:`~wsi_ncmi.features.config`: ``ExtractConfig``, the settings and their checks;
* :mod:`~wsi_ncmi.features.run`: the batch (shards, report, rounds until every slide is done);
* :mod:`~wsi_ncmi.features.plan`: which slides, one checked ``SlideJob`` per coords file;
* :mod:`~wsi_ncmi.features.resume`: whether a finished features file can be kept;
* :mod:`~wsi_ncmi.features.predict_rounds`: one ``Trainer.predict`` over the claimable slides;
* :mod:`~wsi_ncmi.features.datamodule` and :mod:`~wsi_ncmi.features.loader`: each rank's
  slides, locked as the DataLoader reaches them, and the DataLoader's health;
* :mod:`~wsi_ncmi.features.read` (and :mod:`~wsi_ncmi.features.gpu_decode`): patches read
  from the slide in batches;
* :mod:`~wsi_ncmi.features.encode`: the encoder's forward pass and the writer callback;
* :mod:`~wsi_ncmi.features.writer`, :mod:`~wsi_ncmi.features.schema`,
  :mod:`~wsi_ncmi.features.provenance`: the HDF5 file, its layout and its sources;
* :mod:`~wsi_ncmi.features.store`: the readers training uses (re-exported here).

Beside it: :mod:`~wsi_ncmi.features.encoders` (the registry; local checkpoints hashed by
:mod:`~wsi_ncmi.features.weights_hash`) and :mod:`~wsi_ncmi.features.foreign` with
:mod:`~wsi_ncmi.features.foreign_checks` (TRIDENT/CLAM files registered without
re-extraction).
"""

from wsi_ncmi.features.store import (
    FEATURES_SCHEMA,
    FEATURES_SCHEMA_VERSION,
    FeatureBag,
    feature_path,
    load_bag,
    read_feature_attrs,
    read_features,
)

__all__ = [
    "FEATURES_SCHEMA",
    "FEATURES_SCHEMA_VERSION",
    "FeatureBag",
    "feature_path",
    "load_bag",
    "read_feature_attrs",
    "read_features",
]
