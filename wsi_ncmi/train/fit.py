"""``run_training``: the library function behind ``wsi-train`` (one call, every fold).

For each fold of the split: build the DataModule, the aggregator and the loss from the
registries, train with checkpointing and early stopping on the validation metric, predict
the test part with the best checkpoint, and write the fold's reports. Then pool the test
predictions of all folds (in ``loho`` each slide is tested exactly once) and write the
run's ``metrics.json``, ``predictions.csv``, confusion matrices and summary table.

Run folder::

    <out_dir>/config.json  splits.json  metrics.json  predictions.csv  summary.txt
    <out_dir>/confusion_<group>.png
    <out_dir>/<fold>/checkpoints/{best-*.ckpt,last.ckpt}  logs/  metrics.json
    <out_dir>/<fold>/curves.png  attention_topk.csv  heatmaps/<slide>.png
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint

from wsi_ncmi._version import __version__
from wsi_ncmi.batch.atomic import write_text_atomic
from wsi_ncmi.errors import ConfigError
from wsi_ncmi.losses.callbacks import CentroidUpdate, EscapeMonitor, NCMIDiagnostics
from wsi_ncmi.manifest import LABELS, ManifestRow, read_manifest
from wsi_ncmi.quiet import drop_lightning_tips, lightning_loop
from wsi_ncmi.train.attention import export_attention
from wsi_ncmi.train.build import build_loggers, build_model
from wsi_ncmi.train.checkpoint_io import AtomicCheckpointIO, resume_checkpoint
from wsi_ncmi.train.config import TrainConfig, epoch_budget
from wsi_ncmi.train.diagnostics import diagnostics_table, fold_diagnostics
from wsi_ncmi.train.empty import empty_note
from wsi_ncmi.train.export import selection_of, write_fold_bundle
from wsi_ncmi.train.folds import fold_datamodule
from wsi_ncmi.train.html import write_training_html
from wsi_ncmi.train.predict import (
    decision_reports,
    fit_decision_rule,
    predict_slides,
    probe_embeddings,
)
from wsi_ncmi.train.qupath import export_qupath
from wsi_ncmi.train.report import (
    compute_report,
    epoch_history,
    plot_confusion_matrices,
    plot_curves,
    prediction_records,
    summary_table,
    write_json,
    write_predictions,
)
from wsi_ncmi.train.results import FoldResult, TrainingResult
from wsi_ncmi.train.splits import SplitSet, load_splits, save_splits, splits_for

log = logging.getLogger(__name__)


def _resolve_splits(config: TrainConfig, rows: Sequence[ManifestRow], out_dir: Path) -> SplitSet:
    path = out_dir / "splits.json"
    split = config.split
    if split.file is not None:
        splits = load_splits(split.file, rows)
    elif config.resume and path.is_file():
        splits = load_splits(path, rows)
    else:
        splits = splits_for(rows, split, config.seed)
    save_splits(splits, path)
    return splits


def run_fold(
    config: TrainConfig,
    fold_index: int,
    splits_file: Path,
    fold_dir: Path,
    callbacks: Sequence[Callback] = (),
) -> FoldResult:
    """Train and evaluate one fold.

    Args:
        config: The run configuration.
        fold_index: Index of the fold in ``splits_file``.
        splits_file: The run's ``splits.json``.
        fold_dir: Output folder of the fold.
        callbacks: Extra Lightning callbacks (tests use them to simulate a kill).

    Returns:
        The fold's result (its JSON-ready part is also written to ``<fold_dir>/metrics.json``).
    """
    L.seed_everything(config.seed, workers=True, verbose=False)
    data = config.data
    datamodule = fold_datamodule(config, fold_index, splits_file)
    fold = datamodule.fold
    assert fold is not None  # set by setup
    model = build_model(config, datamodule)
    num_classes = datamodule.num_classes
    tc = config.trainer
    steps_per_epoch = datamodule.train_steps_per_epoch(tc.accumulate_grad_batches)
    max_epochs, patience = epoch_budget(tc, steps_per_epoch)
    checkpoint = ModelCheckpoint(
        dirpath=fold_dir / "checkpoints",
        filename="best-{epoch:03d}",
        monitor=tc.monitor,
        mode=tc.mode,
        save_top_k=1,
    )
    # Lightning saves ``save_last`` only in epochs that improve the metric; resuming needs
    # every epoch, so a second, unmonitored checkpoint keeps the latest one.
    latest = ModelCheckpoint(
        dirpath=fold_dir / "checkpoints", filename="last", enable_version_counter=False
    )
    trainer_callbacks: list[Callback] = [
        checkpoint,
        latest,
        CentroidUpdate(num_classes),
        NCMIDiagnostics(num_classes),
        EscapeMonitor(num_classes),
        *callbacks,
    ]
    if patience > 0:
        trainer_callbacks.append(EarlyStopping(tc.monitor, patience=patience, mode=tc.mode))
    drop_lightning_tips()
    trainer = L.Trainer(
        max_epochs=max_epochs,
        accelerator=tc.accelerator,
        devices=tc.devices,
        precision=tc.precision,  # type: ignore[arg-type]
        deterministic=tc.deterministic,
        accumulate_grad_batches=tc.accumulate_grad_batches,
        gradient_clip_val=tc.gradient_clip_val,
        callbacks=trainer_callbacks,
        logger=build_loggers(tc.logger, fold_dir),
        default_root_dir=fold_dir,
        enable_progress_bar=tc.progress_bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
        plugins=[AtomicCheckpointIO()],
    )
    last = fold_dir / "checkpoints" / "last.ckpt"
    found = resume_checkpoint(fold_dir / "checkpoints") if config.resume else None
    resume_from = str(found) if found is not None else None
    if resume_from:
        log.info("resuming fold %s from %s", fold.name, resume_from)
    with lightning_loop(resuming=resume_from is not None):
        trainer.fit(model, datamodule=datamodule, ckpt_path=resume_from)
    best = checkpoint.best_model_path or (str(last) if last.is_file() else None)
    rows = datamodule.rows["test"]
    val_predictions = predict_slides(trainer, model, datamodule.val_dataloader(), best)
    rule = fit_decision_rule(val_predictions, datamodule.class_counts())
    predictions = predict_slides(trainer, model, datamodule.test_dataloader(), best) if rows else []
    probe = probe_embeddings(
        predict_slides(trainer, model, datamodule.full_bag_loader("train"), best),
        {"val": val_predictions, "test": predictions},
        num_classes,
    )
    records = prediction_records(
        rows, predictions, f"{fold.name}/test", rule=rule, decision=config.report.decision
    )
    # Heatmap titles and QuPath tiles show the reported rule's prediction.
    shown = [
        p | {"pred": LABELS.index(r["pred_label"])}
        for p, r in zip(predictions, records, strict=True)
    ]
    paths = [datamodule.path_of(r) for r in rows]
    attention = export_attention(
        rows,
        shown,
        paths,
        fold_dir,
        top_k=config.report.attention_top_k,
        max_heatmaps=config.report.max_heatmaps,
        slide_dir=Path(data.slide_dir) if data.slide_dir else None,
        class_names=LABELS,
    )
    export_qupath(
        rows,
        shown,
        paths,
        fold_dir / "qupath",
        class_names=LABELS,
        max_slides=config.report.max_geojson,
    )
    history = []
    for metrics_csv in sorted((fold_dir / "logs").glob("version_*/metrics.csv")):
        history += epoch_history(metrics_csv)
    plot_curves(history, fold_dir / "curves.png")
    manifest_rows = read_manifest(data.manifest)
    metrics = compute_report(
        records, manifest_rows, n_bootstrap=config.report.bootstrap, seed=config.seed
    )
    by_decision = decision_reports(records, manifest_rows, config)
    result = FoldResult(
        fold=fold.name,
        test_centers=list(fold.test_centers),
        best_checkpoint=best,
        best_score=(
            float(checkpoint.best_model_score) if checkpoint.best_model_score is not None else None
        ),
        epochs_trained=trainer.current_epoch,
        excluded=datamodule.excluded,
        no_tissue_excluded=datamodule.empty,
        metrics=metrics,
        decision_rule=rule,
        by_decision=by_decision,
        attention=attention,
        probe=probe,
        history=history,
        records=records,
    )
    write_fold_bundle(
        fold_dir / "model", config, datamodule, model, rule, selection_of(result, tc.monitor)
    )
    write_json(result.to_json(per_slide=True), fold_dir / "metrics.json")
    return result


def clear_killed_writers(out_dir: Path) -> int:
    """Remove what killed runs left half-written in a run folder; return how many files.

    Our own temp files go when their writer's process is gone
    (:func:`wsi_ncmi.batch.remove_stale_temp_files`); checkpoint temp files (``*.tmp``
    under ``<fold>/checkpoints/``, from Lightning's atomic save) are removed too: one run
    folder is trained by one ``wsi-train`` at a time.
    """
    from wsi_ncmi.batch import remove_stale_temp_files

    removed = remove_stale_temp_files(out_dir)
    for leftover in out_dir.glob("*/checkpoints/*.tmp"):
        leftover.unlink(missing_ok=True)
        removed += 1
    return removed


def run_training(
    config: TrainConfig, callbacks: Sequence[Callback] = (), *, config_yaml: str | None = None
) -> TrainingResult:
    """Train and evaluate every selected fold, then pool the test predictions.

    One writer per run folder: the run holds ``<out_dir>/locks/train.lock``
    (:func:`wsi_ncmi.batch.locks.claim_folder`) from before its first write to its end.

    Args:
        config: The resolved configuration.
        callbacks: Extra Lightning callbacks for every fold.
        config_yaml: Written as ``<out_dir>/config.yaml`` once the folder is claimed.

    Returns:
        The pooled report, the folds and the summary table (also written to
        ``<out_dir>/metrics.json`` and ``summary.txt``).

    Raises:
        ConfigError: Bad configuration or fold indices, or another live run holds the
            folder (the message names its pid and host).
        ManifestError: Bad manifest.
        MissingFeaturesError: Slides without features under ``missing="error"``.
        NonFiniteError: NaN/inf features or training loss.
    """
    from wsi_ncmi.batch.locks import claim_folder

    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with claim_folder(out_dir, "train"):
        if config_yaml is not None:
            write_text_atomic(out_dir / "config.yaml", config_yaml)
        return _run_training(config, out_dir, callbacks)


def _run_training(
    config: TrainConfig, out_dir: Path, callbacks: Sequence[Callback]
) -> TrainingResult:
    clear_killed_writers(out_dir)
    write_json({"version": __version__, "config": asdict(config)}, out_dir / "config.json")
    rows = read_manifest(config.data.manifest)
    splits = _resolve_splits(config, rows, out_dir)
    selected = config.split.folds if config.split.folds is not None else range(len(splits.folds))
    bad = [k for k in selected if not 0 <= k < len(splits.folds)]
    if bad:
        raise ConfigError(f"split.folds must be in [0, {len(splits.folds)}), got {bad}")
    folds: list[FoldResult] = []
    for k in selected:
        fold_dir = out_dir / splits.folds[k].name
        folds.append(run_fold(config, k, out_dir / "splits.json", fold_dir, callbacks))
    records = [r for f in folds for r in f.records]
    write_predictions(records, out_dir / "predictions.csv")
    report = compute_report(records, rows, n_bootstrap=config.report.bootstrap, seed=config.seed)
    plot_confusion_matrices(report, out_dir)
    by_decision = decision_reports(records, rows, config)
    title = (
        f"{config.model.name} + {config.loss.name}, split {splits.kind}, test slides, "
        f"{config.report.decision} decision rule"
    )
    table = summary_table(report, title)
    for name, alt in by_decision.items():
        if name != config.report.decision:
            table += f"\n{name} rule: pooled macro-F1 {alt.pooled.scalar('macro_f1'):.3f}"
    no_tissue = sorted({s for f in folds for s in f.no_tissue_excluded})
    if no_tissue:
        table += "\n" + empty_note(no_tissue)
    diagnostics = diagnostics_table(folds, config.trainer.monitor)
    table += "\n\n" + diagnostics
    write_text_atomic(out_dir / "summary.txt", table + "\n")
    metrics = report.to_json()
    write_json(
        {
            "version": __version__,
            "pooled": metrics["pooled"],
            "per_center": metrics["per_center"],
            "decision": config.report.decision,
            "by_decision": {rule: r.to_json() for rule, r in by_decision.items()},
            "no_tissue_excluded": no_tissue,
            "folds": [f.to_json(history=False) for f in folds],
            "diagnostics": [fold_diagnostics(f).to_json() for f in folds],
        },
        out_dir / "metrics.json",
    )
    write_training_html(
        out_dir,
        title=title,
        report=report,
        by_decision=by_decision,
        decision=config.report.decision,
        config_dict=asdict(config),
        encoder=config.data.encoder,
        overlays_dir=Path(config.data.features_root) / "thumbnails",
        diagnostics=diagnostics,
        no_tissue_excluded=no_tissue,
    )
    return TrainingResult(report, by_decision, tuple(folds), table)
