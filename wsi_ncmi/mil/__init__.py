"""Multiple-instance aggregators: bags of patch features to slide logits.

Importing this package registers the built-in aggregators (their modules are imported
here, and their decorators fill :data:`wsi_ncmi.mil.registry.AGGREGATORS`).
"""

from wsi_ncmi.mil import clam_sb, dsmil, pooling, transmil  # noqa: F401  (registration)
from wsi_ncmi.mil.abmil import GatedAttentionMIL
from wsi_ncmi.mil.base import Aggregator, MILOutput
from wsi_ncmi.mil.registry import (
    aggregator_embedding_dim,
    build_aggregator,
    check_aggregator,
    list_aggregators,
    register_aggregator,
)

__all__ = [
    "Aggregator",
    "GatedAttentionMIL",
    "MILOutput",
    "aggregator_embedding_dim",
    "build_aggregator",
    "check_aggregator",
    "list_aggregators",
    "register_aggregator",
]
