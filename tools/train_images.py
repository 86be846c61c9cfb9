"""Train an image classifier on an ImageFolder dataset with any registered loss.

Reproduces the paper's natural-image runs on a GPU machine, e.g. CIFAR-100 exported as
PNGs in ``root/train/<class>/`` and ``root/test/<class>/``:

    python tools/train_images.py --root data/cifar100 --backbone torchvision:resnet18 \
        --loss ncmi --epochs 200 --batch-size 128 --lr 0.1 --accelerator gpu

Loss options are passed as JSON: ``--loss-kwargs '{"head": "feature", "temperature": 0.2}'``.
Exit codes: 0 success, 2 bad arguments or configuration.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="ImageFolder root (train/, val/, test/)")
    parser.add_argument("--backbone", default="small_cnn")
    parser.add_argument("--loss", default="ncmi")
    parser.add_argument("--loss-kwargs", default="{}", help="JSON object of loss arguments")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--optimizer", choices=["sgd", "adamw"], default="sgd")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--devices", default="auto")
    parser.add_argument("--precision", default="32-true")
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--out-dir", default="outputs/images")
    args = parser.parse_args(argv)

    from wsi_ncmi.errors import WsiNcmiError
    from wsi_ncmi.images import ImageTrainConfig, train_images

    try:
        loss_kwargs = json.loads(args.loss_kwargs)
    except json.JSONDecodeError as err:
        print(f"error: --loss-kwargs must be a JSON object: {err}", file=sys.stderr)
        return 2
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
    try:
        results = train_images(config)
    except WsiNcmiError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(results["test"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
