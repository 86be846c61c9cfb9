"""Patch features: encoder registry, streaming extraction on Lightning, HDF5 store."""

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
