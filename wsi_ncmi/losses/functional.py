"""Pure tensor math of the NCMI loss: output maps, KL divergences, centroids, estimators.

Notation (shapes use these letters):

* ``N``: samples in the batch (or in the dataset, for the estimators);
* ``C``: number of classes;
* ``K``: dimension of the output distribution: ``K = C`` for class-logit heads, ``K = m``
  for the feature head;
* ``p``: outputs, ``(N, K)``, each row a probability vector;
* ``q``: centroids, ``(C, K)``, each row a probability vector;
* ``y``: integer class labels, ``(N,)``, in ``[0, C)``.

Definitions (Ye et al. 2026; Yang et al. 2025):

* ``KL(a ‖ b) = Σ_k a_k (log a_k − log b_k)``;
* ``CMI = E[KL(P_X ‖ Q_Y)]``, the intra-class concentration, estimated by the batch mean;
* ``Γ = E[(1/Z) Σ_{c ≠ Y} D_c]`` with ``D_c = KL(Q_c ‖ P_X)`` (direction
  ``"centroid_to_output"``, the authors' code) or ``KL(P_X ‖ Q_c)``
  (``"output_to_centroid"``), and ``Z = C`` (``"num_classes"``, the authors' code) or
  ``C − 1`` (``"num_classes_minus_one"``);
* ``NCMI = CMI / Γ``.

Numerics: every function computes in at least float32 (half-precision inputs are upcast;
float64 inputs stay float64 so that ``gradcheck`` works) with autocast disabled, and
returns that dtype. Logarithms of probabilities use ``log(max(p, PROB_EPS))``, so exact
zeros (one-hot-like outputs) give finite values: a zero entry contributes ``0`` to
``Σ p log p`` and at most ``−log(PROB_EPS) ≈ 27.6`` nats to a KL term. Ratios divide by
``denominator + RATIO_EPS``. With these two rules every function is finite for finite
inputs.
"""

from wsi_ncmi.losses.divergence import (
    MATMUL_AUTO_MAX_DIM,
    PROB_EPS,
    RATIO_EPS,
    Direction,
    KLMethod,
    Normalization,
    Reduction,
    cmi_terms,
    kl_rows,
    log_sigmax,
    ncmi_loss,
    pairwise_kl,
    safe_log,
    separation_terms,
    sigmax,
)
from wsi_ncmi.losses.estimators import (
    centroids_from_sums,
    class_centroids,
    class_sums,
    cmi,
    gamma,
    ncmi,
    nearest_centroid,
    reference_anchors,
    smoothed_onehot_anchors,
)

__all__ = [
    "MATMUL_AUTO_MAX_DIM",
    "PROB_EPS",
    "RATIO_EPS",
    "Direction",
    "KLMethod",
    "Normalization",
    "Reduction",
    "centroids_from_sums",
    "class_centroids",
    "class_sums",
    "cmi",
    "cmi_terms",
    "gamma",
    "kl_rows",
    "log_sigmax",
    "ncmi",
    "ncmi_loss",
    "nearest_centroid",
    "pairwise_kl",
    "reference_anchors",
    "safe_log",
    "separation_terms",
    "sigmax",
    "smoothed_onehot_anchors",
]
