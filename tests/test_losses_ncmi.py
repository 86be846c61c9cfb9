import inspect
import itertools
import warnings

import _loss_oracles as oracle
import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from wsi_ncmi.errors import ConfigError
from wsi_ncmi.images import MLP, LossClassifier, fit_classifier
from wsi_ncmi.losses import (
    CentroidCollapseWarning,
    ClassificationLoss,
    LossOutput,
    NCMILoss,
    build_loss,
    get_loss_factory,
    list_losses,
)
from wsi_ncmi.losses import functional as LF
from wsi_ncmi.losses.ncmi import Head
from wsi_ncmi.losses.options import CentroidSchedule

C = 4
HEADS = ["softmax", "sigmax", "feature"]
MODES = ["fixed", "alternating", "ema"]
#: The literal alternating algorithm: class means feed the loss from the first step.
LITERAL = CentroidSchedule(mode="alternating", warmup_epochs=0, warmup_steps=0, damping=1.0)


def _loss(head: Head = "sigmax", **kwargs) -> NCMILoss:
    if head == "feature":
        kwargs.setdefault("feature_dim", 6)
    return NCMILoss(C, head=head, **kwargs)


def _inputs(loss: NCMILoss, n: int, dtype=torch.float32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    dim = C if loss.needs_class_head else int(loss.feature_center.numel())
    return torch.randn(n, dim, generator=g, dtype=dtype), torch.arange(n) % C


VARIANTS = [
    # every output space with every centroid mode, reference options
    *({"head": h, "schedule": {"mode": m}} for h, m in itertools.product(HEADS, MODES)),
    # every separation direction x normaliser x reduction (sigmax, fixed anchors)
    *(
        {"form": {"direction": d, "normalization": n, "reduction": r}}
        for d, n, r in itertools.product(
            ["centroid_to_output", "output_to_centroid"],
            ["num_classes", "num_classes_minus_one"],
            ["mean_of_ratios", "ratio_of_means"],
        )
    ),
    {"head": "feature", "form": {"direction": "output_to_centroid", "reduction": "ratio_of_means"}},
    {
        "head": "softmax",
        "form": {"normalization": "num_classes_minus_one"},
        "schedule": {"mode": "ema"},
    },
]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(map(str, v.values())))
def test_gradcheck_every_variant(variant):
    loss = _loss(**variant).eval()
    # Moving centroids: start them away from the anchors.
    loss.state.centroids.copy_(torch.softmax(torch.randn_like(loss.state.centroids), -1))
    x, y = _inputs(loss, 3, torch.float64)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: loss(t, y).loss, (x,))


@pytest.mark.parametrize("reduction", ["mean_of_ratios", "ratio_of_means"])
def test_module_matches_loop_oracle(reduction):
    loss = _loss("sigmax", form={"reduction": reduction})
    z, y = _inputs(loss, 5, torch.float64)
    out = loss(z, y)
    p = torch.stack([oracle.sigmax(row) for row in z])
    q = LF.smoothed_onehot_anchors(C).double()
    want, cmi, gam = oracle.ncmi_loss(p, q, y, "centroid_to_output", "num_classes", reduction)
    assert float(out.loss) == pytest.approx(want, rel=1e-9)
    assert float(out.terms["cmi"]) == pytest.approx(cmi, rel=1e-9)
    assert float(out.terms["gamma"]) == pytest.approx(gam, rel=1e-9)
    assert float(out.terms["ncmi"]) == pytest.approx(cmi / gam, rel=1e-6)


@pytest.mark.parametrize(("head", "mode"), list(itertools.product(HEADS, MODES)))
def test_batch_of_one_slide_level(head, mode):
    loss = _loss(head, schedule={"mode": mode}).train()
    for step in range(3):
        x, _ = _inputs(loss, 1, seed=step)
        x.requires_grad_(True)
        out = loss(x, torch.tensor([step % C]))
        out.loss.backward()
        assert torch.isfinite(out.loss)
        assert torch.isfinite(x.grad).all()
        assert set(out.terms) == {"cmi", "gamma", "ncmi"}


def test_ema_centroids_move_towards_batch_means():
    loss = _loss("softmax", schedule={"mode": "ema", "ema_momentum": 0.5}).train()
    before = loss.state.centroids.clone()
    z = torch.randn(2, C, requires_grad=True)
    loss(z, torch.tensor([1, 1]))
    mean = torch.softmax(z.detach(), -1).mean(0)
    torch.testing.assert_close(loss.state.centroids[1], 0.5 * before[1] + 0.5 * mean)
    torch.testing.assert_close(loss.state.centroids[[0, 2, 3]], before[[0, 2, 3]])
    assert int(loss.state.steps) == 1
    loss.eval()
    loss(z, torch.tensor([0, 0]))  # no update in eval mode
    torch.testing.assert_close(loss.state.centroids[0], before[0])


def test_validation_without_no_grad_or_eval_never_moves_the_state():
    """Forgetting loss.eval() is harmless: only gradient-carrying calls update state."""
    loss = _loss("softmax", schedule={"mode": "ema", "ema_momentum": 0.5})
    assert loss.training
    before = loss.state.centroids.clone()
    with torch.no_grad():
        loss(torch.randn(3, C), torch.tensor([0, 1, 2]))  # a validation pass, loss in train()
    loss(torch.randn(3, C), torch.tensor([0, 1, 2]))  # plain tensors, no graph
    torch.testing.assert_close(loss.state.centroids, before)
    assert int(loss.state.steps) == 0


def test_alternating_schedule_warmup_and_damping():
    loss = _loss(
        "sigmax",
        schedule=CentroidSchedule(
            mode="alternating", warmup_epochs=2, warmup_steps=0, damping=0.1, damping_steps=0
        ),
    )
    assert loss.needs_epoch_pass
    assert not loss.state.needs_initial_pass
    anchors = loss.state.anchors.clone()
    means = torch.softmax(torch.randn(C, C) * 3, -1)
    means[torch.arange(C), torch.arange(C)] += 5.0
    means = means / means.sum(-1, keepdim=True)
    counts = torch.full((C,), 10.0)
    report = loss.q_step(means * 10, counts, epoch=0)
    assert not report.applied
    torch.testing.assert_close(loss.state.loss_centroids, anchors)
    torch.testing.assert_close(loss.state.class_means, means)
    report = loss.q_step(means * 10, counts, epoch=1)
    assert report.applied
    assert not report.collapsed
    torch.testing.assert_close(loss.state.loss_centroids, 0.9 * anchors + 0.1 * means)
    literal = _loss("sigmax", schedule=LITERAL)
    assert literal.state.needs_initial_pass


def test_fixed_mode_never_moves_the_loss_centroids():
    loss = _loss("sigmax")
    loss.q_step(torch.rand(C, C), torch.ones(C), epoch=5)
    torch.testing.assert_close(loss.state.loss_centroids, LF.smoothed_onehot_anchors(C))


def test_collapse_is_detected_and_reported():
    loss = _loss("sigmax", schedule=LITERAL)
    near_uniform = torch.full((C, C), 1.0 / C) + 1e-4 * torch.eye(C)
    # The pass before training moves the centroids onto well-separated class means ...
    loss.q_step(LF.smoothed_onehot_anchors(C) * 5, torch.full((C,), 5.0), epoch=-1)
    assert loss.state.centroids_moved()
    # ... and the next pass merges them while predicting one class.
    with pytest.warns(CentroidCollapseWarning, match="centroid collapse"):
        report = loss.q_step(
            near_uniform * 5,
            torch.full((C,), 5.0),
            epoch=0,
            predicted_counts=torch.tensor([20.0, 0, 0, 0]),
        )
    assert report.collapsed
    assert report.predicted_classes == pytest.approx(1.0)
    assert len(report.reasons) == 2


def test_feature_head_contract_and_prediction():
    loss = _loss("feature", feature_dim=8)
    assert loss.output_dim(C) is None
    assert not loss.needs_class_head
    assert loss.needs_epoch_pass
    loss.train()
    f = torch.randn(16, 8) + 3.0
    loss(f.requires_grad_(True), torch.arange(16) % C)
    f = f.detach()
    assert int(loss.feature_steps) == 1
    # Bias-corrected EMA: after one step the centre is exactly the batch mean.
    center = loss.feature_center / (1 - loss.center_decay)
    torch.testing.assert_close(center, f.mean(0))
    loss.eval()
    p = loss.probabilities(f)
    sums, counts = LF.class_sums(p, torch.arange(16) % C, C)
    loss.q_step(sums, counts, epoch=0)
    torch.testing.assert_close(loss.predict(f), LF.nearest_centroid(p, sums / counts[:, None]))


def test_class_head_predicts_argmax():
    loss = _loss("sigmax")
    z = torch.randn(7, C)
    assert torch.equal(loss.predict(z), z.argmax(-1))
    assert loss.output_dim(C) == C


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"head": "logits"}, "head must be one of ['softmax', 'sigmax', 'feature'], got 'logits'"),
        ({"form": {"direction": "both"}}, "form.direction must be one of "
         "['centroid_to_output', 'output_to_centroid'], got 'both'"),
        ({"schedule": {"mode": "kmeans"}},
         "schedule.mode must be one of ['fixed', 'alternating', 'ema'], got 'kmeans'"),
        ({"schedule": {"damping": 0.0}}, "schedule.damping must be in (0, 1], got 0.0"),
        ({"schedule": {"dampnig": 0.5}}, "schedule has no field 'dampnig' (did you mean "
         "'damping'?); it takes ['mode', 'warmup_epochs', 'warmup_steps', 'damping', "
         "'damping_steps', 'ema_momentum', 'collapse_distance_ratio', 'collapse_class_ratio']"),
        ({"schedule": "ema"}, "schedule must be a mapping of CentroidSchedule fields, got 'ema'"),
        ({"head": "feature", "feature_dim": 2},
         "head='feature' needs feature_dim >= num_classes (4), got 2"),
        ({"temperature": 0.0}, "temperature must be > 0, got 0.0"),
        ({"head": "feature", "feature_dim": 8, "anchors": {"kind": "smoothed_onehot"}},
         "anchors.kind='smoothed_onehot' needs a class head, not head='feature'"),
    ],
)  # fmt: skip
def test_invalid_configuration_is_rejected(kwargs, message):
    """Each bad value is refused with a message naming that option and the value given."""
    with pytest.raises(ConfigError) as info:
        NCMILoss(C, **kwargs)
    assert str(info.value) == message


def _minimal_kwargs(name: str) -> dict[str, object]:
    params = inspect.signature(get_loss_factory(name)).parameters
    kwargs: dict[str, object] = {}
    if "num_classes" in params:
        kwargs["num_classes"] = C
    if "class_counts" in params:
        kwargs["class_counts"] = [3, 1, 1, 5]
    return kwargs


@pytest.mark.parametrize("name", list_losses())
def test_every_registered_loss_follows_the_contract(name):
    loss = build_loss(name, **_minimal_kwargs(name))
    assert isinstance(loss, ClassificationLoss)
    width = C if loss.needs_class_head else 12
    assert loss.output_dim(C) == (C if loss.needs_class_head else None)
    z = torch.randn(5, width, requires_grad=True)
    y = torch.tensor([0, 1, 2, 3, 3])
    out = loss(z, y)
    assert isinstance(out, LossOutput)
    assert out.loss.ndim == 0
    out.loss.backward()
    assert z.grad is not None
    assert torch.isfinite(z.grad).all()
    assert all(v.ndim == 0 and not v.requires_grad for v in out.terms.values())
    assert loss.predict(z).shape == (5,)
    torch.testing.assert_close(loss.probabilities(z).sum(-1), torch.ones(5))
    one = loss(torch.randn(1, width), torch.tensor([2]))
    assert torch.isfinite(one.loss)


@pytest.mark.parametrize("name", list_losses())
def test_every_registered_loss_builds_from_num_classes_alone(name):
    """The README's drop-in swap: build_loss(name, num_classes=C) for every loss."""
    loss = build_loss(name, num_classes=C)
    width = loss.output_dim(C) or 12
    z = torch.randn(6, width, requires_grad=True)
    out = loss(z, torch.tensor([0, 1, 2, 3, 0, 1]))
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert loss.predict(z.detach()).shape == (6,)
    if loss.needs_class_head:
        with pytest.raises(ValueError, match=f"{C} classes"):
            loss(torch.randn(2, C + 1), torch.tensor([0, 1]))


def test_feature_head_without_feature_dim_is_sized_by_the_first_batch_and_reloads():
    loss = build_loss("ncmi_mil", num_classes=C)
    assert isinstance(loss, NCMILoss)
    f = torch.randn(8, 12, requires_grad=True)
    loss(f, torch.arange(8) % C).loss.backward()
    assert loss.state.anchors.shape == (C, 12)
    assert loss.feature_center.shape == (12,)
    fresh = build_loss("ncmi_mil", num_classes=C)
    assert isinstance(fresh, NCMILoss)
    fresh.load_state_dict(loss.state_dict())
    torch.testing.assert_close(fresh.feature_center, loss.feature_center)
    assert int(fresh.state.steps) == 1
    with pytest.raises(ValueError, match="width >= num_classes"):
        build_loss("ncmi_mil", num_classes=C)(torch.randn(2, C - 1), torch.tensor([0, 1]))


def test_unknown_loss_lists_the_choices():
    with pytest.raises(ConfigError, match="ncmi"):
        build_loss("ncmii")


# --- Lightning: the epoch-end Q-step and the collapse regression -------------------------


def _digits_module(**loss_kwargs):
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    y = torch.tensor(y)
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(len(y), generator=g)
    train, val = order[:1200], order[1200:]

    class Data(L.LightningDataModule):
        def train_dataloader(self):
            return DataLoader(TensorDataset(x[train], y[train]), batch_size=128, shuffle=True)

        def val_dataloader(self):
            return DataLoader(TensorDataset(x[val], y[val]), batch_size=600)

        test_dataloader = val_dataloader

    loss = build_loss("ncmi", num_classes=10, **loss_kwargs)
    return LossClassifier(MLP(64, (256, 256, 128)), 128, 10, loss, lr=0.1), Data()


def _fit(epochs, **loss_kwargs):
    L.seed_everything(0, verbose=False)
    model, data = _digits_module(**loss_kwargs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fit_classifier(model, data, 10, max_epochs=epochs)
    collapse_warnings = [w for w in caught if issubclass(w.category, CentroidCollapseWarning)]
    return model, result, collapse_warnings


def test_literal_alternating_collapses_and_is_reported(one_torch_thread):
    # Class means feed the loss from the first epoch (warmup 0, no damping): classes merge.
    _, result, caught = _fit(3, schedule=LITERAL)
    assert result.test["test/accuracy"] < 0.5
    assert result.collapsed_epochs
    assert caught


def test_default_alternating_schedule_trains_and_q_step_uses_eval_class_means(one_torch_thread):
    model, result, caught = _fit(3, schedule={"mode": "alternating"})
    assert result.test["test/accuracy"] > 0.85
    assert not result.collapsed_epochs
    assert not caught
    assert len(result.history) == 3
    assert all(h["cmi"] >= 0 and h["gamma"] > 0 for h in result.history)
    # The last Q-step's class means equal the class means of the training set in eval mode.
    data = model.trainer.datamodule
    model.eval()
    xs, ys = zip(*data.train_dataloader(), strict=True)
    with torch.no_grad():
        p = model.criterion.probabilities(model(torch.cat(xs)))
    torch.testing.assert_close(
        model.criterion.state.class_means, LF.class_centroids(p, torch.cat(ys), 10)
    )
