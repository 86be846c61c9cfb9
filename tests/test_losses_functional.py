import itertools

import _loss_oracles as oracle
import pytest
import torch

from wsi_ncmi.losses import functional as LF
from wsi_ncmi.losses.functional import Direction, Normalization, Reduction

DIRECTIONS: list[Direction] = ["centroid_to_output", "output_to_centroid"]
NORMALIZATIONS: list[Normalization] = ["num_classes", "num_classes_minus_one"]
REDUCTIONS: list[Reduction] = ["mean_of_ratios", "ratio_of_means"]


def _simplex(n: int, k: int, seed: int, scale: float = 2.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(scale * torch.randn(n, k, generator=g, dtype=torch.float64), dim=-1)


def test_sigmax_matches_definition():
    z = torch.randn(4, 6, dtype=torch.float64) * 5
    got = LF.sigmax(z)
    for i in range(4):
        torch.testing.assert_close(got[i], oracle.sigmax(z[i]))


def test_sigmax_is_stable_for_extreme_scores():
    z = torch.tensor([[1e4, -1e4, 0.0], [-1e30, -1e30, -1e30]])
    p = LF.sigmax(z)
    assert torch.isfinite(p).all()
    torch.testing.assert_close(p.sum(-1), torch.ones(2))


@pytest.mark.parametrize("method", ["elementwise", "matmul", "matmul64", "auto"])
def test_pairwise_kl_matches_loop(method):
    a, b = _simplex(5, 7, 0), _simplex(3, 7, 1)
    got = LF.pairwise_kl(a, b, method=method)
    want = torch.tensor(
        [[oracle.kl(a[i], b[j]) for j in range(3)] for i in range(5)], dtype=torch.float64
    )
    torch.testing.assert_close(got, want.double(), rtol=1e-9, atol=1e-12)


def test_pairwise_kl_forms_agree_in_float32_class_space():
    a, b = _simplex(64, 10, 2).float(), _simplex(10, 10, 3).float()
    ew = LF.pairwise_kl(a, b, method="elementwise")
    mm = LF.pairwise_kl(a, b, method="matmul")
    torch.testing.assert_close(mm, ew, rtol=1e-4, atol=1e-5)


def test_pairwise_kl_high_dim_near_uniform_needs_elementwise_or_float64():
    # The m-dim feature space: sigmax of tempered unit vectors is close to uniform.
    m = 2048
    feats = torch.nn.functional.normalize(torch.randn(32, m, dtype=torch.float64), dim=-1)
    a = LF.sigmax(feats / 0.2)
    b = LF.sigmax(torch.nn.functional.normalize(torch.randn(4, m, dtype=torch.float64), dim=-1))
    exact = LF.pairwise_kl(a, b, method="elementwise")  # float64 reference
    ew32 = LF.pairwise_kl(a.float(), b.float(), method="elementwise").double()
    mm64 = LF.pairwise_kl(a.float(), b.float(), method="matmul64").double()
    mm32 = LF.pairwise_kl(a.float(), b.float(), method="matmul").double()
    rel = lambda x: float(((x - exact).abs() / exact).max())  # noqa: E731
    assert rel(ew32) < 1e-3
    assert rel(mm64) < 1e-3
    # The float32 matmul form cancels catastrophically here; auto must not pick it.
    assert rel(mm32) > 10 * rel(ew32)
    torch.testing.assert_close(LF.pairwise_kl(a.float(), b.float()).double(), ew32)


@pytest.mark.parametrize(
    ("direction", "normalization"), list(itertools.product(DIRECTIONS, NORMALIZATIONS))
)
def test_terms_match_loop(direction, normalization):
    p, q = _simplex(6, 4, 4), _simplex(4, 4, 5)
    y = torch.tensor([0, 1, 2, 3, 1, 1])
    cmi = LF.cmi_terms(p, q, y)
    sep = LF.separation_terms(p, q, y, direction, normalization=normalization)
    for i in range(6):
        assert float(cmi[i]) == pytest.approx(oracle.kl(p[i], q[int(y[i])]), rel=1e-10)
        want = oracle.separation(p[i], q, int(y[i]), direction, normalization)
        assert float(sep[i]) == pytest.approx(want, rel=1e-10)


@pytest.mark.parametrize(
    ("direction", "normalization", "reduction"),
    list(itertools.product(DIRECTIONS, NORMALIZATIONS, REDUCTIONS)),
)
def test_ncmi_loss_matches_loop(direction, normalization, reduction):
    p, q = _simplex(5, 3, 6), _simplex(3, 3, 7)
    y = torch.tensor([0, 2, 1, 1, 0])
    loss, cmi, gam = LF.ncmi_loss(
        p, q, y, direction=direction, normalization=normalization, reduction=reduction
    )
    want = oracle.ncmi_loss(p, q, y, direction, normalization, reduction)
    assert (float(loss), float(cmi), float(gam)) == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize(
    ("direction", "normalization", "reduction"),
    list(itertools.product(DIRECTIONS, NORMALIZATIONS, REDUCTIONS)),
)
def test_ncmi_loss_gradcheck(direction, normalization, reduction):
    z = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    q = _simplex(3, 3, 8)
    y = torch.tensor([0, 1, 2, 1])

    def fn(logits):
        return LF.ncmi_loss(
            LF.sigmax(logits),
            q,
            y,
            direction=direction,
            normalization=normalization,
            reduction=reduction,
        )[0]

    assert torch.autograd.gradcheck(fn, (z,))


def test_class_centroids_and_dataset_estimators_match_loop():
    p = _simplex(12, 5, 9)
    y = torch.tensor([0, 1, 1, 3, 3, 3, 0, 1, 0, 3, 1, 0])  # classes 2 and 4 absent
    torch.testing.assert_close(LF.class_centroids(p, y, 5), oracle.centroids(p, y, 5))
    for direction, normalization in itertools.product(DIRECTIONS, NORMALIZATIONS):
        cmi, gam, ratio = LF.ncmi(p, y, 5, direction, normalization=normalization)
        want_cmi, want_gam = oracle.dataset_terms(p, y, direction, normalization)
        assert float(cmi) == pytest.approx(want_cmi, rel=1e-10)
        assert float(gam) == pytest.approx(want_gam, rel=1e-10)
        assert float(ratio) == pytest.approx(want_cmi / (want_gam + 1e-8), rel=1e-9)
        assert float(LF.cmi(p, y, 5)) == pytest.approx(want_cmi, rel=1e-10)


def test_cmi_is_non_negative_and_zero_at_centroid():
    for seed in range(5):
        p = _simplex(20, 6, seed)
        y = torch.randint(0, 4, (20,), generator=torch.Generator().manual_seed(seed))
        assert float(LF.cmi(p, y, 4)) >= 0.0
        assert float(LF.cmi_terms(p, _simplex(4, 6, seed + 50), y).min()) >= -1e-12
    q = _simplex(4, 6, 11)
    y = torch.tensor([0, 1, 2, 3, 2, 0])
    p = q[y]
    assert float(LF.cmi_terms(p, q, y).abs().max()) < 1e-12
    assert float(LF.cmi(p, y, 4)) < 1e-12


def test_q_step_is_the_cmi_minimiser():
    p = _simplex(40, 5, 12)
    y = torch.arange(40) % 3
    q_start = _simplex(3, 5, 13)
    q_star = LF.class_centroids(p, y, 3)
    best = float(LF.cmi_terms(p, q_star, y).mean())
    assert best < float(LF.cmi_terms(p, q_start, y).mean())
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        noise = 0.05 * torch.randn(q_star.shape, generator=g, dtype=torch.float64)
        q_other = (q_star + noise).clamp_min(1e-6)
        q_other = q_other / q_other.sum(-1, keepdim=True)
        assert float(LF.cmi_terms(p, q_other, y).mean()) >= best - 1e-12


@pytest.mark.parametrize(
    ("direction", "reduction"), list(itertools.product(DIRECTIONS, REDUCTIONS))
)
def test_finite_with_one_hot_outputs_and_batch_of_one(direction, reduction):
    q = LF.smoothed_onehot_anchors(4)
    for z in (torch.tensor([[1e4, 0.0, 0.0, 0.0]]), torch.tensor([[0.0, -1e4, 1e4, 5.0]])):
        z = z.requires_grad_(True)
        for p in (torch.softmax(z, -1), LF.sigmax(z)):
            loss, cmi, gam = LF.ncmi_loss(
                p, q, torch.tensor([1]), direction=direction, reduction=reduction
            )
            (grad,) = torch.autograd.grad(loss, z)
            assert torch.isfinite(torch.stack([loss, cmi, gam])).all()
            assert torch.isfinite(grad).all()
    # Outputs exactly on every centroid: separation of the own class is excluded, ratio finite.
    p = torch.tensor([[1.0, 0.0, 0.0]])
    loss, _, _ = LF.ncmi_loss(p, p.repeat(3, 1), torch.tensor([0]))
    assert torch.isfinite(loss)
    assert torch.isfinite(torch.stack(LF.ncmi(p, torch.tensor([0]), 3))).all()


def test_invariance_to_class_relabelling():
    p, q = _simplex(9, 4, 14), _simplex(4, 4, 15)
    y = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3, 3])
    perm = torch.tensor([2, 0, 3, 1])  # class c becomes perm[c]
    inverse = torch.argsort(perm)
    for reduction in REDUCTIONS:
        base = LF.ncmi_loss(p, q, y, reduction=reduction)[0]
        # Relabel classes and permute the output coordinates and centroid rows consistently.
        q_perm = q[inverse][:, inverse]
        moved = LF.ncmi_loss(p[:, inverse], q_perm, perm[y], reduction=reduction)[0]
        torch.testing.assert_close(moved, base)
    # Dataset estimators use empirical centroids: relabelling alone changes nothing.
    torch.testing.assert_close(torch.stack(LF.ncmi(p, perm[y], 4)), torch.stack(LF.ncmi(p, y, 4)))


def test_fp32_under_autocast():
    z = torch.randn(8, 5).bfloat16()
    q = LF.smoothed_onehot_anchors(5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        p = LF.sigmax(z)
        loss, _, _ = LF.ncmi_loss(p, q, torch.arange(8) % 5)
    assert p.dtype == torch.float32
    assert loss.dtype == torch.float32


def test_anchors():
    a = LF.smoothed_onehot_anchors(4, 0.1)
    torch.testing.assert_close(a.sum(-1), torch.ones(4))
    assert float(a[2, 2]) == pytest.approx(0.9 + 0.025)
    r = LF.reference_anchors(3, 8, 10.0)
    assert r.shape == (3, 8)
    assert torch.equal(r.argmax(-1), torch.arange(3))
    assert torch.equal(LF.nearest_centroid(r, r), torch.arange(3))
