"""Time per optimiser step of NCMI vs CE, as ratios measured in one process.

Each repeat times every loss once on the same model state and batch, in rotating order
(interleaved), and the ratio is median(loss) / median(CE). A step is forward, loss,
backward and SGD update. Settings:

* ``abmil``: gated-attention MIL (1024 → 512, attention 256) on one bag of 10,000 patches;
* ``digits``: the digits MLP (64 → 256 → 256 → 128, BatchNorm) on a batch of 128.

    .venv/bin/python tools/bench/loss_overhead.py --out outputs/bench/overhead.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from wsi_ncmi.images import MLP
from wsi_ncmi.losses import ClassificationLoss, build_loss
from wsi_ncmi.mil import build_aggregator

LOSSES: dict[str, Callable[[int, int], ClassificationLoss]] = {
    "ce": lambda c, m: build_loss("ce"),
    "ncmi": lambda c, m: build_loss("ncmi", num_classes=c),
    "ncmi_feature": lambda c, m: build_loss("ncmi", num_classes=c, head="feature", feature_dim=m),
}


def abmil_setting(num_classes: int = 2) -> tuple[Callable[[bool], Tensor], nn.Module, Any, int]:
    """ABMIL on one 10k-patch bag of 1024-d features; returns a forward for either head."""
    model = build_aggregator("abmil", in_dim=1024, num_classes=num_classes)
    bag = torch.randn(10_000, 1024)
    target = torch.tensor([1])

    def forward(class_head: bool) -> Tensor:
        out = model(bag)
        return out.logits if class_head else out.embedding

    return forward, model, target, 512


def digits_setting(num_classes: int = 10) -> tuple[Callable[[bool], Tensor], nn.Module, Any, int]:
    """The digits MLP on a batch of 128; the class head is a separate linear layer."""
    backbone = MLP(64, (256, 256, 128))
    head = nn.Linear(128, num_classes)
    model = nn.ModuleDict({"backbone": backbone, "head": head})
    x = torch.rand(128, 64)
    target = torch.arange(128) % num_classes

    def forward(class_head: bool) -> Tensor:
        features = backbone(x)
        return head(features) if class_head else features

    return forward, model, target, 128


def time_steps(setting: str, repeats: int, warmup: int) -> dict[str, Any]:
    """Interleaved per-step timings of every loss in one setting."""
    torch.manual_seed(0)
    num_classes = 2 if setting == "abmil" else 10
    forward, model, target, feature_dim = (
        abmil_setting(num_classes) if setting == "abmil" else digits_setting(num_classes)
    )
    model.train()
    losses = {name: make(num_classes, feature_dim).train() for name, make in LOSSES.items()}
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)

    def step(loss: ClassificationLoss) -> float:
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss(forward(loss.needs_class_head), target).loss.backward()
        opt.step()
        return time.perf_counter() - start

    names = list(losses)
    for _ in range(warmup):
        for name in names:
            step(losses[name])
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            times[name].append(step(losses[name]))
    medians = {name: statistics.median(t) for name, t in times.items()}
    return {
        "setting": setting,
        "repeats": repeats,
        "median_step_ms": {name: 1e3 * m for name, m in medians.items()},
        "ratio_to_ce": {name: medians[name] / medians["ce"] for name in names},
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="+", default=["abmil", "digits"])
    parser.add_argument("--repeats-abmil", type=int, default=15)
    parser.add_argument("--repeats-digits", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--out", type=Path, default=Path("outputs/bench/overhead.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = []
    for setting in args.settings:
        repeats = args.repeats_abmil if setting == "abmil" else args.repeats_digits
        result = time_steps(setting, repeats, warmup=max(2, repeats // 10))
        result |= {"threads": args.threads, "torch": torch.__version__}
        results.append(result)
        ms = ", ".join(f"{k} {v:.2f} ms" for k, v in result["median_step_ms"].items())
        ratio = ", ".join(f"{k} {v:.3f}x" for k, v in result["ratio_to_ce"].items())
        print(f"{setting}: median step {ms}; ratio to CE: {ratio}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
