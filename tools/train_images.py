"""Train an image classifier on an ImageFolder dataset with any registered loss.

Reproduces the paper's natural-image runs on a GPU machine, e.g. CIFAR-100 exported as
PNGs in ``root/train/<class>/`` and ``root/test/<class>/``:

    python tools/train_images.py --root data/cifar100 --backbone torchvision:resnet18 \
        --loss ncmi --epochs 200 --batch-size 128 --lr 0.1 --accelerator gpu

Loss options are passed as JSON: ``--loss-kwargs '{"head": "feature", "temperature": 0.2}'``.
Exit codes: the commands' shared table (0 success, 1 failed, 2 bad arguments or
configuration, 130 interrupted).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; every flag has help."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--root", required=True, help="ImageFolder root (train/, val/, test/)")
    add("--backbone", default="small_cnn", help="small_cnn, or torchvision:<name> / timm:<name>")
    add("--loss", default="ncmi", help="a registered loss (wsi_ncmi.losses.list_losses())")
    add("--loss-kwargs", default="{}", help="JSON object of loss arguments")
    add("--epochs", type=int, default=30, help="training epochs")
    add("--batch-size", type=int, default=128, help="images per optimiser step")
    add("--image-size", type=int, default=32, help="images are resized to this side (px)")
    add("--lr", type=float, default=0.1, help="learning rate")
    add("--weight-decay", type=float, default=5e-4, help="weight decay")
    add("--optimizer", choices=["sgd", "adamw"], default="sgd", help="optimiser")
    add("--seed", type=int, default=0, help="seed of initialisation, shuffling and dropout")
    add("--accelerator", default="auto", help="Lightning accelerator: cpu, gpu or auto")
    add("--devices", default="auto", help="Lightning devices: a count or auto")
    add("--precision", default="32-true", help="Lightning precision, e.g. 32-true, bf16-mixed")
    add("--num-workers", type=int, default=0, help="DataLoader worker processes")
    add("--out-dir", default="outputs/images", help="run folder (checkpoints, metrics)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Train and print the test metrics as JSON; exit codes from the commands' shared table
    (2 bad arguments or configuration, 1 a failed run, 130 interrupted)."""
    from wsi_ncmi.cli.common import run_cli

    return run_cli("train_images", lambda: _run(build_parser().parse_args(argv)))


def _run(args: argparse.Namespace) -> int:
    from wsi_ncmi.errors import ConfigError
    from wsi_ncmi.images import ImageTrainConfig, train_images

    try:
        loss_kwargs = json.loads(args.loss_kwargs)
    except json.JSONDecodeError as err:
        raise ConfigError(f"--loss-kwargs must be a JSON object: {err}") from err
    devices = int(args.devices) if args.devices.isdigit() else args.devices
    config = ImageTrainConfig(
        root=args.root,
        backbone=args.backbone,
        loss=args.loss,
        loss_kwargs=loss_kwargs,
        epochs=args.epochs,
        batch_size=args.batch_size,
        image_size=args.image_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        optimizer=args.optimizer,
        seed=args.seed,
        accelerator=args.accelerator,
        devices=devices,
        precision=args.precision,
        num_workers=args.num_workers,
        out_dir=args.out_dir,
    )
    results = train_images(config)
    print(json.dumps(results.fit.test, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
