"""``ExtractConfig``: the resolved settings of one ``wsi-extract`` run, and their checks.

Read by the extraction stage (:mod:`wsi_ncmi.features.run` and the modules it drives), by
``wsi-extract``'s parser (the fields are its flags) and by ``wsi-bench``'s ``prepare``
section. Every output records these settings in its attributes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from wsi_ncmi.errors import ConfigError
from wsi_ncmi.features.schema import FEATURE_DTYPES
from wsi_ncmi.jsontypes import JSONObject

PRECISIONS = {"32": "32-true", "bf16": "bf16-mixed", "16": "16-mixed"}
SPEC_PRECISION = {"fp32": "32-true", "bf16": "bf16-mixed", "fp16": "16-mixed"}


@dataclass(frozen=True)
class ExtractConfig:
    """Resolved settings of one extraction run (saved in every output's attributes).

    Attributes:
        coords_dir: Directory of ``<slide_id>.h5`` coords files (``wsi-tile`` output).
        out_dir: Output root; features go to ``<out>/features/<encoder>/``.
        encoder: Registered encoder name or ``timm:<model>``.
        weights: Local checkpoint instead of the encoder's download source.
        random_init: Random weights (tests/demos; recorded in every output).
        device: ``cpu``, ``cuda`` or ``auto`` (cuda when available).
        devices: Devices per node (``"1"``, ``"4"``, ``"auto"``); ranks split slides.
        num_nodes: Nodes (SLURM/torchrun).
        batch_size: Patches per batch; ``None``: 256 on GPU, 64 on CPU.
        workers: DataLoader workers; ``None``: CPU count − 2, between 1 and 12.
        precision: ``auto`` (the spec's on GPU, 32 on CPU), ``32``, ``bf16``, ``16``.
        dtype: Stored feature dtype (``float16`` or ``float32``).
        allow_mpp_mismatch: Accept a tiling µm/px other than the encoder's.
        mpp_tolerance: Relative µm/px difference still counted as a match.
        max_bad_fraction: A slide with more undecodable tiles than this fails.
        shard: ``i/N`` to process one deterministic part of the cohort.
        skip_errors: Record failed slides and continue (else stop at the first).
        lock: Per-slide lock files so concurrent jobs can share a cohort.
        wait_locked: After this run's own slides, wait for slides that other live
            jobs hold (taking over the locks of dead holders), so every slide ends
            ``ok`` or ``skipped``; off: report them as ``locked`` at once.
        max_wait_s: Stop waiting after this many seconds and report the rest as
            ``locked`` (``None``: wait until they are done or their holders die).
        poll_s: Seconds between checks while waiting for locked slides.
        slide_dir: Look slides up here by file name (when they moved since tiling).
        backend: Slide reader: ``auto`` (or unset) decodes the JPEG tiles of tiled
            TIFF-family slides straight from the file (``tiledecode``) and reads other
            formats with the backend recorded in the coords file; ``openslide``,
            ``tiffslide``, ``tiledecode`` or ``cucim`` (the ``cucim`` extra) force one.
            The reader is recorded in every output and in its resume key.
        expect_coords_hash: Refuse coords files with another ``params_hash``.
        compile_model: ``torch.compile`` the encoder.
        gpu_decode: On a CUDA device, decode the JPEG tiles of tile-decode slides on the
            GPU (nvJPEG through torchvision; the workers only read bytes). Recorded as the
            reader ``tiledecode+nvjpeg``. Not measured yet; needs torchvision.
        strip_reads: Read horizontal neighbour patches with one call.
        progress: Show a progress bar.
        redo: Slide ids to extract again even when their features files are fine.
        force: Extract every slide again.
        loader_timeout_s: Seconds without a batch from the DataLoader workers before the
            run stops with :class:`~wsi_ncmi.errors.WorkerFailedError` (a stall, e.g. a
            full ``/dev/shm``).
    """

    coords_dir: Path
    out_dir: Path
    encoder: str = "random-cnn"
    weights: Path | None = None
    random_init: bool = False
    device: Literal["cpu", "cuda", "auto"] = "auto"
    devices: str = "1"
    num_nodes: int = 1
    batch_size: int | None = None
    workers: int | None = None
    precision: str = "auto"
    dtype: str = "float16"
    allow_mpp_mismatch: bool = False
    mpp_tolerance: float = 0.05
    max_bad_fraction: float = 0.1
    shard: str | None = None
    skip_errors: bool = False
    lock: bool = True
    wait_locked: bool = True
    max_wait_s: float | None = None
    poll_s: float = 1.0
    slide_dir: Path | None = None
    backend: str | None = None
    expect_coords_hash: str | None = None
    compile_model: bool = False
    gpu_decode: bool = False
    strip_reads: bool = True
    progress: bool = True
    redo: tuple[str, ...] = ()
    force: bool = False
    loader_timeout_s: float = 600.0

    def __post_init__(self) -> None:
        """Check the values as the config is built (library callers get the same errors).

        Raises:
            ConfigError: A value out of range, naming the parameter and the value.
        """
        if self.device not in ("cpu", "cuda", "auto"):
            raise ConfigError(f"--device must be cpu, cuda or auto, got {self.device!r}")
        if self.precision not in ("auto", *PRECISIONS):
            raise ConfigError(
                f"--precision must be auto, {', '.join(PRECISIONS)}; got {self.precision!r}"
            )
        if self.dtype not in FEATURE_DTYPES:
            raise ConfigError(f"--dtype must be one of {FEATURE_DTYPES}, got {self.dtype!r}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"--batch_size must be >= 1, got {self.batch_size!r}")
        if self.workers is not None and self.workers < 0:
            raise ConfigError(f"--workers must be >= 0, got {self.workers!r}")
        if self.max_wait_s is not None and not self.max_wait_s >= 0:
            raise ConfigError(f"--max_wait_s must be >= 0 seconds, got {self.max_wait_s!r}")
        if not self.loader_timeout_s > 0:
            raise ConfigError(
                f"--loader_timeout_s must be > 0 seconds, got {self.loader_timeout_s!r}"
            )
        if not self.poll_s > 0:
            raise ConfigError(f"poll_s must be > 0 seconds, got {self.poll_s!r}")
        if not 0.0 <= self.max_bad_fraction <= 1.0:
            raise ConfigError(f"--max_bad_fraction must be in [0, 1], got {self.max_bad_fraction}")
        from wsi_ncmi.slide import BACKEND_CHOICES

        if self.backend is not None and self.backend not in BACKEND_CHOICES:
            raise ConfigError(
                f"--backend must be one of {', '.join(BACKEND_CHOICES)}, got {self.backend!r}"
            )

    def check_environment(self) -> None:
        """What this host must provide for the run: the coords folder, the cucim extra.

        Called when the run starts (not when the config is built: a config may be written
        for another machine, or before tiling).

        Raises:
            ConfigError: A missing folder or extra, naming the fix.
        """
        if self.backend == "cucim":
            from wsi_ncmi.slide.cucim import CUCIM_MISSING, cucim_available

            if not cucim_available():
                raise ConfigError(CUCIM_MISSING)
        if not self.coords_dir.is_dir():
            raise ConfigError(
                f"--coords_dir must be a directory of coords .h5 files: {self.coords_dir}"
            )

    def to_dict(self) -> JSONObject:
        """JSON-ready form."""
        return {
            k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(self).items()
        }


__all__ = ["PRECISIONS", "SPEC_PRECISION", "ExtractConfig"]
