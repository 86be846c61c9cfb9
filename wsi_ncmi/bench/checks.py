"""Value checks of a loaded :class:`~wsi_ncmi.bench.config.BenchConfig`.

Types are checked while loading, by jsonargparse (:mod:`wsi_ncmi.bench.parser`).
"""

from __future__ import annotations

from pathlib import Path

from wsi_ncmi.bench.config import _LABEL, BENCH_OWNED_DATA, TRAIN_SECTIONS, BenchConfig
from wsi_ncmi.errors import ConfigError


def validate(config: BenchConfig) -> None:
    """Check values and fill the default labels.

    Raises:
        ConfigError: The first problem found.
    """
    from wsi_ncmi.losses import list_losses
    from wsi_ncmi.mil import list_aggregators

    if not _LABEL.match(config.name):
        raise ConfigError(f"name must match {_LABEL.pattern}, got {config.name!r}")
    sweep = config.sweep
    for kind, entries, known in (
        ("losses", sweep.losses, list_losses()),
        ("models", sweep.models, list_aggregators()),
    ):
        if not entries:
            raise ConfigError(f"sweep.{kind} must name at least one entry")
        for entry in entries:
            if entry.name not in known:
                raise ConfigError(f"sweep.{kind}: name must be one of {known}, got {entry.name!r}")
            entry.label = entry.label or entry.name
            if not _LABEL.match(entry.label):
                raise ConfigError(
                    f"sweep.{kind}: label must match {_LABEL.pattern}, got {entry.label!r}"
                )
        labels = [e.label for e in entries]
        if len(set(labels)) != len(labels):
            raise ConfigError(f"sweep.{kind} labels must be distinct, got {labels}")
    if not sweep.seeds or len(set(sweep.seeds)) != len(sweep.seeds):
        raise ConfigError(f"sweep.seeds must be distinct and non-empty, got {sweep.seeds}")
    loss_labels = [e.label for e in sweep.losses]
    for role in ("baseline", "treatment"):
        value = getattr(sweep, role)
        if value not in loss_labels:
            raise ConfigError(
                f"sweep.{role} must be one of the loss labels {loss_labels}, got {value!r}"
            )
    for where, split in [("sweep.split", sweep.split)] + [
        (f"sweep.splits.{name}", s) for name, s in sweep.splits.items()
    ]:
        if split.file is not None:
            raise ConfigError(
                f"{where}.file must not be set: the benchmark writes one split file per seed "
                "under <bench>/splits/"
            )
    _validate_suite(config)
    _validate_loss_arguments(config)
    if config.jobs < 1:
        raise ConfigError(f"jobs must be >= 1, got {config.jobs!r}")
    if config.torch_threads is not None and config.torch_threads < 1:
        raise ConfigError(f"torch_threads must be >= 1 or null, got {config.torch_threads!r}")
    if config.stats.bootstrap < 100:
        raise ConfigError(f"stats.bootstrap must be >= 100, got {config.stats.bootstrap!r}")
    if not 0.0 < config.stats.alpha < 1.0:
        raise ConfigError(f"stats.alpha must be in (0, 1), got {config.stats.alpha!r}")
    overrides = (
        [("train", config.train)]
        + [(f"sweep.losses[{i}].train", e.train) for i, e in enumerate(config.sweep.losses)]
        + [(f"sweep.models[{i}].train", e.train) for i, e in enumerate(config.sweep.models)]
    )
    for where, train in overrides:
        unknown = sorted(set(train) - set(TRAIN_SECTIONS))
        if unknown:
            raise ConfigError(
                f"{where} has unknown sections {unknown}; allowed: {list(TRAIN_SECTIONS)}"
            )
        owned = sorted(set(train.get("data") or {}) & set(BENCH_OWNED_DATA))
        if owned:
            raise ConfigError(
                f"{where}.data must not set {owned}: set them in the top-level data section"
            )


def _validate_loss_arguments(config: BenchConfig) -> None:
    """Build every loss variant once, so a misspelt argument is exit 2 before any work.

    ``build_loss(name, num_classes=C)`` works for every registered loss; the registry
    binds the arguments to the loss's signature (naming the closest valid one) and the
    loss checks their values.
    """
    from wsi_ncmi.bench.suite import expand_grid
    from wsi_ncmi.losses import build_loss
    from wsi_ncmi.manifest import LABELS

    for entry in config.sweep.losses:
        for variant in expand_grid(entry):
            try:
                build_loss(variant.name, num_classes=len(LABELS), **variant.kwargs)
            except ConfigError as err:
                raise ConfigError(f"sweep.losses[{variant.label}].kwargs: {err}") from err


def _validate_suite(config: BenchConfig) -> None:
    """Named splits, tuning grids, baselines and the synthetic source."""
    sweep = config.sweep
    for name in sweep.splits:
        if not _LABEL.match(name):
            raise ConfigError(f"sweep.splits: a name must match {_LABEL.pattern}, got {name!r}")
    heads = ("kwargs", *TRAIN_SECTIONS)
    for entry in sweep.losses:
        for key, values in entry.grid.items():
            head, _, rest = key.partition(".")
            if head not in heads or not rest:
                raise ConfigError(
                    f"sweep.losses[{entry.label}].grid: key {key!r} must be 'kwargs.<arg>' or "
                    f"'<section>.<key>' with a section in {list(TRAIN_SECTIONS)}"
                )
            if not isinstance(values, list) or not values:
                raise ConfigError(
                    f"sweep.losses[{entry.label}].grid.{key} must be a non-empty list, "
                    f"got {values!r}"
                )
    extra = sorted(set(sweep.tuning.seeds) - set(sweep.seeds))
    if any(e.grid for e in sweep.losses) and (sweep.seeds[0] not in sweep.tuning.seeds or extra):
        raise ConfigError(
            f"sweep.tuning.seeds must be a subset of sweep.seeds {sweep.seeds} holding its "
            f"first seed {sweep.seeds[0]} (the one with heatmaps), got {sweep.tuning.seeds}"
        )
    tuned = sweep.tuning.models
    model_labels = [m.label for m in sweep.models]
    if tuned is not None and (not tuned or sorted(set(tuned) - set(model_labels))):
        raise ConfigError(
            f"sweep.tuning.models must be null or a non-empty list of the aggregator labels "
            f"{model_labels}, got {tuned}"
        )
    labels = [e.label for e in sweep.losses]
    treatments = [sweep.treatment, *sweep.treatments]
    unknown_treatments = sorted(set(sweep.treatments) - set(labels))
    if unknown_treatments:
        raise ConfigError(f"sweep.treatments must be loss labels {labels}, got {sweep.treatments}")
    unknown = sorted(set(sweep.baselines) - set(labels))
    if unknown or set(treatments) & set(sweep.baselines):
        raise ConfigError(
            f"sweep.baselines must be loss labels other than the treatments "
            f"{treatments}; allowed: {labels}, got {sweep.baselines}"
        )
    from wsi_ncmi.bench.config import BENCH_OWNED_EXTRACT
    from wsi_ncmi.features.config import ExtractConfig

    allowed = sorted(set(ExtractConfig.__dataclass_fields__) - set(BENCH_OWNED_EXTRACT))
    unknown = sorted(set(config.prepare.extract) - set(allowed))
    if unknown:
        raise ConfigError(f"prepare.extract has unknown keys {unknown}; allowed: {allowed}")
    synth, data = config.data.synth, config.data
    if synth is not None:
        from wsi_ncmi.synth.presets import PRESETS

        if synth.preset not in PRESETS:
            raise ConfigError(
                f"data.synth.preset must be one of {sorted(PRESETS)}, got {synth.preset!r}"
            )
        if data.slide_dir is None or Path(data.manifest) != Path(data.slide_dir) / "manifest.csv":
            raise ConfigError(
                "data.synth needs data.slide_dir (the cohort folder) and data.manifest = "
                f"<slide_dir>/manifest.csv; got slide_dir={data.slide_dir!r}, "
                f"manifest={data.manifest!r}"
            )
