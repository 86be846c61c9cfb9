"""The aggregator contract: every registered aggregator is an ``Aggregator`` whose
``embedding_dim`` is the width it really produces, known before it is built."""

from __future__ import annotations

import pytest
import torch

from wsi_ncmi.errors import ConfigError
from wsi_ncmi.mil import Aggregator, aggregator_embedding_dim, build_aggregator, list_aggregators
from wsi_ncmi.mil.registry import AGGREGATORS

IN_DIM = 12
SMALL_BY_MODEL = {
    "abmil": {"hidden_dim": 16, "attention_dim": 8},
    "clam_sb": {"hidden_dim": 16, "attention_dim": 8, "top_k": 2},
    "transmil": {"hidden_dim": 16, "num_heads": 2, "num_landmarks": 8},
    "dsmil": {"hidden_dim": 16, "query_dim": 8},
}


def _kwargs(name: str, hidden_dim: int) -> dict[str, int]:
    return {**SMALL_BY_MODEL.get(name, {}), "hidden_dim": hidden_dim}


@pytest.mark.parametrize("name", list_aggregators())
@pytest.mark.parametrize("num_classes", [0, 3])
def test_embedding_dim_is_the_width_produced(name: str, num_classes: int) -> None:
    kwargs = _kwargs(name, 24)
    assert isinstance(AGGREGATORS.get(name), type)
    model = build_aggregator(name, in_dim=IN_DIM, num_classes=num_classes, **kwargs).eval()
    assert isinstance(model, Aggregator)
    with torch.no_grad():
        out = model(torch.randn(2, 9, IN_DIM), torch.ones(2, 9, dtype=torch.bool))
    assert out.embedding.shape == (2, model.embedding_dim)
    assert out.logits.shape == (2, num_classes)
    expected = aggregator_embedding_dim(name, in_dim=IN_DIM, num_classes=num_classes, **kwargs)
    assert expected == model.embedding_dim


@pytest.mark.parametrize("name", list_aggregators())
def test_embedding_dim_default_and_no_random_draws(name: str) -> None:
    torch.manual_seed(0)
    state = torch.get_rng_state()
    width = aggregator_embedding_dim(name, in_dim=IN_DIM, num_classes=2)
    assert torch.equal(state, torch.get_rng_state())  # nothing was built
    extra = {k: v for k, v in SMALL_BY_MODEL.get(name, {}).items() if k != "hidden_dim"}
    model = build_aggregator(name, in_dim=IN_DIM, num_classes=2, **extra)
    assert width == model.embedding_dim


def test_embedding_dim_refuses_unknown_arguments() -> None:
    with pytest.raises(ConfigError, match="hidden_width"):
        aggregator_embedding_dim("abmil", in_dim=IN_DIM, num_classes=2, hidden_width=3)
    with pytest.raises(ConfigError, match="aggregator must be one of"):
        aggregator_embedding_dim("nope", in_dim=IN_DIM, num_classes=2)


def test_auxiliary_loss_hook() -> None:
    plain = build_aggregator("abmil", in_dim=IN_DIM, num_classes=2, hidden_dim=8)
    out = plain(torch.randn(1, 5, IN_DIM))
    assert plain.auxiliary_loss(out, torch.tensor([1])) is None
    clam = build_aggregator("clam_sb", in_dim=IN_DIM, num_classes=2, hidden_dim=8, top_k=1)
    aux = clam.auxiliary_loss(clam(torch.randn(1, 6, IN_DIM)), torch.tensor([1]))
    assert aux is not None
    assert aux.ndim == 0
