"""Multiple-instance aggregators: bags of patch features to slide logits."""

from wsi_ncmi.mil.abmil import GatedAttentionMIL, MILOutput
from wsi_ncmi.mil.registry import build_aggregator, list_aggregators, register_aggregator

__all__ = [
    "GatedAttentionMIL",
    "MILOutput",
    "build_aggregator",
    "list_aggregators",
    "register_aggregator",
]
