"""Batch plumbing: atomic outputs, locks, shards, reports and the runner."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from wsi_ncmi import ConfigError, DiskFullError
from wsi_ncmi.batch import (
    BatchAbortedError,
    ItemLock,
    ItemResult,
    RunReport,
    atomic_output,
    find_temp_files,
    parse_shard,
    remove_stale_temp_files,
    run_batch,
    select_shard,
    shard_of,
)
from wsi_ncmi.batch.atomic import final_path_of, temp_path_for, temp_writer


def test_atomic_output_success_and_failure(tmp_path: Path) -> None:
    final = tmp_path / "sub" / "out.txt"
    with atomic_output(final) as tmp:
        tmp.write_text("complete")
        assert not final.exists()  # nothing under the final name until the end
    assert final.read_text() == "complete"

    def killed_mid_write() -> None:
        with atomic_output(final) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        killed_mid_write()
    assert final.read_text() == "complete"
    assert find_temp_files(tmp_path) == []


def test_atomic_output_disk_full_is_specific(tmp_path: Path) -> None:
    final = tmp_path / "features.h5"

    def disk_fills_up() -> None:
        with atomic_output(final) as tmp:
            tmp.write_bytes(b"x" * 10)
            raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(DiskFullError, match=r"features\.h5.*temp file was removed"):
        disk_fills_up()
    assert not final.exists()
    assert find_temp_files(tmp_path) == []


def test_stale_temp_files_are_removed_only_for_dead_writers(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    here = temp_path_for(tmp_path / "x").name.split(".tmp-", 1)[1].rsplit("-", 2)[0]
    dead = tmp_path / f".a.h5.tmp-{here}-{proc.pid}-abcd"
    alive = tmp_path / f".b.h5.tmp-{here}-{os.getpid()}-abcd"
    legacy_dead = tmp_path / f".c.h5.tmp-{proc.pid}-abcd"  # name without a host
    # Another host's writer may be alive with any pid: kept until idle for a day.
    other_busy = tmp_path / f".d.h5.tmp-othernode.cluster-{proc.pid}-abcd"
    other_idle = tmp_path / f".e.h5.tmp-othernode.cluster-{proc.pid}-abcd"
    for i, path in enumerate((dead, alive, legacy_dead, other_busy, other_idle)):
        path.write_bytes(bytes([i]))
    old = time.time() - 2 * 24 * 3600
    os.utime(other_idle, (old, old))
    assert temp_writer(dead) == (here, proc.pid)
    assert temp_writer(legacy_dead) == (None, proc.pid)
    assert temp_writer(tmp_path / "plain.h5") is None
    assert remove_stale_temp_files(tmp_path) == 3
    assert {p.name for p in find_temp_files(tmp_path)} == {alive.name, other_busy.name}
    assert final_path_of(other_busy) == tmp_path / "d.h5"


def test_a_report_write_clears_what_a_killed_report_write_left(tmp_path: Path) -> None:
    """A run killed while writing ``reports/<run>.json`` leaves its temp; the next does not."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    reports = tmp_path / "reports"
    reports.mkdir()
    here = temp_path_for(reports / "x").name.split(".tmp-", 1)[1].rsplit("-", 2)[0]
    dead = reports / f".wsi-extract_1.json.tmp-{here}-{proc.pid}-abcd"
    alive = reports / f".wsi-extract_2.json.tmp-{here}-{os.getpid()}-abcd"
    dead.write_text("{")
    alive.write_text("{")
    report = RunReport("extract")
    written = report.write_json(reports / "wsi-extract_3.json")
    assert json.loads(written.read_text())["stage"] == "extract"
    assert find_temp_files(tmp_path) == [alive]  # a live writer's temp is left to it


def test_lock_is_exclusive_and_released(tmp_path: Path) -> None:
    path = tmp_path / "locks" / "s1.lock"
    a, b = ItemLock(path, heartbeat_s=0), ItemLock(path, heartbeat_s=0)
    assert a.acquire()
    assert not b.acquire()
    a.release()
    assert not path.exists()
    assert b.acquire()
    b.release()


def test_stale_lock_of_dead_process_is_taken_over(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    path = tmp_path / "s1.lock"
    import socket

    path.write_text(json.dumps({"host": socket.gethostname(), "pid": proc.pid, "token": "t"}))
    lock = ItemLock(path, heartbeat_s=0)
    assert not lock.acquire()  # holder alive
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert lock.acquire()  # holder dead: taken over
    assert lock.took_over is not None
    assert lock.took_over["pid"] == proc.pid
    lock.release()


def test_silent_lock_of_other_host_goes_stale_by_age(tmp_path: Path) -> None:
    path = tmp_path / "s1.lock"
    path.write_text(json.dumps({"host": "elsewhere", "pid": 1, "token": "t"}))
    old = time.time() - 3600
    os.utime(path, (old, old))
    assert ItemLock(path, stale_after_s=7200, heartbeat_s=0).acquire() is False
    lock = ItemLock(path, stale_after_s=60, heartbeat_s=0)
    assert lock.acquire()
    lock.release()


def test_shards_partition_items() -> None:
    ids = [f"patient_{i:03d}_node_{j}" for i in range(20) for j in range(5)]
    shards = [select_shard(ids, ids, f"{k}/4") for k in range(4)]
    assert sorted(i for s in shards for i in s) == sorted(ids)
    assert all(len(s) > 10 for s in shards)
    assert shard_of("x", 7) == shard_of("x", 7)
    assert parse_shard(None) == (0, 1)
    for bad in ("4/4", "a/b", "1", "-1/2", "0/0"):
        with pytest.raises(ConfigError, match="shard"):
            parse_shard(bad)


def _job(item: str) -> ItemResult:
    if item.startswith("bad"):
        raise ConfigError(f"{item} is bad")
    if item.startswith("bug"):
        raise ZeroDivisionError("oops")
    return ItemResult(item, "ok", count=len(item))


@pytest.mark.parametrize("workers", [1, 2])
def test_runner_isolates_errors_and_reports(workers: int, tmp_path: Path) -> None:
    items = ["a", "bad1", "bbb", "bug"]
    report = run_batch(
        items,
        _job,
        item_ids=items,
        report=RunReport("test"),
        workers=workers,
        lock_dir=tmp_path / "locks",
        progress=False,
    )
    by_id = {r.item_id: r for r in report.results}
    assert set(by_id) == set(items)
    assert by_id["a"].status == "ok"
    assert by_id["bbb"].count == 3
    assert by_id["bad1"].status == "failed"
    assert by_id["bad1"].error_type == "ConfigError"
    assert by_id["bug"].reason.startswith("unexpected error: ZeroDivisionError")
    assert report.exit_code == 1
    assert report.counts["failed"] == 2
    text = report.summary()
    assert "failed    bad1: ConfigError: bad1 is bad" in text
    out = report.write_json(tmp_path / "report.json")
    assert json.loads(out.read_text())["counts"]["ok"] == 2
    assert list((tmp_path / "locks").iterdir()) == []  # every lock released


def test_runner_skips_done_items_and_stops_without_skip_errors(tmp_path: Path) -> None:
    report = run_batch(
        ["a", "b"],
        _job,
        item_ids=["a", "b"],
        report=RunReport("test"),
        is_done=lambda item: item == "a",
        progress=False,
    )
    assert [r.status for r in report.results] == ["skipped", "ok"]
    with pytest.raises(BatchAbortedError, match="bad1 failed"):
        run_batch(
            ["bad1", "a"],
            _job,
            item_ids=["bad1", "a"],
            report=RunReport("test"),
            skip_errors=False,
            progress=False,
        )


def test_runner_waits_for_items_locked_by_a_dying_peer(tmp_path: Path) -> None:
    import socket

    lock_dir = tmp_path / "locks"
    lock_dir.mkdir()
    peer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(2)"])
    (lock_dir / "a.lock").write_text(
        json.dumps({"host": socket.gethostname(), "pid": peer.pid, "token": "peer"})
    )
    report = run_batch(
        ["a", "b"],
        _job,
        item_ids=["a", "b"],
        report=RunReport("test"),
        lock_dir=lock_dir,
        poll_s=0.2,
        progress=False,
    )
    peer.wait()
    by_id = {r.item_id: r for r in report.results}
    assert by_id["a"].status == "ok"  # done by us once the peer died
    assert by_id["a"].extra["took_over_stale_lock"]["token"] == "peer"
    assert len(report.results) == 2


def test_runner_gives_up_waiting_after_max_wait(tmp_path: Path) -> None:
    import socket

    lock_dir = tmp_path / "locks"
    lock_dir.mkdir()
    (lock_dir / "a.lock").write_text(
        json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "token": "live"})
    )
    report = run_batch(
        ["a"],
        _job,
        item_ids=["a"],
        report=RunReport("test"),
        lock_dir=lock_dir,
        poll_s=0.05,
        max_wait_s=0.2,
        progress=False,
    )
    assert [r.status for r in report.results] == ["locked"]
    assert "locked" in report.summary()


def test_a_lock_never_exists_without_its_holder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lock appears with its JSON complete (a killed holder leaves a judgeable lock)."""
    path = tmp_path / "locks" / "s1.lock"
    seen: list[dict[str, object]] = []
    real_link = os.link

    def link(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        seen.append(json.loads(Path(src).read_text()))  # what the lock will hold, whole
        real_link(src, dst)

    monkeypatch.setattr(os, "link", link)
    a, b = ItemLock(path, heartbeat_s=0), ItemLock(path, heartbeat_s=0)
    assert a.acquire()
    assert not b.acquire()  # exists: refused, and its draft removed
    assert seen[0]["pid"] == os.getpid()
    assert seen[0]["token"] == a.token
    assert json.loads(path.read_text())["token"] == a.token
    assert sorted(p.name for p in path.parent.iterdir()) == ["s1.lock"]
    a.release()

    def no_links(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        raise PermissionError(errno.EPERM, "hard links not supported")

    monkeypatch.setattr(os, "link", no_links)  # e.g. some network filesystems
    assert b.acquire()
    assert not a.acquire()
    assert json.loads(path.read_text())["token"] == b.token
    assert sorted(p.name for p in path.parent.iterdir()) == ["s1.lock"]
    b.release()
