"""The linear probe of :mod:`wsi_ncmi.train.probe` on embeddings with and without the signal."""

from __future__ import annotations

import numpy as np

from wsi_ncmi.train.probe import linear_probe


def _clusters(rng: np.random.Generator, n: int, signal: float) -> tuple[np.ndarray, np.ndarray]:
    y = np.arange(n) % 4
    x = rng.normal(size=(n, 8))
    x[np.arange(n), y] += signal  # class c shifts coordinate c
    return x, y


def test_probe_reads_a_linear_signal_and_not_noise() -> None:
    rng = np.random.default_rng(0)
    train, val, test = (_clusters(rng, n, 6.0) for n in (40, 20, 20))
    result = linear_probe(*train, {"val": val, "test": test}, 4)
    assert result.train_slides == 40
    assert result.macro_f1 == {"val": 1.0, "test": 1.0}
    # Without the signal the probe is near chance (0.25 for four balanced classes).
    train, test = (_clusters(rng, n, 0.0) for n in (40, 200))
    noise = linear_probe(*train, {"test": test}, 4).macro_f1["test"]
    assert noise is not None
    assert noise < 0.45


def test_probe_is_undefined_with_one_training_class_or_an_empty_part() -> None:
    x = np.random.default_rng(1).normal(size=(6, 3))
    result = linear_probe(x, np.zeros(6, dtype=int), {"test": (x, np.arange(6) % 2)}, 2)
    assert result.macro_f1 == {"test": None}
    two = linear_probe(x, np.arange(6) % 2, {"test": (x[:0], np.zeros(0, dtype=int))}, 2)
    assert two.to_json() == {"train_slides": 6, "macro_f1": {"test": None}}
