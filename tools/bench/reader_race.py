"""Reader race (issue 26): the extraction pipeline against the readers it could use.

    .venv/bin/python tools/bench/reader_race.py [--slides 4] [--size 4096] [--rounds 3]

Generates ``--slides`` JPEG-tiled slides of ``--size``² px at 0.25 µm/px (256-px tiles, as
``tools/bench/extract_speed.py`` writes them, but with an Aperio-like pyramid whose levels
shrink 4× each, so a 0.5 µm/px grid is read from level 0) and two grids on each:

* ``aligned``: 256-px patches at 0.25 µm/px on the tile grid (one patch = one tile);
* ``unaligned``: 256-px patches at 0.5 µm/px (512 px read at level 0, resized), the grid
  shifted by (100, 60) px so that no patch edge meets a tile edge.

On each grid, in one process, alternated round by round (the host's load drifts), best
of ``--rounds``: the full pipeline (Lightning predict, DataLoader with 0 workers, HDF5
writer; encoder stubbed) with ``--backend auto`` (tile decode) and ``--backend openslide``
(the path before issue 26); the pipeline's dataset alone (jobs loaded, batches read, nothing
encoded or written); OpenSlide ``read_region`` in 8-patch strips; cuCIM's batched
``read_region`` (1 worker, CPU; when ``cucim`` imports); and the decode floor: tifffile +
imagecodecs, each JPEG tile covering the grid decoded once to RGB (the page's colour space,
as every reader decodes it), nothing assembled or resized, into a new array per tile
(``decode_floor``) or into one reused buffer (``decode_floor_reused_buffer``: decoding
alone, without the page faults of new memory).
Prints one JSON object (patches/s and ratios). Compare ratios, not absolute rates.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from _features import coords_attrs, grid
from _slides import tissue_image

from wsi_ncmi.features.config import ExtractConfig
from wsi_ncmi.features.encoders import EncoderSpec
from wsi_ncmi.features.encoders.registry import EncoderModule
from wsi_ncmi.features.run import run_extraction
from wsi_ncmi.slide import open_slide
from wsi_ncmi.slide.tiledecode import clear_tile_cache
from wsi_ncmi.tiling.schema import read_coords, write_coords

TILE = 256
SLIDE_MPP = 0.25
GRIDS = {  # name: (target µm/px, read size at level 0, grid origin)
    "aligned": (0.25, 256, (0, 0)),
    "unaligned": (0.5, 512, (100, 60)),
}


class IdentityStub(EncoderModule):
    """The encoder stubbed out: one pixel per patch, no preprocessing."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images[:, 0, 0, :].float()


def write_slide(path: Path, image: np.ndarray) -> Path:
    """A JPEG-tiled pyramid at 0.25 µm/px whose levels shrink 4× (down to ≥ 256 px).

    Levels are successive top-level pages, the reduced ones with ``subfiletype=1``, as
    ``tests/_slides.py`` writes them (so OpenSlide reads every level).
    """
    import cv2
    import tifffile

    with tifffile.TiffWriter(path) as tif:
        level, mpp = image, SLIDE_MPP
        while True:
            tif.write(
                level, photometric="rgb", tile=(TILE, TILE), compression="jpeg",
                subfiletype=1 if mpp != SLIDE_MPP else 0, metadata=None,
                resolution=(1e4 / mpp, 1e4 / mpp), resolutionunit="CENTIMETER",
            )  # fmt: skip
            h, w = level.shape[:2]
            if min(h, w) // 4 < TILE:
                return path
            level = cv2.resize(level, (w // 4, h // 4), interpolation=cv2.INTER_AREA)
            mpp *= 4


def make_cohort(root: Path, n: int, size: int) -> dict[str, Path]:
    """``n`` slides and, per grid, a coords folder; ``{grid: coords_dir}``."""
    from wsi_ncmi.slide.identity import SlideIdentity

    slides = [write_slide(root / f"s{i}.tif", tissue_image(size, size, seed=i)) for i in range(n)]
    dirs: dict[str, Path] = {}
    for name, (target, read_px, (ox, oy)) in GRIDS.items():
        coords_dir = root / f"coords_{name}"
        coords_dir.mkdir()
        for i, path in enumerate(slides):
            attrs = coords_attrs(
                path, f"s{i}", backend="openslide", mpp_x=SLIDE_MPP, mpp_y=SLIDE_MPP,
                target_mpp=target, patch_size_px=256, patch_size_level0=float(read_px),
                read_size_px=read_px, resize_factor=256 / read_px, stride_level0=read_px,
                **SlideIdentity.of_file(path, (size, size)).to_attrs(),
            )  # fmt: skip
            coords = grid(size - ox, size - oy, read_px) + np.array([ox, oy])
            write_coords(coords_dir / f"s{i}.h5", coords, np.ones(len(coords)), attrs)
        dirs[name] = coords_dir
    return dirs


def _jobs(coords_dir: Path) -> list[tuple[str, np.ndarray, int]]:
    out = []
    for f in sorted(coords_dir.glob("*.h5")):
        cf = read_coords(f)
        out.append((str(cf.attrs["slide_path"]), cf.coords, int(cf.attrs["read_size_px"])))
    return out


STUB_SPEC = EncoderSpec(
    name="stub-identity", family="builtin", out_dim=3, input_size_px=None, mpp=None
)


def _config(coords_dir: Path, out: Path, backend: str, batch_size: int) -> ExtractConfig:
    return ExtractConfig(
        coords_dir=coords_dir, out_dir=out, encoder=STUB_SPEC.name, device="cpu",
        batch_size=batch_size, workers=0, progress=False, lock=False, backend=backend,
    )  # fmt: skip


def pipeline(coords_dir: Path, out: Path, backend: str, batch_size: int) -> int:
    """The full pipeline, encoder stubbed; patches extracted (``out`` must not exist).

    Starts with an empty tile cache (no decoded tile is carried from an earlier round).
    """
    clear_tile_cache()
    stub = IdentityStub(STUB_SPEC, torch.nn.Identity()).eval()
    report = run_extraction(_config(coords_dir, out, backend, batch_size), encoder=stub)
    return sum(r.count for r in report.results if r.status == "ok")


def dataset_only(coords_dir: Path, batch_size: int) -> int:
    """The pipeline's dataset alone: jobs loaded, every batch read, nothing encoded or written.

    Batches are read in order with one in flight (the next is read before the previous is
    dropped, as Lightning prefetches). Starts with an empty tile cache. Returns the
    patches read.
    """
    from wsi_ncmi.batch import RunReport
    from wsi_ncmi.features.plan import load_jobs
    from wsi_ncmi.features.read import PatchBatchDataset

    clear_tile_cache()
    config = _config(coords_dir, coords_dir.parent / "unused", "auto", batch_size)
    jobs = load_jobs(config, STUB_SPEC, RunReport("extract", params={}))
    batches = PatchBatchDataset(jobs, batch_size)
    held = None
    for index in range(len(batches)):
        held = batches[index]
    del held
    return sum(len(job) for job in jobs)


def openslide_strips(coords_dir: Path, per_strip: int = 8) -> int:
    """OpenSlide ``read_region`` of 8 horizontal neighbours at a time, sliced and resized."""
    import cv2

    n = 0
    for path, coords, read_px in _jobs(coords_dir):
        with open_slide(path, "openslide") as slide:
            for i in range(0, len(coords), per_strip):
                run = coords[i : i + per_strip]
                x, y = (int(v) for v in run[0])
                strip = slide.read_region((x, y), 0, (read_px * len(run), read_px))
                for k in range(len(run)):
                    patch = strip[:, k * read_px : (k + 1) * read_px]
                    if read_px != 256:
                        patch = cv2.resize(patch, (256, 256), interpolation=cv2.INTER_AREA)
                    n += 1
    return n


def cucim_batched(coords_dir: Path) -> int:
    """cuCIM's batched ``read_region`` (1 worker, CPU), resized like the pipeline."""
    import cv2
    from cucim import CuImage

    n = 0
    for path, coords, read_px in _jobs(coords_dir):
        image = CuImage(path)
        flat = [int(v) for xy in coords for v in xy]
        for batch in image.read_region(flat, (read_px, read_px), 0, batch_size=64, num_workers=1):
            for patch in np.asarray(batch):
                if read_px != 256:
                    patch = cv2.resize(patch, (256, 256), interpolation=cv2.INTER_AREA)
                n += 1
    return n


def floor_tiles(
    path: str, coords: np.ndarray, read_px: int, out: np.ndarray | None = None
) -> Iterator[np.ndarray]:
    """Each JPEG tile of level 0 under ``coords`` decoded once, to RGB, in file order.

    The JPEG colour space is the page's (TIFF photometric YCbCr or RGB), so the pixels are
    those OpenSlide returns: decoding YCbCr tiles as RGB would skip the colour conversion
    that every reader does and make the floor faster than any correct reader. ``out``: a
    ``(TILE, TILE, 3)`` uint8 buffer every tile is decoded into (yielded each time);
    default: a new array per tile.
    """
    import imagecodecs
    import tifffile

    with tifffile.TiffFile(path) as tif, open(path, "rb") as fh:
        page = tif.pages[0]
        assert isinstance(page, tifffile.TiffPage)  # level 0 is a page, not a frame
        space = {2: "RGB", 6: "YCBCR"}[int(page.photometric)]
        across = -(-int(page.imagewidth) // TILE)
        tiles: set[int] = set()
        for x, y in coords:
            for ty in range(int(y) // TILE, (int(y) + read_px - 1) // TILE + 1):
                for tx in range(int(x) // TILE, (int(x) + read_px - 1) // TILE + 1):
                    tiles.add(ty * across + tx)
        for index in sorted(tiles):
            fh.seek(page.dataoffsets[index])
            data = fh.read(page.databytecounts[index])
            yield imagecodecs.jpeg8_decode(
                data, tables=page.jpegtables, colorspace=space, outcolorspace="RGB", out=out
            )


def decode_floor(coords_dir: Path, reuse: bool = False) -> int:
    """The decode floor: :func:`floor_tiles` of every slide; patches covered.

    ``reuse``: decode every tile into one buffer, so no new memory is touched: the cost
    of decoding alone (a new array per tile also pays the kernel's page faults).
    """
    n = 0
    out = np.empty((TILE, TILE, 3), np.uint8) if reuse else None
    for path, coords, read_px in _jobs(coords_dir):
        for _ in floor_tiles(path, coords, read_px, out):
            pass
        n += len(coords)
    return n


def main() -> None:
    """Run the race and print its JSON."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--slides", type=int, default=4)
    p.add_argument("--size", type=int, default=4096)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--grids", nargs="+", default=list(GRIDS), choices=list(GRIDS))
    args = p.parse_args()
    torch.set_num_threads(1)
    logging.getLogger("lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    try:
        import cucim  # noqa: F401

        have_cucim = True
    except ImportError:
        have_cucim = False
    root = Path(tempfile.mkdtemp(prefix="reader-race-"))
    try:
        dirs = make_cohort(root, args.slides, args.size)
        outs = iter(range(10**9))  # a fresh output folder per pipeline run

        def run_pipeline(backend: str) -> Callable[[Path], int]:
            return lambda d: pipeline(d, root / f"out{next(outs)}", backend, args.batch_size)

        runners: dict[str, Callable[[Path], int]] = {
            "pipeline_tiledecode": run_pipeline("auto"),
            "pipeline_openslide": run_pipeline("openslide"),
            "dataset_only": lambda d: dataset_only(d, args.batch_size),
            "openslide_strips": openslide_strips,
            "decode_floor": decode_floor,
            "decode_floor_reused_buffer": lambda d: decode_floor(d, reuse=True),
        }
        if have_cucim:
            runners["cucim_batched"] = cucim_batched
        for name in args.grids:  # warm the page cache and the imports
            for run in runners.values():
                run(dirs[name])
        best: dict[str, dict[str, float]] = {g: {} for g in args.grids}
        patches: dict[str, int] = {}
        for _ in range(args.rounds):
            for name in args.grids:
                for key, run in runners.items():
                    start = time.perf_counter()
                    n = run(dirs[name])
                    rate = n / (time.perf_counter() - start)
                    patches[name] = n
                    best[name][key] = max(best[name].get(key, 0.0), rate)
        result: dict[str, object] = {
            "slides": args.slides, "slide_px": args.size, "rounds": args.rounds,
            "batch_size": args.batch_size, "torch_threads": 1, "cucim": have_cucim,
        }  # fmt: skip
        for name in args.grids:
            rates = best[name]
            result[name] = {
                "patches": patches[name],
                "patches_per_s": {k: round(v, 1) for k, v in rates.items()},
                "pipeline_vs_decode_floor": round(
                    rates["pipeline_tiledecode"] / rates["decode_floor"], 3
                ),
                "dataset_vs_decode_floor": round(rates["dataset_only"] / rates["decode_floor"], 3),
                "pipeline_vs_openslide_pipeline": round(
                    rates["pipeline_tiledecode"] / rates["pipeline_openslide"], 3
                ),
                "pipeline_vs_decode_floor_reused_buffer": round(
                    rates["pipeline_tiledecode"] / rates["decode_floor_reused_buffer"], 3
                ),
                "openslide_pipeline_vs_decode_floor": round(
                    rates["pipeline_openslide"] / rates["decode_floor"], 3
                ),
            }
        print(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
