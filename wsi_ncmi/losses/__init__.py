"""Losses for classifiers: NCMI (Ye et al. 2026) and the baselines, behind one contract.

The contract every registered loss follows (:class:`ClassificationLoss`):

* ``loss = build_loss(name, **kwargs)``; ``list_losses()`` names them; a new loss is one
  class decorated with ``@register_loss("name")``.
* ``loss(outputs, targets) -> LossOutput(loss, terms)``: ``outputs`` is ``(N, C)`` class
  logits, or ``(N, m)`` raw features when ``loss.needs_class_head`` is ``False``;
  ``targets`` is ``(N,)`` int64; ``terms`` maps names (``"ce"``, ``"cmi"``, ``"gamma"``,
  ``"ncmi"``, ...) to detached scalars for logging. ``N = 1`` works.
* ``loss.output_dim(num_classes)``: width of the linear head the model must end in, or
  ``None`` when the loss wants the backbone features themselves.
* ``loss.predict(outputs) -> (N,)`` class indices, and ``loss.probabilities(outputs) ->
  (N, K)`` the distributions the CMI/Γ/NCMI diagnostics are computed on.
* Losses that keep centroids expose ``loss.centroid_state`` and ``loss.q_step(...)``;
  ``loss.needs_epoch_pass`` says whether :class:`wsi_ncmi.losses.callbacks.CentroidUpdate`
  must run a pass over the training set at each epoch end. Add that callback and
  :class:`wsi_ncmi.losses.callbacks.NCMIDiagnostics` to the Trainer (they live in
  ``wsi_ncmi.losses.callbacks``, which imports Lightning, and are not re-exported here).

The math lives in :mod:`wsi_ncmi.losses.functional` as pure functions.
"""

from wsi_ncmi.losses.base import ClassificationLoss, LossOutput
from wsi_ncmi.losses.baselines import (
    CMICLoss,
    CrossEntropyLoss,
    FocalLoss,
    LabelSmoothingLoss,
    SquentropyLoss,
    WeightedCrossEntropyLoss,
)
from wsi_ncmi.losses.centroids import CentroidCollapseWarning, CentroidReport, CentroidState
from wsi_ncmi.losses.diagnostics import NCMIMetric
from wsi_ncmi.losses.ncmi import NCMILoss
from wsi_ncmi.losses.registry import build_loss, get_loss_factory, list_losses, register_loss

__all__ = [
    "CMICLoss",
    "CentroidCollapseWarning",
    "CentroidReport",
    "CentroidState",
    "ClassificationLoss",
    "CrossEntropyLoss",
    "FocalLoss",
    "LabelSmoothingLoss",
    "LossOutput",
    "NCMILoss",
    "NCMIMetric",
    "SquentropyLoss",
    "WeightedCrossEntropyLoss",
    "build_loss",
    "get_loss_factory",
    "list_losses",
    "register_loss",
]
