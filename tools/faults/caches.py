"""Bad cache files and non-finite features through ``wsi-extract`` and the bag loader.

Runs in the calling process (the extraction library, as the ``wsi-extract`` CLI calls
it), so the harness calls it after its forked runs.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

import h5py

from faults.badinputs import Outcome

ENCODER = "random-cnn"


def _config(coords: Path, out: Path, **kw: Any) -> Any:
    from wsi_ncmi.features.config import ExtractConfig

    base: dict[str, Any] = {
        "coords_dir": coords, "out_dir": out, "encoder": ENCODER, "random_init": True,
        "device": "cpu", "batch_size": 16, "workers": 0, "progress": False,
        "skip_errors": True,
    }  # fmt: skip
    return ExtractConfig(**(base | kw))


def _results(report: Any) -> dict[str, Any]:
    return {r.item_id: r for r in report.results}


def _expect(name: str, result: Any, status: str, error_type: str, *fragments: str) -> Outcome:
    got = f"{result.status} {result.error_type}".strip() if result is not None else "missing"
    want = f"{status} {error_type}".strip()
    reason = result.reason if result is not None else ""
    ok = got == want and all(f in reason for f in fragments)
    return Outcome(name, want, got, reason, ok)


def old_schema_coords(src: Path, dst: Path) -> Path:
    """A copy of a coords file that claims schema version 0 (an older wsi-ncmi)."""
    shutil.copy(src, dst)
    with h5py.File(dst, "a") as h5:
        h5.attrs["schema_version"] = 0
    return dst


def mismatched_features(src: Path, dst: Path) -> Path:
    """A copy of a features file whose ``coords`` has one row fewer than ``features``."""
    shutil.copy(src, dst)
    with h5py.File(dst, "a") as h5:
        coords = h5["coords"][()]
        del h5["coords"]
        h5.create_dataset("coords", data=coords[:-1])
    return dst


def overflow_encoder() -> Any:
    """The built-in random CNN scaled by 1e9: every feature overflows float16 to inf."""
    import torch

    from wsi_ncmi.features.encoders.builtin import RandomConvNet
    from wsi_ncmi.features.encoders.registry import EncoderModule, build_encoder

    class Scaled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = RandomConvNet()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x) * 1e9

    spec = build_encoder(ENCODER, random_init=True).spec
    return EncoderModule(dataclasses.replace(spec, name="overflow-cnn"), Scaled()).eval()


def cache_outcomes(work: Path, tiled: Path) -> list[Outcome]:
    """Extraction over ``tiled`` coords plus an old-schema copy, then the HDF5 cases."""
    import torch

    from wsi_ncmi.errors import CacheSchemaError
    from wsi_ncmi.features import load_bag, read_features
    from wsi_ncmi.features.run import run_extraction

    torch.set_num_threads(1)
    coords = work / "bad_coords"
    shutil.rmtree(coords, ignore_errors=True)
    shutil.copytree(tiled, coords)
    old = old_schema_coords(coords / "good.h5", coords / "old.h5")
    out = work / "bad_features"
    report = _results(run_extraction(_config(coords, out, max_bad_fraction=0.5)))
    rows = [
        _expect("coords H5 of another schema version", report.get("old"), "failed",
                "CacheSchemaError", str(old), "schema version", "re-run wsi-tile"),
        _expect("batch goes on (good slide)", report.get("good"), "ok", ""),
        _expect("extract: unicode and spaces", report.get("node 3 ñ 標本"), "ok", ""),
        _expect("extract: slide of one tile", report.get("one"), "ok", ""),
    ]  # fmt: skip
    badtile = report.get("badtile")
    feat = out / "features" / ENCODER
    valid = read_features(feat / "badtile.h5").valid if badtile else None
    n_bad = int((~valid).sum()) if valid is not None else -1
    rows.append(
        Outcome("extract: unreadable tile -> row marked invalid", "ok, >=1 invalid row",
                f"{badtile.status if badtile else 'missing'}, {n_bad} invalid", "",
                bool(badtile and badtile.status == "ok" and n_bad >= 1))
    )  # fmt: skip
    strict = _results(run_extraction(_config(coords, work / "bad_strict", max_bad_fraction=0.0)))
    rows.append(
        _expect("extract: unreadable tile over --max_bad_fraction", strict.get("badtile"),
                "failed", "CorruptTileError", "failed to decode", "re-export the slide")
    )  # fmt: skip
    mismatch = mismatched_features(feat / "good.h5", work / "mismatch.h5")
    try:
        load_bag(mismatch)
        name = "features H5 rows != coords rows"
        rows.append(Outcome(name, "CacheSchemaError", "loaded", "", False))
    except CacheSchemaError as err:
        msg = str(err)
        ok = str(mismatch) in msg and "different lengths" in msg and "re-run wsi-extract" in msg
        rows.append(Outcome("features H5 rows != coords rows", "CacheSchemaError",
                            "CacheSchemaError", msg, ok))  # fmt: skip
    # Coords re-tiled after extraction: the features no longer match and are redone.
    with h5py.File(coords / "good.h5", "a") as h5:
        h5.attrs["params_hash"] = "retiled00000000"
    again = _results(run_extraction(_config(coords, out, max_bad_fraction=0.5)))
    rows.append(
        Outcome("features stale after re-tiling -> redone", "ok (not skipped)",
                again["good"].status, "", again["good"].status == "ok")
    )  # fmt: skip
    overflow = _results(
        run_extraction(_config(coords, work / "bad_inf"), encoder=overflow_encoder())
    )
    rows.append(
        _expect("NaN/inf features from the encoder", overflow.get("good"), "failed",
                "NonFiniteFeaturesError", "good.h5", "non-finite", "--dtype float32")
    )  # fmt: skip
    return rows
