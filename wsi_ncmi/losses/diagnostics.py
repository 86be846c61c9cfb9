"""Dataset-level CMI, Γ and NCMI as a torchmetrics metric (synchronised under DDP)."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from wsi_ncmi.losses import functional as LF


class NCMIMetric(Metric):
    """Accumulates outputs ``P`` and labels, and computes the dataset CMI, Γ and NCMI.

    The centroids are the empirical class means of everything accumulated (on all
    processes: states are concatenated across ranks before :meth:`compute`).

    Args:
        num_classes: ``C``.
        direction: Separation direction, see
            :func:`~wsi_ncmi.losses.functional.separation_terms`.
        normalization: Separation normaliser.
    """

    full_state_update = False
    higher_is_better = False
    probs: list[Tensor]
    targets: list[Tensor]

    def __init__(
        self,
        num_classes: int,
        direction: LF.Direction = "centroid_to_output",
        normalization: LF.Normalization = "num_classes",
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.direction: LF.Direction = direction
        self.normalization: LF.Normalization = normalization
        self.add_state("probs", default=[], dist_reduce_fx="cat")
        self.add_state("targets", default=[], dist_reduce_fx="cat")

    def update(self, probs: Tensor, targets: Tensor) -> None:
        """Add a batch.

        Args:
            probs: ``(N, K)`` output distributions.
            targets: ``(N,)`` labels.
        """
        self.probs.append(probs.detach().float())
        self.targets.append(targets.detach().long())

    def compute(self) -> dict[str, Tensor]:
        """CMI, Γ and NCMI of everything accumulated.

        Returns:
            ``{"cmi", "gamma", "ncmi"}`` scalars (NaN if nothing was accumulated).
        """
        if not self.probs:
            nan = torch.tensor(float("nan"), device=self.device)
            return {"cmi": nan, "gamma": nan, "ncmi": nan}
        p, y = dim_zero_cat(self.probs), dim_zero_cat(self.targets)
        cmi, gamma, ncmi = LF.ncmi(
            p, y, self.num_classes, self.direction, normalization=self.normalization
        )
        return {"cmi": cmi, "gamma": gamma, "ncmi": ncmi}
