"""Every registered aggregator × every registered loss trains on tiny bags on the CPU."""

from __future__ import annotations

import pytest
import torch

from wsi_ncmi.errors import ConfigError
from wsi_ncmi.losses import list_losses
from wsi_ncmi.mil import MILOutput, build_aggregator, list_aggregators
from wsi_ncmi.mil.clam_sb import ClamOutput, ClamSB
from wsi_ncmi.mil.transmil import NystromAttention, TransMIL, newton_schulz_pinv
from wsi_ncmi.train.batching import BagItem, collate_bags
from wsi_ncmi.train.build import FoldShape, build_module
from wsi_ncmi.train.config import LossConfig, ModelConfig, OptimConfig, TrainConfig

IN_DIM = 12
NUM_CLASSES = 4
SMALL = {"hidden_dim": 16}
SMALL_BY_MODEL = {
    "abmil": {"hidden_dim": 16, "attention_dim": 8},
    "clam_sb": {"hidden_dim": 16, "attention_dim": 8, "top_k": 2},
    "transmil": {"hidden_dim": 16, "num_heads": 2, "num_landmarks": 8},
    "dsmil": {"hidden_dim": 16, "query_dim": 8},
}
LOSS_VARIANTS: list[tuple[str, dict[str, object]]] = [(name, {}) for name in list_losses()] + [
    ("ncmi", {"head": "feature", "temperature": 0.5}),
    ("ncmi", {"schedule": {"mode": "alternating", "warmup_epochs": 0, "warmup_steps": 0}}),
    ("ncmi", {"schedule": {"mode": "ema"}}),
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _kwargs(name: str) -> dict[str, int]:
    return dict(SMALL_BY_MODEL.get(name, SMALL))


def test_registry_lists_every_architecture() -> None:
    assert {"abmil", "transmil", "dsmil", "clam_sb", "mean", "max"} <= set(list_aggregators())
    with pytest.raises(ConfigError, match="aggregator must be one of"):
        build_aggregator("nope", in_dim=4, num_classes=2)


@pytest.mark.parametrize("model_name", list_aggregators())
@pytest.mark.parametrize(("loss_name", "loss_kwargs"), LOSS_VARIANTS)
# The step is called without a Trainer, so its self.log calls have nowhere to go.
@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`:UserWarning")
def test_every_model_and_loss_takes_a_training_step(
    model_name: str, loss_name: str, loss_kwargs: dict[str, object]
) -> None:
    """The module ``wsi-train`` builds (:func:`build_module`, as ``build_model`` does for
    a fold) takes real training steps: finite loss, probabilities, updated weights."""
    config = TrainConfig(
        model=ModelConfig(model_name, _kwargs(model_name)),
        loss=LossConfig(loss_name, dict(loss_kwargs)),
        optim=OptimConfig(lr=1e-2),
    )
    module = build_module(config, FoldShape(IN_DIM, NUM_CLASSES, (3, 1, 1, 2)))
    criterion = module.criterion
    # The class head exists exactly when the loss wants class logits (never zero-width).
    heads = [m for m in module.aggregator.modules() if isinstance(m, torch.nn.Linear)]
    assert all(m.out_features > 0 for m in heads)
    assert (criterion.output_dim(NUM_CLASSES) == NUM_CLASSES) == criterion.needs_class_head
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-2)
    before = [p.detach().clone() for p in module.aggregator.parameters()]
    bags = [
        BagItem(
            features=torch.randn(7, IN_DIM).half(), target=torch.tensor(2), index=torch.tensor(0)
        ),
        BagItem(
            features=torch.randn(1, IN_DIM).half(), target=torch.tensor(0), index=torch.tensor(1)
        ),
    ]
    # one unpadded single-bag step, then one padded two-bag step (7 and 1 patches)
    for step, batch in enumerate((collate_bags(bags[:1]), collate_bags(bags))):
        loss = module.training_step(batch, step)  # the real step: loss + auxiliary loss
        assert loss.ndim == 0
        assert torch.isfinite(loss)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        outputs, _ = module.loss_inputs(batch)
        width = NUM_CLASSES if criterion.needs_class_head else module.aggregator.hidden_dim
        assert outputs.shape == (int(batch["target"].shape[0]), width)
        probs = module.class_scores(outputs.detach())
        n = int(batch["target"].shape[0])
        assert probs.shape == (n, NUM_CLASSES)
        assert torch.allclose(probs.sum(-1), torch.ones(n), atol=1e-4)
        assert criterion.predict(outputs).shape == (n,)
    changed = any(
        not torch.equal(a, b) for a, b in zip(before, module.aggregator.parameters(), strict=True)
    )
    assert changed


@pytest.mark.parametrize("model_name", list_aggregators())
@pytest.mark.parametrize("n_patches", [1, 2, 50_000])
def test_bag_sizes_from_one_to_fifty_thousand(model_name: str, n_patches: int) -> None:
    torch.manual_seed(0)
    model = build_aggregator(
        model_name, in_dim=IN_DIM, num_classes=NUM_CLASSES, **_kwargs(model_name)
    )
    out = model(torch.randn(1, n_patches, IN_DIM))
    assert isinstance(out, MILOutput)
    assert out.logits.shape == (1, NUM_CLASSES)
    assert out.attention.shape == (1, n_patches)
    assert out.embedding.shape == (1, model.hidden_dim)
    assert torch.isfinite(out.logits).all()
    assert float(out.attention.detach().sum()) == pytest.approx(1.0, abs=1e-3)
    assert bool((out.attention >= 0).all())
    out.logits.sum().backward()


@pytest.mark.parametrize("model_name", ["abmil", "mean", "max", "dsmil", "clam_sb", "transmil"])
def test_padded_batch_gives_each_bag_alone(model_name: str) -> None:
    """B bags of different lengths in one padded step = each bag run alone."""

    torch.manual_seed(0)
    model = build_aggregator(
        model_name, in_dim=IN_DIM, num_classes=NUM_CLASSES, **_kwargs(model_name)
    )
    model.eval()
    bags = [torch.randn(n, IN_DIM) for n in (7, 2, 11)]
    batch = collate_bags(
        [
            {"features": b, "target": torch.tensor(0), "index": torch.tensor(i)}
            for i, b in enumerate(bags)
        ]
    )
    assert batch["features"].shape == (3, 11, IN_DIM)
    assert batch["mask"].sum(dim=1).tolist() == [7, 2, 11]
    together = model(batch["features"], batch["mask"])
    for b, bag in enumerate(bags):
        alone = model(bag)
        assert torch.allclose(alone.logits[0], together.logits[b], atol=1e-5)
        assert torch.allclose(alone.embedding[0], together.embedding[b], atol=1e-5)
        n = bag.shape[0]
        assert torch.allclose(alone.attention[0], together.attention[b, :n], atol=1e-6)
        assert float(together.attention[b, n:].detach().abs().sum()) == 0.0


@pytest.mark.parametrize("model_name", ["abmil", "mean", "max", "dsmil", "clam_sb", "transmil"])
def test_padding_mask_gives_the_unpadded_result(model_name: str) -> None:
    torch.manual_seed(0)
    model = build_aggregator(
        model_name, in_dim=IN_DIM, num_classes=NUM_CLASSES, **_kwargs(model_name)
    )
    model.eval()
    bag = torch.randn(5, IN_DIM)
    padded = torch.cat([bag, torch.randn(3, IN_DIM)]).unsqueeze(0)
    mask = torch.tensor([[True] * 5 + [False] * 3])
    with torch.no_grad():
        alone, masked = model(bag), model(padded, mask)
    assert torch.allclose(alone.logits, masked.logits, atol=1e-5)
    assert float(masked.attention[0, 5:].sum()) == 0.0


def test_shape_errors_are_specific() -> None:
    model = build_aggregator("mean", in_dim=IN_DIM, num_classes=2)
    with pytest.raises(ValueError, match=r"features must be"):
        model(torch.randn(3, IN_DIM + 1))
    with pytest.raises(ConfigError, match="dropout"):
        build_aggregator("dsmil", in_dim=IN_DIM, num_classes=2, dropout=1.5)


def test_newton_schulz_pinv_matches_torch() -> None:
    torch.manual_seed(0)
    a = torch.softmax(torch.randn(2, 16, 16, dtype=torch.float64), dim=-1)
    assert torch.allclose(newton_schulz_pinv(a, 20), torch.linalg.pinv(a), atol=1e-5)


def test_nystrom_attention_approximates_exact_attention_for_smooth_inputs() -> None:
    torch.manual_seed(0)
    exact = NystromAttention(16, num_heads=2, num_landmarks=4096, dropout=0.0).eval()
    approx = NystromAttention(16, num_heads=2, num_landmarks=64, dropout=0.0).eval()
    approx.load_state_dict(exact.state_dict())
    # Smooth sequence: neighbouring tokens are similar, as in a segment-mean landmark model.
    tokens = torch.cumsum(torch.randn(1, 1024, 16) * 0.05, dim=1)
    with torch.no_grad():
        reference, estimate = exact(tokens), approx(tokens)
    error = (estimate - reference).norm() / reference.norm()
    assert float(error) < 0.1


def test_transmil_attention_is_exact_class_token_attention() -> None:
    """The returned attention is the class token's softmax attention in the last layer.

    Oracle from the definition, head by head: softmax over the 16 patch tokens of
    q_cls · k_j / sqrt(d_head), averaged over heads, with each padding copy's weight added
    to the patch it repeats (10 patches -> a 4 x 4 grid: patches 0-5 appear twice).
    """
    torch.manual_seed(0)
    model = build_aggregator("transmil", in_dim=IN_DIM, num_classes=2, **_kwargs("transmil"))
    assert isinstance(model, TransMIL)
    model.eval()
    x = torch.randn(10, IN_DIM)
    out = model(x)
    assert out.attention.shape == (1, 10)
    with torch.no_grad():
        embedded = model.patch_embed(x.unsqueeze(0))
        source = [j % 10 for j in range(16)]
        tokens = torch.cat([model.cls_token, embedded[:, source]], dim=1)
        tokens = model.position(model.layer_1(tokens), 4)
        normed = model.layer_2.norm(tokens)[0]  # (17, dim)
        attention = model.layer_2.attention
        q, k, _ = attention.qkv(normed).chunk(3, dim=-1)
        d = attention.head_dim
        expected = torch.zeros(10)
        for h in range(attention.num_heads):
            qh, kh = q[0, h * d : (h + 1) * d], k[1:, h * d : (h + 1) * d]
            weights = torch.softmax(kh @ qh / d**0.5, dim=0)  # over the 16 patch tokens
            for j, patch in enumerate(source):
                expected[patch] += weights[j] / attention.num_heads
    torch.testing.assert_close(out.attention[0], expected, atol=1e-5, rtol=1e-4)
    assert float(out.attention[0, :6].detach().min()) > 0  # the repeated patches carry two weights


def test_clam_instance_loss_trains_the_instance_classifiers() -> None:
    torch.manual_seed(0)
    model = build_aggregator("clam_sb", in_dim=IN_DIM, num_classes=3, top_k=2, subtyping=True)
    assert isinstance(model, ClamSB)
    out = model(torch.randn(1, 9, IN_DIM))
    assert isinstance(out, ClamOutput)
    aux = model.auxiliary_loss(out, torch.tensor([1]))
    assert float(aux.detach()) > 0
    aux.backward()
    grads = []
    for head in model.instance_classifiers:
        assert isinstance(head, torch.nn.Linear)
        grads.append(head.weight.grad)
    assert all(g is not None and float(g.abs().sum()) > 0 for g in grads)
    single = model(torch.randn(1, 1, IN_DIM))
    assert float(model.auxiliary_loss(single, torch.tensor([0])).detach()) == 0.0
