"""Slide-level training: bags of patch features → attention-MIL classifier → per-hospital reports.

``data`` (bags, padded batches, DataModule), ``splits`` (hospital-aware, patient-grouped),
``module`` (the LightningModule), ``fit`` (``run_training``, behind ``wsi-train``),
``predict`` (test predictions and the validation-fitted decision rule), ``metrics`` and
``report`` (per-hospital metrics and outputs), ``attention`` (heatmaps).
"""
