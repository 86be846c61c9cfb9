"""``ncmi_authors``: the authors' NCMI form, against a loop oracle written from its definition.

Also the collapse check's prediction criterion (no warning from predictions made with the
anchors, before any class means exist) and CLAM-SB's instance branch under a feature-head
loss (the class count reaches it although no class head is built).
"""

from __future__ import annotations

import math
import warnings

import _loss_oracles as oracle
import pytest
import torch

from wsi_ncmi.errors import ConfigError
from wsi_ncmi.losses import CentroidCollapseWarning, ClassificationLoss, NCMILoss, build_loss
from wsi_ncmi.losses import functional as LF
from wsi_ncmi.mil import build_aggregator
from wsi_ncmi.mil.clam_sb import ClamSB

C = 4
M = 7  # embedding width


def _authors_oracle(
    e: torch.Tensor, y: torch.Tensor, center: torch.Tensor, temperature: float
) -> float:
    """Mean over slides of KL(P_i ‖ Q̃_y) / ((1/C) Σ_{c≠y} KL(Q̃_c ‖ P_i)), by loops."""
    anchors = []
    for c in range(C):
        w = torch.zeros(M, dtype=torch.float64)
        w[c] = 10.0  # row c of the identity padded to width M, times 10
        anchors.append(oracle.sigmax(w))
    total = 0.0
    for i in range(e.shape[0]):
        z = e[i].double() - center.double()
        z = z / max(math.sqrt(float((z * z).sum())), 1e-12) / temperature
        p = oracle.sigmax(z)
        cmi = oracle.kl(p, anchors[int(y[i])])
        sep = sum(oracle.kl(anchors[c], p) for c in range(C) if c != int(y[i])) / C
        total += cmi / (sep + 1e-8)
    return total / e.shape[0]


def test_loss_matches_the_loop_oracle_and_the_anchors_never_move() -> None:
    loss = build_loss("ncmi_authors", num_classes=C, feature_dim=M, temperature=0.5)
    assert isinstance(loss, NCMILoss)
    g = torch.Generator().manual_seed(0)
    first = torch.randn(6, M, generator=g, dtype=torch.float64) + 2.0
    e = torch.randn(10, M, generator=g, dtype=torch.float64) + 2.0
    y = torch.arange(10) % C
    loss.train()
    # The centre and the anchors are float32 buffers, hence rel=2e-5 (float64 elsewhere).
    # A step centres by the EMA of the batches before it: none for the first step...
    out = loss(first.clone().requires_grad_(True), torch.arange(6) % C)
    zero = torch.zeros(M, dtype=torch.float64)
    assert float(out.loss.detach()) == pytest.approx(
        _authors_oracle(first, torch.arange(6) % C, zero, 0.5), rel=2e-5
    )
    # ... then the bias-corrected EMA, which after one step is that step's batch mean.
    out = loss(e.clone().requires_grad_(True), y)
    expected = _authors_oracle(e, y, first.mean(0), 0.5)
    assert float(out.loss.detach()) == pytest.approx(expected, rel=2e-5)
    anchors = LF.reference_anchors(C, M, 10.0)
    # An epoch-end pass refreshes the class means used for prediction, never the anchors.
    loss.eval()
    p = loss.probabilities(e)
    sums, counts = LF.class_sums(p, y, C)
    loss.q_step(sums, counts, epoch=0)
    torch.testing.assert_close(loss.state.loss_centroids, anchors)
    torch.testing.assert_close(loss.predict(e), LF.nearest_centroid(p, sums / counts[:, None]))


def test_only_the_authors_two_arguments_are_exposed() -> None:
    with pytest.raises(ConfigError, match="schedule"):
        build_loss("ncmi_authors", num_classes=C, schedule={"damping": 0.5})
    with pytest.raises(ConfigError, match="temperature"):
        build_loss("ncmi_authors", num_classes=C, temperature=0.0)
    with pytest.raises(ConfigError, match="center_decay"):
        build_loss("ncmi_authors", num_classes=C, center_decay=1.0)


def _collapse_warnings(loss: ClassificationLoss, epoch: int, predicted: torch.Tensor) -> list[str]:
    sums = torch.rand(C, M) + 0.1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loss.q_step(sums, torch.full((C,), 5.0), epoch, predicted)
    return [str(w.message) for w in caught if issubclass(w.category, CentroidCollapseWarning)]


def test_one_predicted_class_is_a_collapse_only_once_the_centroids_have_moved() -> None:
    loss = build_loss(
        "ncmi_mil", num_classes=C, feature_dim=M, schedule={"warmup_epochs": 2, "warmup_steps": 0}
    )
    assert isinstance(loss, NCMILoss)
    assert loss.state.mode == "alternating"
    one_class = torch.tensor([20.0, 0.0, 0.0, 0.0])
    # Epoch 0 of a feature head: the pass predicted with the reference anchors (no class
    # means yet), so one predicted class is no evidence of a merge.
    assert _collapse_warnings(loss, 0, one_class) == []
    assert not loss.state.reports[-1].collapsed
    # Epoch 1: class means exist, but no Q-step had moved the centroids before this pass
    # (the warm start), so the network's early guesses are not blamed on the schedule.
    assert _collapse_warnings(loss, 1, one_class) == []
    assert loss.state.reports[-1].predicted_classes is None
    # That Q-step ended the warm start and moved the centroids; a pass made after it with
    # the same histogram is a collapse.
    assert loss.state.reports[-1].applied
    assert loss.state.centroids_moved()
    messages = _collapse_warnings(loss, 2, one_class)
    assert len(messages) == 1
    assert "predictions cover 1.00 effective classes" in messages[0]
    assert "warmup_epochs=2" in messages[0]  # the run's own settings are named


def test_fixed_centroids_never_report_a_collapse() -> None:
    loss = build_loss("ncmi_mil", num_classes=C, feature_dim=M, schedule={"mode": "fixed"})
    assert isinstance(loss, NCMILoss)
    one_class = torch.tensor([20.0, 0.0, 0.0, 0.0])
    for epoch in range(3):
        assert _collapse_warnings(loss, epoch, one_class) == []
    assert not any(r.collapsed for r in loss.state.reports)


def test_clam_sb_keeps_its_instance_branch_without_a_class_head() -> None:
    torch.manual_seed(0)
    model = build_aggregator(
        "clam_sb", in_dim=6, num_classes=C, class_head=False, hidden_dim=8, top_k=2
    )
    assert isinstance(model, ClamSB)
    assert model.classifier is None
    assert len(model.instance_classifiers) == C
    out = model(torch.randn(2, 9, 6))
    assert out.logits.shape == (2, 0)
    aux = model.auxiliary_loss(out, torch.tensor([1, 3]))
    assert float(aux.detach()) > 0
    aux.backward()
    grads = []
    for head in model.instance_classifiers:
        assert isinstance(head, torch.nn.Linear)
        grads.append(head.weight.grad)
    # The instance classifiers of the two bags' classes learn; the others get no gradient.
    assert grads[1] is not None
    assert float(grads[1].abs().sum()) > 0
    assert grads[3] is not None
    assert float(grads[3].abs().sum()) > 0
    assert grads[0] is None
    assert grads[2] is None


def test_a_run_warns_at_its_first_collapse_and_records_every_one() -> None:
    loss = build_loss("ncmi_mil", num_classes=C, feature_dim=M)
    assert isinstance(loss, NCMILoss)
    one_class = torch.tensor([20.0, 0.0, 0.0, 0.0])
    warned = [_collapse_warnings(loss, epoch, one_class) for epoch in range(4)]
    # Epoch 0 predicted with the anchors; epochs 1-3 after the first Q-step moved them.
    assert [len(w) for w in warned] == [0, 1, 0, 0]
    assert "not warned again" in warned[1][0]
    assert [r.collapsed for r in loss.state.reports] == [False, True, True, True]
