"""Slide-level training: bags of patch features → attention-MIL classifier → per-hospital reports.

``data`` (bags, padded batches, DataModule), ``splits`` (hospital-aware, patient-grouped),
``module`` (the LightningModule), ``build`` (aggregator + loss of one fold), ``fit``
(``run_fold`` and ``run_training``, behind ``wsi-train``; they return the frozen records
of ``results``), ``predict`` (test predictions and the validation-fitted decision rule),
``metrics`` and ``report`` (per-hospital metrics and outputs), ``attention`` (heatmaps).
"""
