"""Schedules stay safe when an epoch has few steps (full-batch training of a small table).

Before the step-counted warm-up and damping, alternating NCMI centroids on the iris table
trained full-batch (one optimiser step per epoch) chased every step and collapsed in most
runs. This runs the plain PyTorch loop with :func:`wsi_ncmi.losses.epoch_end`.
"""

import warnings

import pytest
import torch
from sklearn.datasets import load_iris

from wsi_ncmi.losses import CentroidCollapseWarning, NCMILoss, build_loss, epoch_end


def _fit(seed: int, name: str, epochs: int = 200, **kwargs):
    x, y = load_iris(return_X_y=True)
    x = torch.tensor((x - x.mean(0)) / x.std(0), dtype=torch.float32)
    y = torch.tensor(y)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    loss = build_loss(name, num_classes=3, **kwargs)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    reports = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for epoch in range(epochs):  # one full-batch step per epoch
            opt.zero_grad()
            loss(model(x), y).loss.backward()
            opt.step()
            reports.append(epoch_end(loss, model, [(x, y)], epoch=epoch))
    with torch.no_grad():
        accuracy = float((loss.predict(model(x)) == y).float().mean())
    collapses = [w for w in caught if issubclass(w.category, CentroidCollapseWarning)]
    return accuracy, reports, collapses, loss


@pytest.mark.parametrize("seed", [0, 1])
def test_alternating_centroids_survive_full_batch_training(seed):
    ce_accuracy, *_ = _fit(seed, "ce")
    accuracy, reports, collapses, loss = _fit(seed, "ncmi", schedule={"mode": "alternating"})
    assert accuracy >= ce_accuracy - 0.05
    assert reports[-1] is not None
    assert not reports[-1].collapsed
    assert len(collapses) <= 5  # at most a few early epochs, never a lasting collapse
    # The schedule counted steps: no Q-step moved the centroids before 50 steps.
    assert not any(r.applied for r in reports[:49])
    assert all(r.applied for r in reports[60:])
    assert int(loss.state.steps) == 200


def test_effective_damping_scales_with_steps_since_the_last_q_step():
    loss = build_loss("ncmi", num_classes=3, schedule={"mode": "alternating", "damping": 0.1})
    assert isinstance(loss, NCMILoss)
    state = loss.state
    assert state.damping_steps == 50
    state.steps.fill_(50)
    assert state.effective_damping() == pytest.approx(0.1)
    state.steps_at_q_step.fill_(49)
    assert state.effective_damping() == pytest.approx(1 - 0.9 ** (1 / 50))
    state.damping_steps = 0
    assert state.effective_damping() == pytest.approx(0.1)
