"""End-to-end extraction on the real Lightning Trainer (CPU), tiny slides, tiny encoder."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from _features import coords_attrs, grid, make_cohort
from _slides import corrupt_first_tile, tissue_image, write_pyramid_tiff

from wsi_ncmi.batch import BatchAbortedError, find_temp_files
from wsi_ncmi.errors import CacheSchemaError, ConfigError
from wsi_ncmi.features import load_bag, read_features
from wsi_ncmi.features.config import ExtractConfig
from wsi_ncmi.features.encoders.registry import EncoderModule
from wsi_ncmi.features.run import run_extraction
from wsi_ncmi.slide import open_slide
from wsi_ncmi.tiling.schema import read_coords, write_coords

ENCODER = "random-cnn"
TINY = {"widths": (8, 16, 16, 16)}  # a 32-d variant: same code path, faster


def _encoder() -> EncoderModule:
    from wsi_ncmi.features.encoders.builtin import RandomConvNet
    from wsi_ncmi.features.encoders.registry import get_spec

    spec = get_spec(ENCODER)
    import dataclasses

    spec = dataclasses.replace(spec, out_dim=32)
    return EncoderModule(spec, RandomConvNet(TINY["widths"], seed=0)).eval()


def _config(coords_dir: Path, out: Path, **kw: Any) -> ExtractConfig:
    base: dict[str, Any] = {
        "coords_dir": coords_dir,
        "out_dir": out,
        "encoder": ENCODER,
        "device": "cpu",
        "batch_size": 16,
        "workers": 0,
        "progress": False,
    }
    base.update(kw)
    return ExtractConfig(**base)


_ORACLE_CACHE: dict[tuple[str, float], tuple[np.ndarray, np.ndarray]] = {}


def _oracle(coords_file: Path, encoder: EncoderModule) -> tuple[np.ndarray, np.ndarray]:
    """Plain loop over read_region + encoder, one patch at a time (cached per file)."""
    key = (str(coords_file), coords_file.stat().st_mtime)
    if key not in _ORACLE_CACHE:
        _ORACLE_CACHE[key] = _plain_loop(coords_file, encoder)
    return _ORACLE_CACHE[key]


def _plain_loop(coords_file: Path, encoder: EncoderModule) -> tuple[np.ndarray, np.ndarray]:
    """Plain loop: read_region per patch, encoder per patch (zero rows: decode failed)."""
    cf = read_coords(coords_file)
    a = cf.attrs
    size = int(a["read_size_px"])
    rows, valid = [], []
    with open_slide(a["slide_path"], a["backend"]) as slide, torch.no_grad():
        for x, y in cf.coords:
            try:
                img = slide.read_region((int(x), int(y)), int(a["read_level"]), (size, size))
            except Exception:
                rows.append(np.zeros(encoder.spec.out_dim, np.float32))
                valid.append(False)
                continue
            rows.append(encoder(torch.from_numpy(img)[None]).numpy()[0])
            valid.append(True)
    return np.stack(rows), np.array(valid)


def _assert_close_fp16(got: np.ndarray, ref: np.ndarray) -> None:
    scale = float(np.abs(ref).max())
    np.testing.assert_allclose(got.astype(np.float32), ref, rtol=2e-3, atol=2e-3 * scale)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cohort")
    make_cohort(root, n_slides=3)
    return root / "coords"


@pytest.mark.parametrize(
    ("batch_size", "workers", "strip"), [(7, 0, True), (16, 1, True), (5, 0, False)]
)
def test_matches_plain_read_region_loop(
    cohort: Path, tmp_path: Path, batch_size: int, workers: int, strip: bool
) -> None:
    encoder = _encoder()
    config = _config(cohort, tmp_path, batch_size=batch_size, workers=workers, strip_reads=strip)
    report = run_extraction(config, encoder=encoder)
    assert report.counts["ok"] == 3
    assert report.exit_code == 0
    for coords_file in sorted(cohort.glob("*.h5")):
        out = tmp_path / "features" / ENCODER / coords_file.name
        bag = read_features(out)
        ref, ref_valid = _oracle(coords_file, encoder)
        np.testing.assert_array_equal(bag.coords, read_coords(coords_file).coords)  # rows line up
        assert bag.valid.all()
        assert ref_valid.all()
        assert bag.features.dtype == np.float16
        assert bag.features.shape == ref.shape
        _assert_close_fp16(bag.features, ref)
        assert bag.attrs["coords_params_hash"] == read_coords(coords_file).params_hash
        assert bag.attrs["encoder_spec"]["name"] == ENCODER
        assert load_bag(out).shape == ref.shape
    result = {r.item_id: r for r in report.results}["slide0"]
    assert result.extra["patches_per_s"] > 0
    assert result.count == 35


def test_level1_reads_and_resume(tmp_path: Path) -> None:
    root = tmp_path / "in"
    coords_dir, _ = make_cohort(
        root, n_slides=1, target_mpp=1.0, read_level=1, read_downsample=2.0, read_size_px=32,
        patch_size_px=32, patch_size_level0=64.0, stride_level0=64,
    )  # fmt: skip
    encoder = _encoder()
    config = _config(coords_dir, tmp_path / "out", allow_mpp_mismatch=True)
    assert run_extraction(config, encoder=encoder).counts["ok"] == 1
    out = tmp_path / "out" / "features" / ENCODER / "slide0.h5"
    ref, _ = _oracle(coords_dir / "slide0.h5", encoder)
    _assert_close_fp16(load_bag(out).numpy(), ref)
    mtime = out.stat().st_mtime_ns
    again = run_extraction(config, encoder=encoder)
    assert again.counts["skipped"] == 1
    assert out.stat().st_mtime_ns == mtime
    changed = _config(coords_dir, tmp_path / "out", allow_mpp_mismatch=True, dtype="float32")
    assert run_extraction(changed, encoder=encoder).counts["ok"] == 1  # new hash: redone
    assert load_bag(out).dtype == torch.float32
    # Every run keeps its own report; the latest is also copied beside the features.
    reports = sorted((tmp_path / "out" / "reports").glob("wsi-extract_*.json"))
    statuses = [json.loads(r.read_text())["results"][0]["status"] for r in reports]
    assert statuses == ["ok", "skipped", "ok"]
    latest = json.loads((out.parent / "report.json").read_text())
    assert latest["params"]["report_path"] == str(reports[-1])


def test_corrupt_tile_is_invalid_and_rest_intact(tmp_path: Path) -> None:
    coords_dir, slides = make_cohort(tmp_path / "in", n_slides=1)
    corrupt_first_tile(slides[0])
    encoder = _encoder()
    report = run_extraction(_config(coords_dir, tmp_path / "out"), encoder=encoder)
    assert report.counts["ok"] == 1
    assert report.results[0].extra["bad_tiles"] == 1
    bag = read_features(tmp_path / "out" / "features" / ENCODER / "slide0.h5")
    ref, ref_valid = _oracle(coords_dir / "slide0.h5", encoder)
    assert not bag.valid[0]
    assert bag.valid[1:].all()
    assert not ref_valid[0]
    assert not bag.features[0].any()
    _assert_close_fp16(bag.features[1:], ref[1:])
    assert len(load_bag(tmp_path / "out" / "features" / ENCODER / "slide0.h5")) == len(ref) - 1
    # Above the allowed fraction of bad tiles, the slide fails and no file is left.
    strict = _config(coords_dir, tmp_path / "strict", max_bad_fraction=0.0, skip_errors=True)
    failed = run_extraction(strict, encoder=encoder)
    assert failed.counts["failed"] == 1
    assert "1 of 35 tiles" in failed.failed[0].reason
    assert not list((tmp_path / "strict" / "features" / ENCODER).glob("*.h5"))
    with pytest.raises(BatchAbortedError):
        run_extraction(
            _config(coords_dir, tmp_path / "strict", max_bad_fraction=0.0), encoder=encoder
        )


def test_coords_schema_and_hash_are_checked(cohort: Path, tmp_path: Path) -> None:
    bad_dir = tmp_path / "coords"
    bad_dir.mkdir()
    shutil.copy(cohort / "slide0.h5", bad_dir / "slide0.h5")
    import h5py

    with h5py.File(bad_dir / "slide0.h5", "a") as h5:
        h5.attrs["schema_version"] = 99
    with pytest.raises(CacheSchemaError, match="schema version"):
        run_extraction(_config(bad_dir, tmp_path / "out"), encoder=_encoder())
    with pytest.raises(CacheSchemaError, match="tiling parameters"):
        run_extraction(
            _config(cohort, tmp_path / "out", expect_coords_hash="0" * 16), encoder=_encoder()
        )
    report = run_extraction(
        _config(bad_dir, tmp_path / "out", skip_errors=True), encoder=_encoder()
    )
    assert report.counts["failed"] == 1
    assert report.failed[0].error_type == "CacheSchemaError"


def test_mpp_mismatch_is_an_error_unless_allowed(tmp_path: Path) -> None:
    from wsi_ncmi.features.encoders.registry import EncoderSpec
    from wsi_ncmi.features.run import check_mpp

    spec = EncoderSpec(name="x", family="timm", out_dim=4, input_size_px=224, mpp=0.5)
    config = _config(tmp_path, tmp_path)
    check_mpp(spec, 0.51, config, "slide")  # within 5 %
    with pytest.raises(ConfigError, match="--allow_mpp_mismatch"):
        check_mpp(spec, 1.0, config, "slide")
    check_mpp(spec, 1.0, _config(tmp_path, tmp_path, allow_mpp_mismatch=True), "slide")
    # Through the whole run, with a registered encoder that declares 0.5 µm/px:
    import dataclasses

    encoder = _encoder()
    encoder.spec = dataclasses.replace(encoder.spec, mpp=0.5)
    coords_dir, _ = make_cohort(tmp_path / "in", n_slides=1, target_mpp=1.0)
    with pytest.raises(ConfigError, match="µm/px"):
        run_extraction(_config(coords_dir, tmp_path / "out"), encoder=encoder)


def test_empty_slide_is_no_tissue(tmp_path: Path) -> None:
    slide = write_pyramid_tiff(tmp_path / "e.tif", tissue_image(128, 128), tile=64)
    (tmp_path / "coords").mkdir()
    attrs = coords_attrs(slide, "empty", status="no_tissue")
    write_coords(tmp_path / "coords" / "empty.h5", np.zeros((0, 2)), np.zeros(0), attrs)
    report = run_extraction(_config(tmp_path / "coords", tmp_path / "out"), encoder=_encoder())
    assert report.counts["no_tissue"] == 1
    assert report.exit_code == 0
    assert load_bag(tmp_path / "out" / "features" / ENCODER / "empty.h5").shape == (0, 32)


def _child(coords_dir: str, out: str) -> None:
    torch.set_num_threads(1)
    run_extraction(_config(Path(coords_dir), Path(out), batch_size=4), encoder=_encoder())


@pytest.mark.parametrize("trial", range(3))
def test_sigkill_then_resume(cohort: Path, tmp_path: Path, trial: int) -> None:
    """SIGKILL a real extraction at a different point each trial, then resume."""
    coords_dir = cohort
    out = tmp_path / "out"
    feat_dir = out / "features" / ENCODER
    encoder = _encoder()
    child = mp.get_context("fork").Process(target=_child, args=(str(coords_dir), str(out)))
    child.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and child.is_alive():
        finals = list(feat_dir.glob("*.h5")) if feat_dir.is_dir() else []
        temps = find_temp_files(feat_dir) if feat_dir.is_dir() else []
        if (trial == 0 and temps) or (trial == 1 and finals) or (trial == 2 and len(finals) >= 2):
            break
        time.sleep(0.002)
    if child.pid is not None and child.is_alive():
        os.kill(child.pid, signal.SIGKILL)
    child.join()  # reaped: its locks now belong to a dead pid
    survivors = {p.stem for p in feat_dir.glob("*.h5")} if feat_dir.is_dir() else set()
    for path in feat_dir.glob("*.h5") if feat_dir.is_dir() else []:
        load_bag(path)  # anything under a final name is complete and valid
    report = run_extraction(_config(coords_dir, out), encoder=encoder)
    by_status = {r.item_id: r.status for r in report.results}
    assert {k for k, v in by_status.items() if v == "skipped"} == survivors
    assert set(by_status.values()) <= {"ok", "skipped"}
    assert len(by_status) == 3
    assert not find_temp_files(feat_dir)
    assert not list((out / "locks").glob("*.lock"))
    for coords_file in sorted(coords_dir.glob("*.h5")):
        ref, _ = _oracle(coords_file, encoder)
        _assert_close_fp16(load_bag(feat_dir / coords_file.name).numpy(), ref)


def test_cli_lists_encoders_and_runs(
    cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from wsi_ncmi.cli.extract import main

    assert main(["--list_encoders"]) == 0
    listing = capsys.readouterr().out
    for name in ("random-cnn", "resnet50-trunc", "uni", "virchow2", "h-optimus-0", "prov-gigapath"):
        assert name in listing
    args = [
        "--out_dir",
        str(tmp_path),
        "--coords_dir",
        str(cohort),
        "--device",
        "cpu",
        "--workers",
        "0",
    ]
    assert main([*args, "--progress=false", "--batch_size", "32"]) == 0
    assert "throughput" in capsys.readouterr().out
    assert len(list((tmp_path / "features" / ENCODER).glob("*.h5"))) == 3
    assert main([*args, "--progress=false", "--batch_size", "32"]) == 0  # all skipped
    rerun = capsys.readouterr().out
    assert "skipped 3" in rerun
    assert "throughput" not in rerun  # no "0.0 patches/s over 0.0 s"
    assert main([*args, "--encoder", "nope"]) == 2
    assert main([*args, "--batch_size", "0"]) == 2


def _save_random_cnn(path: Path, scale: float) -> None:
    from wsi_ncmi.features.encoders import build_encoder

    state = build_encoder(ENCODER).backbone.state_dict()
    torch.save({k: v * scale for k, v in state.items()}, path)


def _bump_mtime(path: Path) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))


def test_weights_resume_key_is_the_file_content(tmp_path: Path) -> None:
    """Same --weights path with new content: redone; same content anywhere: skipped."""
    coords_dir, _ = make_cohort(tmp_path / "in", n_slides=1)
    weights = tmp_path / "w.pth"
    _save_random_cnn(weights, 1.1)
    out = tmp_path / "out"
    config = _config(coords_dir, out, weights=weights, dtype="float32")
    first = run_extraction(config)
    assert first.counts["ok"] == 1
    path = out / "features" / ENCODER / "slide0.h5"
    before = read_features(path)
    sha_a = before.attrs["weights_sha256"]
    assert len(sha_a) == 64
    assert before.attrs["encoder_spec"]["weights_revision"] == f"sha256:{sha_a}"
    assert run_extraction(config).counts["skipped"] == 1
    # Same path, different content (a retrained checkpoint dropped in place): redone.
    _save_random_cnn(weights, 0.9)
    _bump_mtime(weights)
    redone = run_extraction(config)
    assert redone.counts["ok"] == 1
    after = read_features(path)
    assert after.attrs["weights_sha256"] != sha_a
    assert not np.array_equal(after.features, before.features)
    # The same bytes rewritten (new mtime) or under another path: skipped.
    data = weights.read_bytes()
    weights.write_bytes(data)
    _bump_mtime(weights)
    assert run_extraction(config).counts["skipped"] == 1
    moved = tmp_path / "elsewhere" / "renamed.pth"
    moved.parent.mkdir()
    moved.write_bytes(data)
    elsewhere = _config(coords_dir, out, weights=moved, dtype="float32")
    assert run_extraction(elsewhere).counts["skipped"] == 1
    assert read_features(path).attrs["weights_sha256"] == after.attrs["weights_sha256"]


def test_weights_hash_is_memoised_by_path_size_mtime(tmp_path: Path) -> None:
    import hashlib
    import json

    from wsi_ncmi.features.weights_hash import weights_sha256

    weights, cache = tmp_path / "w.bin", tmp_path / "cache" / "sha.json"
    weights.write_bytes(b"abc" * 1000)
    real = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert weights_sha256(weights, cache) == real
    entry = json.loads(cache.read_text())["entries"][str(weights.resolve())]
    assert entry["sha256"] == real
    assert entry["size"] == 3000
    # A memo hit does not read the file: a doctored digest with a matching stamp wins.
    data = json.loads(cache.read_text())
    data["entries"][str(weights.resolve())]["sha256"] = "f" * 64
    cache.write_text(json.dumps(data))
    assert weights_sha256(weights, cache) == "f" * 64
    # Any rewrite changes mtime_ns: the memo is stale and the file is hashed again.
    weights.write_bytes(b"abd" * 1000)
    _bump_mtime(weights)
    assert weights_sha256(weights, cache) == hashlib.sha256(b"abd" * 1000).hexdigest()
    cache.write_text("not json")  # a garbled memo is ignored, then rewritten
    assert weights_sha256(weights, cache) == hashlib.sha256(b"abd" * 1000).hexdigest()
    assert json.loads(cache.read_text())["version"] == 1


class _SlowEncoder(EncoderModule):
    """The tiny encoder, slowed down so that a concurrent run finds its locks held."""

    def __init__(self, delay_s: float) -> None:
        inner = _encoder()
        super().__init__(inner.spec, inner.backbone)
        self.eval()
        self.delay_s = delay_s

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        time.sleep(self.delay_s)
        return super().forward(images)


def _concurrent_child(
    coords_dir: str,
    out: str,
    queue: mp.Queue[list[Any]],
    delay_s: float = 0.03,
) -> None:
    torch.set_num_threads(1)
    config = _config(Path(coords_dir), Path(out), batch_size=4, poll_s=0.05)
    report = run_extraction(config, encoder=_SlowEncoder(delay_s))
    queue.put([(r.item_id, r.status, r.reason) for r in report.results] + [report.exit_code])


def test_concurrent_runs_wait_for_locked_slides(cohort: Path, tmp_path: Path) -> None:
    """Two runs on one out dir: every slide extracted once; none reported locked."""
    out = tmp_path / "out"
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_concurrent_child, args=(str(cohort), str(out), queue, 0.1))
    child.start()
    locks = out / "locks"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (locks.is_dir() and any(locks.glob("*.lock"))):
        time.sleep(0.002)
    assert any(locks.glob("*.lock")), "the first run never took a lock"
    config = _config(cohort, out, batch_size=4, poll_s=0.05)
    mine = run_extraction(config, encoder=_SlowEncoder(0.1))
    *theirs_rows, theirs_code = queue.get(timeout=120)
    child.join(timeout=60)
    assert child.exitcode == 0
    assert mine.exit_code == 0
    assert theirs_code == 0
    theirs = {slide: (status, reason) for slide, status, reason in theirs_rows}
    ours = {r.item_id: (r.status, r.reason) for r in mine.results}
    assert set(theirs) == set(ours) == {"slide0", "slide1", "slide2"}
    for slide in ours:
        statuses = sorted([ours[slide][0], theirs[slide][0]])
        assert statuses == ["ok", "skipped"], (slide, ours[slide], theirs[slide])
    # The slide the first run held when this one started was waited for, not "locked".
    assert any(reason == "done by another job" for status, reason in ours.values()), ours
    assert not list(locks.glob("*.lock"))
    for coords_file in sorted(cohort.glob("*.h5")):
        ref, _ = _oracle(coords_file, _encoder())
        _assert_close_fp16(load_bag(out / "features" / ENCODER / coords_file.name).numpy(), ref)


def test_locked_slide_no_wait_and_max_wait(cohort: Path, tmp_path: Path) -> None:
    from wsi_ncmi.batch import ItemLock

    out = tmp_path / "out"
    lock = ItemLock(out / "locks" / f"{ENCODER}.slide1.lock")  # held by this live process
    assert lock.acquire()
    try:
        no_wait = run_extraction(_config(cohort, out, wait_locked=False), encoder=_encoder())
        assert {r.item_id: r.status for r in no_wait.results}["slide1"] == "locked"
        assert no_wait.exit_code == 0
        started = time.monotonic()
        bounded = run_extraction(
            _config(cohort, out, max_wait_s=0.4, poll_s=0.05), encoder=_encoder()
        )
        assert time.monotonic() - started >= 0.4
        held = {r.item_id: r for r in bounded.results}["slide1"]
        assert held.status == "locked"
        assert "--max_wait_s 0.4 s" in held.reason
    finally:
        lock.release()
    done = run_extraction(_config(cohort, out, max_wait_s=0.4), encoder=_encoder())
    assert {r.item_id: r.status for r in done.results} == {
        "slide0": "skipped", "slide1": "ok", "slide2": "skipped"
    }  # fmt: skip


def test_cli_max_wait_is_validated(cohort: Path, tmp_path: Path) -> None:
    from wsi_ncmi.cli.extract import build_parser, main

    assert "--max_wait_s MAX_WAIT_S" in build_parser().format_help()
    args = ["--out_dir", str(tmp_path), "--coords_dir", str(cohort), "--device", "cpu"]
    assert main([*args, "--max_wait_s", "-1"]) == 2


def test_region_blocks_stack_aligned_strips() -> None:
    from wsi_ncmi.features.read import region_blocks, strip_runs

    coords = grid(448, 320, 64)  # 7 columns x 5 rows, row-major
    runs = strip_runs(coords[:16], 64, max_len=64)
    assert runs == [(0, 7), (7, 14), (14, 16)]
    assert region_blocks(runs, coords[:16], 64, max_rows=8) == [(0, 14, 7), (14, 16, 2)]
    assert region_blocks(runs, coords[:16], 64, max_rows=1) == [(0, 7, 7), (7, 14, 7), (14, 16, 2)]
    assert region_blocks(runs, coords[:16], None, max_rows=8) == [
        (0, 7, 7),
        (7, 14, 7),
        (14, 16, 2),
    ]
    gappy = grid(448, 320, 64, skip_every=5)  # strips of different lengths never stack
    blocks = region_blocks(strip_runs(gappy, 64, 64), gappy, 64, max_rows=8)
    assert len(gappy) == 28
    assert len({cols for *_, cols in blocks}) > 1
    assert all((stop - start) % cols == 0 for start, stop, cols in blocks)
    assert sum(stop - start for start, stop, _ in blocks) == len(gappy)
    for start, stop, cols in blocks:  # every block is a full rectangle of the grid
        block = gappy[start:stop].reshape(-1, cols, 2)
        assert (np.diff(block[..., 0], axis=1) == 64).all()
        assert (np.diff(block[:, 0, 1]) == 64).all()


@pytest.mark.slow  # two processes; the default tier keeps the concurrent-lock test
def test_two_unsharded_runs_share_the_slides(tmp_path: Path) -> None:
    """Each run locks a slide when it reaches it, so two runs split one folder.

    Was: the first run locked every slide at start and the second only waited.
    """
    make_cohort(tmp_path, n_slides=6)
    cohort, out = tmp_path / "coords", tmp_path / "out"
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_concurrent_child, args=(str(cohort), str(out), queue, 0.1))
    child.start()
    locks = out / "locks"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (locks.is_dir() and any(locks.glob("*.lock"))):
        time.sleep(0.002)
    assert len(list(locks.glob("*.lock"))) == 1, "the first run should hold one slide"
    config = _config(cohort, out, batch_size=4, poll_s=0.05)
    mine = run_extraction(config, encoder=_SlowEncoder(0.1))
    *theirs_rows, theirs_code = queue.get(timeout=120)
    child.join(timeout=60)
    assert (mine.exit_code, theirs_code, child.exitcode) == (0, 0, 0)
    ours_ok = {r.item_id for r in mine.results if r.status == "ok"}
    theirs_ok = {slide for slide, status, _ in theirs_rows if status == "ok"}
    assert ours_ok, theirs_rows  # both runs did some of the work
    assert theirs_ok, mine.results
    assert not ours_ok & theirs_ok  # and no slide twice
    assert ours_ok | theirs_ok == {f"slide{i}" for i in range(6)}
