"""Batched training benchmark (issue: batches of slides): epoch time at B slides per step.

Runs whole training epochs of the real MILClassifier in the real Lightning Trainer at
several batch sizes, in one process, interleaved (B1, B8, B8, B1, ...), and reports the
median epoch time of each batch size and its ratio to B = 1. The epoch includes the
epoch-end Q-step pass of losses that need one (ncmi_mil).

demo       the demo's features (python -m wsi_ncmi.demo) through the real BagDataModule:
           training slides of fold 0 of the demo's split (loho, val_fraction 0.25),
           full bags, cached in RAM, standardised
synthetic  random fp16 bags in memory (GPU throughput: bags x patches x dim)

    python tools/bench/train_batch.py demo --loss ce --batch-sizes 1 8 --repeats 3
    python tools/bench/train_batch.py synthetic --bags 256 --patches 5000 --dim 1024 \
        --batch-sizes 1 8 32 --accelerator gpu --precision bf16-mixed --json out.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _demo_datamodule(args: argparse.Namespace, batch_size: int, splits: Path) -> Any:
    from wsi_ncmi.train.data import BagDataModule

    dm = BagDataModule(
        args.manifest,
        args.features_root,
        args.encoder,
        str(splits),
        0,
        max_patches_train=args.max_patches,
        cache_in_ram=True,
        standardize=True,
        batch_size=batch_size,
        seed=0,
    )
    dm.setup("fit")
    return dm


def _synthetic_loaders(args: argparse.Namespace) -> Any:
    import torch
    from torch.utils.data import DataLoader, Dataset

    from wsi_ncmi.train.batching import EpochSampler, collate_bags

    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(args.patches // 2, args.patches + 1, (args.bags,), generator=g)
    bags = [torch.randn(int(n), args.dim, generator=g).half() for n in lengths]
    labels = [i % 4 for i in range(args.bags)]

    class Bags(Dataset[dict[str, Any]]):
        def __len__(self) -> int:
            return len(bags)

        def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
            i = key[0]
            return {
                "features": bags[i],
                "target": torch.tensor(labels[i]),
                "index": torch.tensor(i),
            }

    def loader(batch_size: int) -> DataLoader[dict[str, Any]]:
        return DataLoader(
            Bags(),
            batch_size=batch_size,
            sampler=EpochSampler(labels),
            collate_fn=collate_bags,
            num_workers=args.workers,
            persistent_workers=args.workers > 0,
            pin_memory=args.accelerator == "gpu",
        )

    return loader, args.dim


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("mode", choices=["demo", "synthetic"])
    p.add_argument("--manifest", default="outputs/demo/cohort/manifest.csv")
    p.add_argument("--features-root", default="outputs/demo/tiles")
    p.add_argument("--encoder", default="random-cnn")
    p.add_argument("--max-patches", type=int, default=None, help="max_patches_train")
    p.add_argument(
        "--split",
        choices=["loho", "fixed"],
        default="loho",
        help="demo: training slides of fold 0 of the demo's loho split (60), or train 0-2",
    )
    p.add_argument("--bags", type=int, default=256)
    p.add_argument("--patches", type=int, default=5000)
    p.add_argument("--dim", type=int, default=1024)
    p.add_argument("--loss", default="ce")
    p.add_argument("--model", default="abmil")
    p.add_argument(
        "--model-kwargs",
        default=None,
        help="aggregator kwargs as JSON; default: the demo's ABMIL (hidden 64, attention 32, "
        "dropout 0.1) in demo mode, the library's ABMIL (512/256/0.25) in synthetic mode",
    )
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    p.add_argument("--repeats", type=int, default=3, help="epochs per batch size")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers (synthetic)")
    p.add_argument("--accelerator", default="cpu")
    p.add_argument("--precision", default="32-true")
    p.add_argument("--json", default=None, help="also write the result here")
    args = p.parse_args()

    import lightning as L
    import torch

    from wsi_ncmi.losses.callbacks import CentroidUpdate
    from wsi_ncmi.manifest import read_manifest
    from wsi_ncmi.mil import build_aggregator
    from wsi_ncmi.train.build import build_criterion
    from wsi_ncmi.train.module import MILClassifier
    from wsi_ncmi.train.splits import make_splits, save_splits

    torch.set_num_threads(args.threads)
    demo_model = {"hidden_dim": 64, "attention_dim": 32, "dropout": 0.1}
    model_kwargs = (
        json.loads(args.model_kwargs)
        if args.model_kwargs
        else (demo_model if args.mode == "demo" else {})
    )
    hidden = int(model_kwargs.get("hidden_dim", 512))
    tmp = Path(tempfile.mkdtemp(prefix="train_batch_"))
    if args.mode == "demo":
        rows = read_manifest(args.manifest)
        splits = tmp / "splits.json"
        kind = {"fixed": ("fixed", "c17_train012_test34"), "loho": ("loho", None)}[args.split]
        save_splits(make_splits(rows, kind[0], seed=0, preset=kind[1], val_fraction=0.25), splits)
        modules = {b: _demo_datamodule(args, b, splits) for b in args.batch_sizes}
        first = modules[args.batch_sizes[0]]
        in_dim = int(first.datasets["train"].bag(0).shape[-1])
        n_train = len(first.datasets["train"])

        def loader(b: int) -> Any:
            return modules[b].train_dataloader()

    else:
        loader, in_dim = _synthetic_loaders(args)
        n_train = args.bags

    class EpochTimer(L.Callback):
        def on_train_epoch_start(self, *a: object) -> None:
            self.start = time.perf_counter()

        def on_train_epoch_end(self, trainer: L.Trainer, *a: object) -> None:
            # After the Q-step callback (callbacks run in order; this one is last).
            if trainer.strategy.root_device.type == "cuda":
                torch.cuda.synchronize()
            self.seconds = time.perf_counter() - self.start

    def one_epoch(b: int) -> float:
        L.seed_everything(0, verbose=False)
        criterion = build_criterion(
            args.loss, {}, num_classes=4, class_counts=[1, 1, 1, 1], feature_dim=hidden
        )
        head = criterion.output_dim(4) or 0
        aggregator = build_aggregator(args.model, in_dim=in_dim, num_classes=head, **model_kwargs)
        model = MILClassifier(aggregator, criterion, 4, lr=1e-3, scheduler="none")
        timer = EpochTimer()
        trainer = L.Trainer(
            max_epochs=1,
            accelerator=args.accelerator,
            devices=1,
            precision=args.precision,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            callbacks=[CentroidUpdate(4), timer],
        )
        trainer.fit(model, train_dataloaders=loader(b))
        return timer.seconds

    order = []
    for r in range(args.repeats):
        order += args.batch_sizes if r % 2 == 0 else list(reversed(args.batch_sizes))
    times: dict[int, list[float]] = {b: [] for b in args.batch_sizes}
    one_epoch(args.batch_sizes[0])  # warm-up (imports, allocator, caches)
    for b in order:
        times[b].append(one_epoch(b))
        print(f"B={b:3d}  epoch {times[b][-1]:.3f} s", file=sys.stderr)
    padding: dict[str, float] = {}
    if args.mode == "demo":  # padded tokens per real token in one epoch's batches
        for b in args.batch_sizes:
            masks = [batch["mask"] for batch in loader(b)]
            padding[str(b)] = sum(m.numel() for m in masks) / sum(int(m.sum()) for m in masks)
    base = statistics.median(times[args.batch_sizes[0]])
    result = {
        "mode": args.mode,
        "loss": args.loss,
        "split": args.split if args.mode == "demo" else None,
        "model": args.model,
        "model_kwargs": model_kwargs,
        "train_slides": n_train,
        "threads": args.threads,
        "workers": args.workers,
        "accelerator": args.accelerator,
        "precision": args.precision,
        "host": platform.node(),
        "median_epoch_s": {str(b): statistics.median(t) for b, t in times.items()},
        "ratio_to_first": {str(b): statistics.median(t) / base for b, t in times.items()},
        "slides_per_s": {str(b): n_train / statistics.median(t) for b, t in times.items()},
        "epochs": {str(b): t for b, t in times.items()},
        "padding_factor": padding,
    }
    if args.accelerator == "gpu" and torch.cuda.is_available():
        result["device"] = torch.cuda.get_device_name(0)
        result["peak_gpu_mem_gb"] = torch.cuda.max_memory_allocated() / 2**30
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
