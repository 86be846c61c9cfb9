import pytest
import torch

from wsi_ncmi.errors import ConfigError
from wsi_ncmi.mil import GatedAttentionMIL, MILOutput, build_aggregator, list_aggregators


@pytest.mark.parametrize("name", list_aggregators())
def test_every_registered_aggregator_maps_a_bag_to_logits(name):
    model = build_aggregator(name, in_dim=12, num_classes=3).eval()
    bag = torch.randn(17, 12, requires_grad=True)
    out = model(bag)
    assert isinstance(out, MILOutput)
    assert out.logits.shape == (1, 3)
    assert out.attention.shape == (1, 17)
    assert out.embedding.ndim == 2
    out.logits.sum().backward()
    assert bag.grad is not None
    assert torch.isfinite(bag.grad).all()


def test_abmil_shapes_attention_and_embedding():
    model = GatedAttentionMIL(8, 4, hidden_dim=16, attention_dim=6, dropout=0.0)
    feats = torch.randn(3, 10, 8)
    out = model(feats)
    assert out.logits.shape == (3, 4)
    assert out.embedding.shape == (3, 16)
    torch.testing.assert_close(out.attention.sum(-1), torch.ones(3))
    assert (out.attention >= 0).all()
    # The embedding is the attention-weighted mean of the patch embeddings.
    embedded = model.patch_embed(feats)
    torch.testing.assert_close(out.embedding, (out.attention.unsqueeze(-1) * embedded).sum(1))
    assert model.classifier is not None
    torch.testing.assert_close(out.logits, model.classifier(out.embedding))


def test_abmil_is_permutation_invariant_and_masks_padding():
    model = GatedAttentionMIL(8, 2, hidden_dim=16, dropout=0.0).eval()
    bag = torch.randn(9, 8)
    out = model(bag)
    perm = torch.randperm(9)
    torch.testing.assert_close(model(bag[perm]).logits, out.logits)
    padded = torch.cat([bag, torch.randn(4, 8)]).unsqueeze(0)
    mask = torch.tensor([[True] * 9 + [False] * 4])
    masked = model(padded, mask)
    torch.testing.assert_close(masked.logits, out.logits)
    assert float(masked.attention[0, 9:].detach().abs().sum()) == 0.0


def test_abmil_single_patch_and_embedding_only():
    model = GatedAttentionMIL(5, 0, hidden_dim=7)
    out = model(torch.randn(1, 5))
    assert out.logits.shape == (1, 0)
    assert out.embedding.shape == (1, 7)
    torch.testing.assert_close(out.attention, torch.ones(1, 1))


def test_abmil_rejects_bad_input():
    with pytest.raises(ConfigError):
        GatedAttentionMIL(0, 2)
    with pytest.raises(ConfigError, match="aggregator"):
        build_aggregator("transmil_typo", in_dim=4, num_classes=2)
    with pytest.raises(ValueError, match="features"):
        GatedAttentionMIL(4, 2)(torch.randn(3, 5))
