"""Every Lightning module of the package warms oneMKL's vector math before its first step.

The race it prevents (two intra-op threads making a VML function's first call at once;
one computes its chunk with a low-accuracy kernel) cannot be triggered on demand, so
these tests check the warm-up itself and that each module's ``setup`` runs it.
"""

from __future__ import annotations

import lightning as L
import pytest
import torch

from wsi_ncmi.features.encode import ExtractionModule
from wsi_ncmi.features.encoders.registry import build_encoder
from wsi_ncmi.images.module import LossClassifier
from wsi_ncmi.losses import build_loss
from wsi_ncmi.mil import build_aggregator
from wsi_ncmi.train.module import MILClassifier
from wsi_ncmi.vml_warmup import VML_OPS, warm_vector_math


def test_the_warm_up_calls_each_vml_op_in_both_float_types() -> None:
    assert warm_vector_math() == VML_OPS
    for name in VML_OPS:  # a torch op of that name, elementwise on a CPU float tensor
        for dtype in (torch.float32, torch.float64):
            out = getattr(torch, name)(torch.full((3,), 0.5, dtype=dtype))
            assert out.shape == (3,)
            assert out.dtype == dtype


def _modules() -> dict[str, L.LightningModule]:
    ce = build_loss("ce", num_classes=4)
    return {
        "extraction": ExtractionModule(build_encoder("stain-stats")),
        "mil": MILClassifier(build_aggregator("abmil", in_dim=8, num_classes=4), ce),
        "images": LossClassifier(torch.nn.Flatten(), 8, 4, build_loss("ce", num_classes=4)),
    }


@pytest.mark.parametrize("kind", ["extraction", "mil", "images"])
def test_each_modules_setup_runs_the_warm_up(kind: str) -> None:
    module = _modules()[kind]
    warm_vector_math.cache_clear()
    module.setup("predict" if kind == "extraction" else "fit")
    assert warm_vector_math.cache_info().currsize == 1
