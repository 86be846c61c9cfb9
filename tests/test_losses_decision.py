"""The prior-aware decision rule fitted on validation (wsi_ncmi.losses.decision)."""

import numpy as np
import pytest
from sklearn.metrics import f1_score

from wsi_ncmi.losses.decision import PriorRule, fit_prior_rule, log_prior, score_unit

COUNTS = [56, 10, 15, 19]


def _val_set():
    """Scores that ignore the prior: the default rule over-predicts the rare classes."""
    rng = np.random.default_rng(0)
    y = np.array([0] * 30 + [1] * 4 + [2] * 6 + [3] * 10)
    scores = rng.normal(0.0, 0.01, (len(y), 4))
    scores[np.arange(len(y)), y] += 0.008  # weak class evidence on a tiny score scale
    return scores, y


def test_the_prior_improves_a_prior_free_rule_and_is_never_subtracted():
    scores, y = _val_set()
    rule = fit_prior_rule(scores, y, COUNTS)
    default = f1_score(y, scores.argmax(1), average="macro", labels=sorted(set(y)))
    assert rule.val_macro_f1_default == pytest.approx(default)
    assert rule.val_macro_f1 > rule.val_macro_f1_default
    assert rule.scale > 0
    expected = np.argmax(scores + rule.scale * np.asarray(rule.log_prior), axis=1)
    assert np.array_equal(rule.predict(scores), expected)
    assert f1_score(y, rule.predict(scores), average="macro", labels=sorted(set(y))) == (
        pytest.approx(rule.val_macro_f1)
    )


def test_the_rule_is_invariant_to_the_scale_of_the_scores():
    """Feature-head scores span hundredths of a nat, logits several nats: same choice."""
    scores, y = _val_set()
    small, large = fit_prior_rule(scores, y, COUNTS), fit_prior_rule(scores * 300, y, COUNTS)
    assert np.array_equal(small.predict(scores), large.predict(scores * 300))
    assert large.scale == pytest.approx(300 * small.scale)


def test_ties_keep_the_default_rule():
    y = np.array([0, 1, 2, 3])
    scores = np.eye(4) * 5.0  # already perfect: no prior can do better
    rule = fit_prior_rule(scores, y, COUNTS)
    assert rule.scale == 0.0
    assert rule.val_macro_f1 == rule.val_macro_f1_default == 1.0
    assert isinstance(rule, PriorRule)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="log_scores"):
        fit_prior_rule(np.zeros((3, 2)), np.zeros(3, dtype=int), COUNTS)
    with pytest.raises(ValueError, match="class_counts"):
        log_prior([0, 0, 0])
    assert score_unit(np.zeros((5, 4)), log_prior(COUNTS)) == 1.0
