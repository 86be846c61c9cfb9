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
* ``build_loss(name, num_classes=C)`` works for every registered loss (``ncmi_mil``
  sizes its feature head from the first batch when ``feature_dim`` is not given).
* Losses that keep centroids expose ``loss.centroid_state`` and ``loss.q_step(...)``;
  ``loss.needs_epoch_pass`` says whether a pass over the training set is due at each epoch
  end. In a plain PyTorch loop call :func:`epoch_end` (it handles eval mode); with
  Lightning add :class:`wsi_ncmi.losses.callbacks.CentroidUpdate`,
  :class:`~wsi_ncmi.losses.callbacks.NCMIDiagnostics` and
  :class:`~wsi_ncmi.losses.callbacks.EscapeMonitor` (``wsi_ncmi.losses.callbacks`` imports
  Lightning and is not re-exported here).
* Running state (centroids, feature centre, step counts) moves only on gradient-carrying
  calls in training mode, so a validation pass never moves it, even without ``eval()``.
* :func:`fit_prior_rule` fits the prior-aware decision rule on validation outputs.

The math lives in :mod:`wsi_ncmi.losses.functional` as pure functions.
"""

from wsi_ncmi.losses.base import ClassificationLoss, LossHost, LossOutput
from wsi_ncmi.losses.baselines import (
    CMICLoss,
    CrossEntropyLoss,
    FocalLoss,
    LabelSmoothingLoss,
    SquentropyLoss,
    WeightedCrossEntropyLoss,
)
from wsi_ncmi.losses.centroids import CentroidCollapseWarning, CentroidReport, CentroidState
from wsi_ncmi.losses.decision import PriorRule, fit_prior_rule
from wsi_ncmi.losses.diagnostics import NCMIMetric
from wsi_ncmi.losses.epoch import epoch_end, update_centroids
from wsi_ncmi.losses.escape import SeparationEscapeWarning
from wsi_ncmi.losses.ncmi import NCMILoss, NCMIMILLoss
from wsi_ncmi.losses.options import AnchorSpec, CentroidSchedule, NCMIForm
from wsi_ncmi.losses.registry import build_loss, get_loss_factory, list_losses, register_loss

__all__ = [
    "AnchorSpec",
    "CMICLoss",
    "CentroidCollapseWarning",
    "CentroidReport",
    "CentroidSchedule",
    "CentroidState",
    "ClassificationLoss",
    "CrossEntropyLoss",
    "FocalLoss",
    "LabelSmoothingLoss",
    "LossHost",
    "LossOutput",
    "NCMIForm",
    "NCMILoss",
    "NCMIMILLoss",
    "NCMIMetric",
    "PriorRule",
    "SeparationEscapeWarning",
    "SquentropyLoss",
    "WeightedCrossEntropyLoss",
    "build_loss",
    "epoch_end",
    "fit_prior_rule",
    "get_loss_factory",
    "list_losses",
    "register_loss",
    "update_centroids",
]
