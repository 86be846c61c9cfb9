import math

import _loss_oracles as oracle
import pytest
import torch

from wsi_ncmi.errors import ConfigError
from wsi_ncmi.losses import CMICLoss, build_loss
from wsi_ncmi.losses import functional as LF

C = 3
Z = torch.tensor(
    [[2.0, -1.0, 0.5], [0.1, 0.2, 3.0], [-2.0, 1.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64
)
Y = torch.tensor([0, 2, 0, 1])


def _log_softmax_loop(z):
    m = max(float(v) for v in z)
    lse = m + math.log(sum(math.exp(float(v) - m) for v in z))
    return [float(v) - lse for v in z]


def _ce_loop(z, y, weights=None):
    num = den = 0.0
    for i in range(len(y)):
        w = 1.0 if weights is None else weights[int(y[i])]
        num += -w * _log_softmax_loop(z[i])[int(y[i])]
        den += w
    return num / den


def test_ce():
    assert float(build_loss("ce")(Z, Y).loss) == pytest.approx(_ce_loop(Z, Y), rel=1e-10)


def test_weighted_ce_uses_inverse_frequency():
    counts = [6, 1, 3]
    loss = build_loss("weighted_ce", class_counts=counts)
    weights = [10 / (3 * n) for n in counts]
    torch.testing.assert_close(loss.weight, torch.tensor(weights))
    assert float(loss(Z, Y).loss) == pytest.approx(_ce_loop(Z, Y, weights), rel=1e-6)
    with pytest.raises(ConfigError):
        build_loss("weighted_ce", class_counts=[1])


def test_focal_matches_definition_and_reduces_to_ce():
    for gamma in (0.0, 2.0):
        got = float(build_loss("focal", gamma=gamma)(Z, Y).loss)
        want = 0.0
        for i in range(len(Y)):
            log_p = _log_softmax_loop(Z[i])[int(Y[i])]
            want += -((1 - math.exp(log_p)) ** gamma) * log_p
        assert got == pytest.approx(want / len(Y), rel=1e-10)
    assert float(build_loss("focal", gamma=0.0)(Z, Y).loss) == pytest.approx(_ce_loop(Z, Y))


def test_label_smoothing_matches_definition():
    eps = 0.2
    got = float(build_loss("label_smoothing", smoothing=eps)(Z, Y).loss)
    want = 0.0
    for i in range(len(Y)):
        log_p = _log_softmax_loop(Z[i])
        target = [(1 - eps) * (c == int(Y[i])) + eps / C for c in range(C)]
        want += -sum(t * lp for t, lp in zip(target, log_p, strict=True))
    assert got == pytest.approx(want / len(Y), rel=1e-10)


def test_squentropy_matches_definition():
    out = build_loss("squentropy")(Z, Y)
    square = sum(
        sum(float(Z[i, c]) ** 2 for c in range(C) if c != int(Y[i])) / (C - 1)
        for i in range(len(Y))
    ) / len(Y)
    assert float(out.loss) == pytest.approx(_ce_loop(Z, Y) + square, rel=1e-10)
    assert float(out.terms["square"]) == pytest.approx(square, rel=1e-10)


# Random centroids may peak on another class: the Q-step's collapse check then warns.
@pytest.mark.filterwarnings("ignore::wsi_ncmi.losses.centroids.CentroidCollapseWarning")
def test_cmic_is_ce_plus_lambda_cmi_minus_beta_gamma():
    loss = build_loss(
        "cmic", num_classes=C, cmi_weight=0.7, gamma_weight=0.3, schedule={"warmup_steps": 0}
    ).eval()
    assert isinstance(loss, CMICLoss)
    q = torch.softmax(torch.randn(C, C), -1)
    loss.state.centroids.copy_(q)
    out = loss(Z, Y)
    p = torch.softmax(Z, -1)
    _, cmi, gam = oracle.ncmi_loss(
        p, q.double(), Y, "centroid_to_output", "num_classes", "mean_of_ratios"
    )
    assert float(out.loss) == pytest.approx(_ce_loop(Z, Y) + 0.7 * cmi - 0.3 * gam, rel=1e-6)
    assert loss.needs_epoch_pass
    # The alternating schedule applies: warm-up keeps the centroids, then the damped Q-step.
    sums, counts = LF.class_sums(p, Y, C)
    assert not loss.q_step(sums, counts, epoch=0).applied
    assert loss.q_step(sums, counts, epoch=1).applied


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("ce", {}),
        ("weighted_ce", {"class_counts": [2, 1, 1]}),
        ("focal", {"gamma": 2.0}),
        ("label_smoothing", {}),
        ("squentropy", {}),
        ("cmic", {"num_classes": C}),
    ],
)
def test_gradcheck(name, kwargs):
    loss = build_loss(name, **kwargs).eval()
    z = Z.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: loss(t, Y).loss, (z,))


def test_fp32_under_autocast():
    z = Z.bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for name, kwargs in [("ce", {}), ("focal", {}), ("cmic", {"num_classes": C})]:
            assert build_loss(name, **kwargs)(z, Y).loss.dtype == torch.float32
