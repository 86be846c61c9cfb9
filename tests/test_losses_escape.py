"""The class-logit escape: the toy computation of docs/ncmi.md and its run-time check."""

import math

import pytest
import torch

from wsi_ncmi.losses import functional as LF
from wsi_ncmi.losses.escape import escape_reason, prior_mix, shared_output_ncmi

# Label mix of the demo cohort (python -m wsi_ncmi.demo): negative, itc, micro, macro.
DEMO_COUNTS = [56, 10, 15, 19]


def _corner(k: int) -> torch.Tensor:
    p = torch.zeros(4, dtype=torch.float64)
    p[k] = 1.0
    return p


def test_a_simplex_corner_beats_the_honest_label_ignoring_output():
    """One output shared by every slide: the corner's Γ explodes and its loss is lowest."""
    anchors = LF.smoothed_onehot_anchors(4, 0.1)
    corner_loss, corner_cmi, corner_gamma = shared_output_ncmi(_corner(0), anchors, DEMO_COUNTS)
    mix_loss, mix_cmi, mix_gamma = shared_output_ncmi(
        prior_mix(anchors, DEMO_COUNTS), anchors, DEMO_COUNTS
    )
    # The figures quoted in docs/ncmi.md.
    assert corner_gamma == pytest.approx(17.21, abs=0.01)
    assert corner_loss == pytest.approx(0.120, abs=0.001)
    assert mix_loss == pytest.approx(1.270, abs=0.001)
    # The escape: CMI gets worse (the corner fits no class but negative) ...
    assert corner_cmi > mix_cmi
    # ... yet the ratio drops tenfold because Γ grows without bound.
    assert corner_gamma > 15 * mix_gamma
    assert corner_loss < mix_loss / 10
    # Every corner beats the honest mix, whatever the labels.
    for k in range(4):
        assert shared_output_ncmi(_corner(k), anchors, DEMO_COUNTS)[0] < mix_loss


def test_the_bounded_direction_has_no_such_escape():
    """With KL(P ‖ Q_c) the separation is bounded by the anchors' smoothing."""
    anchors = LF.smoothed_onehot_anchors(4, 0.1)
    _, _, corner_gamma = shared_output_ncmi(
        _corner(0), anchors, DEMO_COUNTS, direction="output_to_centroid"
    )
    assert corner_gamma < -math.log(0.1 / 4) + 1e-9


def test_the_feature_head_bounds_every_output_coordinate():
    """|z| ≤ 1/T, so P_k ≥ σ(−1/T) / (m σ(1/T)) and KL(Q_c ‖ P) stays finite."""
    temperature, m = 0.5, 64
    z = torch.nn.functional.normalize(torch.randn(1000, m), dim=-1) / temperature
    p = LF.sigmax(z)
    floor = torch.sigmoid(torch.tensor(-1 / temperature)) / (
        m * torch.sigmoid(torch.tensor(1 / temperature))
    )
    assert float(p.min()) >= float(floor)


def test_escape_reason_fires_on_the_signature_only():
    rising = [0.9, 1.5, 3.0, 6.0, 11.0]
    reason = escape_reason(rising, [1.0] * 5)
    assert reason is not None
    assert "ncmi_mil" in reason
    # Healthy runs: predictions vary, or Γ does not grow, or too few epochs.
    assert escape_reason(rising, [1.0, 1.0, 2.5, 2.7, 3.0]) is None
    assert escape_reason([0.9, 1.0, 1.1, 1.0, 1.1], [1.0] * 5) is None
    assert escape_reason(rising[:2], [1.0] * 2) is None
    # Epochs without validation (NaN) never count as constant.
    assert escape_reason(rising, [math.nan] * 5) is None
