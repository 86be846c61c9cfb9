"""A trained fold as a model bundle: what ``wsi-train`` and ``wsi-export-model`` write.

:func:`write_fold_bundle` takes the fold's model in the state its test part was
predicted with (the selected checkpoint), the fold's DataModule (feature statistics,
class counts, the features files' encoder and tiling records) and the validation-fitted
decision rule, and writes ``<fold>/model/`` (:mod:`wsi_ncmi.train.bundle`).
:func:`export_checkpoint` rebuilds the same from a checkpoint that the user trusts and
its run folder (``config.json``, ``splits.json``): the one place a pickle is loaded, on
explicit request.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from wsi_ncmi._version import __version__
from wsi_ncmi.errors import ConfigError
from wsi_ncmi.features.store import load_bag, read_feature_attrs
from wsi_ncmi.jsontypes import JSONObject, as_float, as_int, as_str
from wsi_ncmi.losses.decision import PriorRule
from wsi_ncmi.manifest import LABELS
from wsi_ncmi.plaindata import build
from wsi_ncmi.quiet import drop_lightning_tips
from wsi_ncmi.train.build import fold_criterion_kwargs
from wsi_ncmi.train.bundle import ood_score, write_bundle
from wsi_ncmi.train.config import (
    TrainConfig,
)
from wsi_ncmi.train.data import BagDataModule, BagDataset
from wsi_ncmi.train.module import MILClassifier
from wsi_ncmi.train.results import FoldResult

#: A slide is out of distribution when its score exceeds this × the largest training
#: slide's score (:func:`wsi_ncmi.predict.model.ood_score`).
OOD_MARGIN = 1.5


def selection_of(result: FoldResult, monitor: str) -> JSONObject:
    """How a fold's checkpoint was selected, and its validation values at that epoch."""
    match = re.search(r"epoch=(\d+)", result.best_checkpoint or "")
    epoch = int(match.group(1)) if match else None
    logged = next((h for h in result.history if epoch is not None and h["epoch"] == epoch), {})
    return {
        "monitor": monitor,
        "best_score": result.best_score,
        "checkpoint": Path(result.best_checkpoint).name if result.best_checkpoint else None,
        "epoch": epoch,
        "epochs_trained": result.epochs_trained,
        "validation": {k: v for k, v in logged.items() if k.startswith("val/")},
    }


def _tiling_record(features_file: Path, attrs: Mapping[str, Any]) -> JSONObject:
    """Target µm/px, patch size, grid and segmentation as the training files record them."""
    mpp, size = attrs.get("target_mpp"), attrs.get("patch_size_px")
    record: JSONObject = {  # None where imported features do not record them
        "target_mpp": None if mpp is None else float(mpp),
        "patch_size_px": None if size is None else int(size),
        "coords_params_hash": str(attrs.get("coords_params_hash", "")),
        "grid": None,
        "segmentation": None,
    }
    recorded = attrs.get("coords_file")
    coords_file = Path(str(recorded)) if recorded else None
    if coords_file is not None and not coords_file.is_absolute():
        coords_file = features_file.parent / coords_file
    if coords_file is not None and coords_file.is_file():
        import h5py

        from wsi_ncmi.tiling.schema import decoded_attrs

        with h5py.File(coords_file, "r") as h5:
            coords = decoded_attrs(h5)
        segmentation = coords.get("segmentation")
        record["grid"] = {
            "target_mpp": as_float(coords["target_mpp"]),
            "patch_size_px": as_int(coords["patch_size_px"]),
            "overlap_px": as_int(coords["overlap_px"]),
            "min_tissue": as_float(coords["min_tissue"]),
        }
        record["segmentation"] = (
            json.loads(segmentation) if isinstance(segmentation, str) else segmentation
        )
    return record


def _encoder_record(attrs: Mapping[str, Any]) -> JSONObject:
    spec = attrs.get("encoder_spec") or {}
    return {
        "name": str(attrs["encoder"]),
        "identity_hash": str(attrs.get("encoder_hash", "")),
        "out_dim": int(attrs["out_dim"]),
        "dtype": str(attrs["dtype"]),
        "random_init": bool(attrs.get("random_init", spec.get("random_init", False))),
        "weights_sha256": str(attrs.get("weights_sha256", "")),
        "spec": dict(spec),
    }


def feature_statistics(
    datamodule: BagDataModule,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The bundle's statistics tensors and its QC record, from the fold's training bags.

    Returns:
        ``({"ood_mean", "ood_std"[, "standardize_mean", "standardize_std"]}, qc)``; the
        OOD statistics are over the raw stored features (before any normalisation).
    """
    train = datamodule.datasets["train"]
    raw = BagDataset(train.paths, train.labels, seed=datamodule.seed)
    mean, std = raw.feature_moments()
    tensors: dict[str, torch.Tensor] = {"ood_mean": mean, "ood_std": std}
    if train.mean is not None and train.std is not None:
        tensors["standardize_mean"], tensors["standardize_std"] = train.mean, train.std
    scores = []
    sizes = []
    for path in train.paths:
        bag = load_bag(path)
        scores.append(ood_score(bag, mean, std))
        sizes.append(int(bag.shape[0]))
    qc = {
        "ood_threshold": OOD_MARGIN * max(scores),
        "ood_margin": OOD_MARGIN,
        "ood_score_train_max": max(scores),
        "ood_score_train_median": float(torch.tensor(scores).median()),
        "patches_train_min": min(sizes),
        "patches_train_median": int(torch.tensor(sizes).median()),
    }
    return tensors, qc


def fold_manifest(
    config: TrainConfig,
    datamodule: BagDataModule,
    model: MILClassifier,
    rule: PriorRule,
    selection: Mapping[str, Any],
    qc: Mapping[str, Any],
) -> JSONObject:
    """The ``model.json`` record of a fold (without ``schema``/``files``)."""
    from wsi_ncmi.train.html import provenance

    first = datamodule.path_of(datamodule.rows["train"][0])
    attrs = read_feature_attrs(first)
    in_dim = as_int(attrs["out_dim"])
    num_classes = datamodule.num_classes
    model_kwargs = dict(config.model.kwargs)
    criterion = model.criterion
    loss_kwargs = fold_criterion_kwargs(config, datamodule)
    rows = [r for part in ("train", "val") for r in datamodule.rows[part]]
    manifest_bytes = Path(config.data.manifest).read_bytes()
    record = provenance({}, as_str(attrs["encoder"]))
    fold = datamodule.fold
    return {
        "created_by": {
            "package_version": __version__,
            "git_commit": record["git_commit"],
            "versions": record["versions"],
        },
        "classes": list(LABELS),
        "aggregator": {
            "name": config.model.name,
            "kwargs": {
                "in_dim": in_dim,
                "num_classes": num_classes,
                "class_head": criterion.needs_class_head,
                **model_kwargs,
            },
        },
        "loss": {"name": config.loss.name, "kwargs": loss_kwargs},
        "encoder": _encoder_record(attrs),
        "tiling": _tiling_record(first, attrs),
        "features": {"slide_norm": config.data.slide_norm, "standardize": config.data.standardize},
        "decision": {
            "default": config.report.decision,
            "rules": ["default", "calibrated"],
            "rule": asdict(rule),
            "class_counts": datamodule.class_counts(),
        },
        "qc": dict(qc),
        "training": {
            "manifest": Path(config.data.manifest).name,
            "manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest(),
            "fold": fold.name if fold is not None else None,
            "split": {"kind": config.split.kind, "val_scheme": config.split.val_scheme},
            "hospitals": sorted({r.center for r in rows}),
            "test_hospitals": sorted({r.center for r in datamodule.rows["test"]}),
            "slides": {part: len(datamodule.rows[part]) for part in ("train", "val", "test")},
            "train_class_counts": dict(zip(LABELS, datamodule.class_counts(), strict=True)),
            "excluded": list(datamodule.excluded),
            "seed": config.seed,
            "selection": dict(selection),
            "config": asdict(config),
        },
    }


def write_fold_bundle(
    out: str | Path,
    config: TrainConfig,
    datamodule: BagDataModule,
    model: MILClassifier,
    rule: PriorRule,
    selection: Mapping[str, Any],
) -> Path:
    """Write a fold's model bundle (see :mod:`wsi_ncmi.train.bundle`).

    Args:
        out: The bundle folder (``<fold>/model``).
        config: The run configuration.
        datamodule: The fold's set-up DataModule.
        model: The model in its selected state (the one that predicted the test part).
        rule: The decision rule fitted on validation with that state.
        selection: :func:`selection_of` the fold's result (or an equivalent record).

    Returns:
        ``out``.
    """
    stats, qc = feature_statistics(datamodule)
    manifest = fold_manifest(config, datamodule, model, rule, selection, qc)
    weights = {k: v for k, v in model.state_dict().items()}
    return write_bundle(out, manifest, weights, stats)


def config_from_json(path: Path) -> TrainConfig:
    """The :class:`TrainConfig` a run saved as ``config.json``.

    Raises:
        ConfigError: The file is missing or not a run configuration.
    """
    try:
        return build(TrainConfig, json.loads(path.read_text())["config"], "config")
    except (OSError, KeyError, ConfigError, json.JSONDecodeError) as err:
        raise ConfigError(
            f"cannot read the run configuration {str(path)!r} ({err}); wsi-export-model needs "
            "the checkpoint inside the run folder wsi-train wrote (<run>/<fold>/checkpoints/)"
        ) from err


def export_checkpoint(ckpt: str | Path, out: str | Path) -> Path:
    """Convert a trusted ``wsi-train`` checkpoint into a model bundle.

    The checkpoint must lie in its run folder (``<run>/<fold>/checkpoints/*.ckpt``):
    the run's ``config.json`` and ``splits.json`` rebuild the fold's data (its features
    must still be under ``data.features_root``), the checkpoint's weights are loaded (a
    pickle: only for files you trust), and the decision rule is fitted again on the
    fold's validation slides.

    Args:
        ckpt: The checkpoint.
        out: The bundle folder to write.

    Returns:
        ``out``.

    Raises:
        ConfigError: The checkpoint is not inside a run folder, or its fold is unknown.
    """
    import lightning as L

    from wsi_ncmi.train.build import build_model
    from wsi_ncmi.train.folds import fold_datamodule
    from wsi_ncmi.train.predict import fit_decision_rule, predict_slides
    from wsi_ncmi.train.splits import load_splits

    ckpt = Path(ckpt).resolve()
    if not ckpt.is_file():
        raise ConfigError(f"CKPT {str(ckpt)!r} does not exist")
    fold_dir, run_dir = ckpt.parent.parent, ckpt.parent.parent.parent
    config = config_from_json(run_dir / "config.json")
    splits = load_splits(run_dir / "splits.json")
    names = [f.name for f in splits.folds]
    if fold_dir.name not in names:
        raise ConfigError(
            f"{str(ckpt)!r} lies in {fold_dir.name!r}, which is not a fold of "
            f"{str(run_dir / 'splits.json')!r} ({names})"
        )
    fold_index = names.index(fold_dir.name)
    L.seed_everything(config.seed, workers=True, verbose=False)
    datamodule = fold_datamodule(config, fold_index, run_dir / "splits.json")
    model = build_model(config, datamodule)
    state = torch.load(ckpt, map_location="cpu", weights_only=False)  # trusted, on request
    model.load_state_dict(state["state_dict"])
    drop_lightning_tips()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    val = predict_slides(trainer, model, datamodule.val_dataloader(), None)
    rule = fit_decision_rule(val, datamodule.class_counts())
    selection = {
        "monitor": config.trainer.monitor,
        "best_score": None,
        "checkpoint": ckpt.name,
        "epoch": state.get("epoch"),
        "epochs_trained": state.get("epoch"),
        "validation": {"val/macro_f1_calibrated": rule.val_macro_f1},
        "exported_from_checkpoint": True,
    }
    return write_fold_bundle(out, config, datamodule, model, rule, selection)
