"""One model state per checkpoint: the selected checkpoint re-scores validation to the bit.

For every registered loss × aggregator, a short ``run_training`` (real Lightning Trainer,
real checkpoints) selects a checkpoint on ``val/macro_f1_calibrated``. Reloading that
checkpoint and validating again must give the logged values exactly: the selection score,
the loss's own-rule macro-F1 and the validation loss of that epoch, and the decision rule
fitted on it. Before the Q-step moved ahead of validation, an NCMI-MIL checkpoint held the
centroids recomputed *after* its validation, and the re-score differed.

The default tier runs :data:`FAST`; the slow tier runs the rest of the matrix.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from _train_bags import make_cohort, train_config

from wsi_ncmi.losses import list_losses
from wsi_ncmi.mil import list_aggregators
from wsi_ncmi.train.fit import run_training
from wsi_ncmi.train.folds import rescore_validation

#: Default tier: CE and NCMI-MIL (alternating slide-level centroids, class means and a
#: feature centre) with ABMIL. Every other loss × aggregator pair (the authors' NCMI with
#: fixed anchors, CMIC's and class-logit NCMI's centroids, TransMIL, CLAM-SB's instance
#: branch, ...) runs in the slow tier (``make test-slow``), which CI runs too.
FAST = {
    ("ce", "abmil"),
    ("ncmi_mil", "abmil"),
}
MATRIX = [
    pytest.param(loss, model, marks=() if (loss, model) in FAST else pytest.mark.slow)
    for loss in list_losses()
    for model in list_aggregators()
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bags")
    make_cohort(root, centers=3, patients_per_center=3, slides_per_patient=4, seed=3)
    return root


@pytest.mark.parametrize(("loss", "model"), MATRIX)
def test_selected_checkpoint_rescores_validation_to_the_bit(
    cohort: Path, tmp_path: Path, loss: str, model: str
) -> None:
    config = train_config(cohort, tmp_path, loss, model, epochs=5, standardize=False)
    fold = run_training(config).folds[0]
    assert fold.best_checkpoint is not None
    assert fold.best_score is not None
    match = re.search(r"best-epoch=(\d+)", fold.best_checkpoint)
    assert match, fold.best_checkpoint
    logged = next(h for h in fold.history if int(h["epoch"]) == int(match.group(1)))

    rescored = rescore_validation(config, 0, tmp_path / "splits.json", fold.best_checkpoint)

    # The selection score, the loss's own rule and the loss: bitwise what was logged.
    assert rescored["val/macro_f1_calibrated"] == fold.best_score
    assert rescored["val/macro_f1_calibrated"] == logged["val/macro_f1_calibrated"]
    assert rescored["val/macro_f1"] == logged["val/macro_f1"]
    assert rescored["val/loss"] == logged["val/loss"]
    # The decision rule the test uses was fitted on the same state.
    assert float(np.float32(fold.decision_rule.val_macro_f1)) == fold.best_score
