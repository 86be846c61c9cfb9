"""The extraction plan: one checked :class:`SlideJob` per coords file, and its attributes.

:func:`load_jobs` reads every coords file of a run, checks its µm/px against the
encoder's and its slide scan against the slide file there now
(:func:`~wsi_ncmi.features.provenance.check_slide_unchanged`); :func:`job_attrs` are the
attributes of a job's features file (the resume key included).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wsi_ncmi._version import __version__
from wsi_ncmi.batch import ItemResult, RunReport, select_shard
from wsi_ncmi.batch.paths import stored_path
from wsi_ncmi.errors import CacheSchemaError, ConfigError
from wsi_ncmi.features.encoders.registry import EncoderSpec
from wsi_ncmi.features.read import SlideJob
from wsi_ncmi.features.store import FEATURES_SCHEMA_VERSION, feature_path
from wsi_ncmi.jsontypes import JSONObject
from wsi_ncmi.slide import SlideRef
from wsi_ncmi.tiling.schema import params_hash, read_coords

if TYPE_CHECKING:
    from wsi_ncmi.features.config import ExtractConfig


def extraction_hash(spec: EncoderSpec, dtype: str, coords_hash: str, reader: str) -> str:
    """The resume key: encoder identity, stored dtype, coords parameters, slide reader, schema.

    ``reader`` is the backend that read the pixels (``tiledecode``, ``openslide``, ...):
    readers may differ in the last bit of a pixel, so a file made by another reader is
    extracted again rather than mixed with this run's.
    """
    return params_hash(
        {
            "encoder": spec.identity_hash,
            "dtype": dtype,
            "coords": coords_hash,
            "reader": reader,
            "schema_version": FEATURES_SCHEMA_VERSION,
        }
    )


def check_mpp(spec: EncoderSpec, target_mpp: float, config: ExtractConfig, where: str) -> None:
    """Refuse a tiling µm/px that differs from the encoder's (unless allowed).

    Raises:
        ConfigError: The mismatch, both values, and the two ways out.
    """
    if spec.mpp is None or config.allow_mpp_mismatch:
        return
    if abs(target_mpp / spec.mpp - 1.0) > config.mpp_tolerance:
        raise ConfigError(
            f"encoder {spec.name!r} expects {spec.mpp} µm/px but {where} was tiled at "
            f"{target_mpp} µm/px; re-run wsi-tile with --grid.target_mpp {spec.mpp}, or pass "
            "--allow_mpp_mismatch to extract anyway"
        )


def load_jobs(config: ExtractConfig, spec: EncoderSpec, report: RunReport) -> list[SlideJob]:
    """Read and validate every coords file; build one :class:`SlideJob` per slide.

    Unreadable coords files become ``failed`` results (or raise without skip_errors).

    Raises:
        CacheSchemaError: A bad coords file when ``skip_errors`` is off.
        ConfigError: µm/px mismatch (always raised: it concerns the whole run).
    """
    from wsi_ncmi.features.provenance import check_slide_unchanged
    from wsi_ncmi.slide import choose_reader

    paths = sorted(config.coords_dir.glob("*.h5"))
    paths = select_shard(paths, [p.stem for p in paths], config.shard)
    jobs: list[SlideJob] = []
    for path in paths:
        try:
            coords = read_coords(path, expect_hash=config.expect_coords_hash)
            attrs = coords.attrs
            check_mpp(spec, float(attrs["target_mpp"]), config, repr(str(path)))
            slide_path = Path(str(attrs["slide_path"]))
            if config.slide_dir is not None:
                slide_path = config.slide_dir / slide_path.name
            recorded = str(attrs["backend"])
            backend = choose_reader(slide_path, config.backend or "auto", fallback=recorded)
            identity = check_slide_unchanged(coords, slide_path, backend)
        except CacheSchemaError as err:  # SlideChangedError included
            if not config.skip_errors:
                raise
            report.add(
                ItemResult(path.stem, "failed", reason=str(err), error_type=type(err).__name__)
            )
            continue
        override = (
            float(attrs["mpp_x"]) if str(attrs["mpp_source"]).startswith("override") else None
        )
        jobs.append(
            SlideJob(
                slide_id=coords.slide_id,
                slide=SlideRef(str(slide_path), backend, override),
                coords=coords.coords,
                read_level=int(attrs["read_level"]),
                read_size_px=int(attrs["read_size_px"]),
                patch_size_px=int(attrs["patch_size_px"]),
                coords_path=str(path),
                coords_hash=coords.params_hash,
                target_mpp=float(attrs["target_mpp"]),
                output=feature_path(config.out_dir, spec.name, coords.slide_id),
                coords_sha256=coords.coords_sha256,
                slide_identity=identity.to_attrs(),
            )
        )
    return jobs


def job_attrs(
    job: SlideJob, spec: EncoderSpec, config: ExtractConfig, precision: str
) -> JSONObject:
    """Attributes of ``job``'s features file: provenance, settings and the resume key."""
    effective = job.target_mpp * job.patch_size_px / (spec.input_size_px or job.patch_size_px)
    return {
        "package_version": __version__,
        "slide_id": job.slide_id,
        "encoder": spec.name,
        "encoder_spec": spec.to_dict(),
        "encoder_hash": spec.identity_hash,
        "random_init": spec.random_init,
        "weights_sha256": spec.weights_revision.removeprefix("sha256:")
        if spec.weights_revision.startswith("sha256:")
        else "",
        "coords_file": stored_path(job.coords_path, job.output),
        "coords_params_hash": job.coords_hash,
        "coords_sha256": job.coords_sha256,
        **job.slide_identity,
        "target_mpp": job.target_mpp,
        "effective_mpp": effective,
        "patch_size_px": job.patch_size_px,
        "reader": job.reader,
        "extraction_hash": extraction_hash(spec, config.dtype, job.coords_hash, job.reader),
        "precision": precision,
        "config": config.to_dict(),
    }


def with_gpu_decode(jobs: list[SlideJob], accelerator: str) -> list[SlideJob]:
    """Mark the tile-decode jobs for device decoding (``--gpu_decode``).

    Raises:
        ConfigError: No CUDA device, or torchvision is missing.
    """
    if accelerator != "cuda":
        raise ConfigError("--gpu_decode needs a CUDA device (--device cuda or auto)")
    try:
        import torchvision.io  # noqa: F401
    except ImportError as err:
        raise ConfigError(
            "--gpu_decode needs torchvision (nvJPEG decode): pip install 'wsi-ncmi[encoders]'"
        ) from err
    return [
        dataclasses.replace(j, gpu_decode=True) if j.slide.backend == "tiledecode" else j
        for j in jobs
    ]


def write_empty(job: SlideJob, attrs: dict[str, Any], out_dim: int, dtype: str) -> None:
    """Write the (0-row) features file of a slide without patches, atomically."""
    from wsi_ncmi.batch import atomic_output
    from wsi_ncmi.features.store import FeatureFileWriter

    with atomic_output(job.output) as tmp:
        writer = FeatureFileWriter(tmp, job.coords, out_dim, dtype, attrs)
        writer.finish()


__all__ = [
    "check_mpp",
    "extraction_hash",
    "job_attrs",
    "load_jobs",
    "with_gpu_decode",
    "write_empty",
]
