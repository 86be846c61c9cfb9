"""Disk full: ``wsi-extract`` writes its features to a tiny tmpfs.

The tmpfs is sized so that the first slide's features fit and the second's do not. The
run must stop with a clear :class:`~wsi_ncmi.errors.DiskFullError` naming the file, leave
no temp or lock file, and keep the finished slide; after the filesystem is enlarged, a
rerun skips that slide, finishes the rest, and every file equals the reference bitwise.
Without root (no ``mount``), a simulated ENOSPC inside ``atomic_output`` is used instead.
"""

from __future__ import annotations

import errno
import subprocess
import sys
from pathlib import Path

from faults.common import (
    Tally,
    compare_h5,
    lock_files,
    mount_tmpfs,
    remount_tmpfs,
    run_cli,
    temp_files,
    umount,
)
from faults.kill import EXTRACT, extract_args


def extract_disk_full(coords: Path, ref: Path, work: Path) -> Tally:
    """Fill a tmpfs with ``wsi-extract`` output; check the error, the cleanup, the rerun."""
    tally = Tally("disk full (wsi-extract on tmpfs)")
    ref_dir = ref / "features" / "random-cnn"
    ref_files = sorted(ref_dir.glob("*.h5"))
    first = ref_files[0].stat().st_size
    point = work / "tinyfs"
    size_kb = first // 1024 + 64  # the first slide (and the lock files) fit, no more
    if not mount_tmpfs(point, f"size={size_kb}k"):
        return _simulated(work, tally)
    tally.command = f"mount -t tmpfs -o size={size_kb}k; wsi-extract --out_dir <tmpfs> ..."
    try:
        tally.injected += 1
        done = run_cli(EXTRACT, extract_args(coords, point))
        feat = point / "features" / "random-cnn"
        # The DiskFullError line (a per-slide failure in the summary on stdout, or the
        # run's one-line error); not simply the last stderr line, which Lightning's
        # start-up banner can be.
        lines = (done.stderr + "\n" + done.stdout).splitlines()
        message = next(
            (x.strip() for x in lines if "DiskFullError" in x), lines[-1] if lines else ""
        )
        tally.notes.append(f"exit {done.returncode}: {message[:300]}")
        if done.returncode != 1 or "DiskFullError" not in message:
            tally.fail(f"expected exit 1 with DiskFullError, got {done.returncode}: {message}")
        if "no space left" not in message or ".h5" not in message:
            tally.fail("the message does not name the file and the fix")
        tally.temp_left += len(temp_files(point))
        tally.locks_left += len(lock_files(point / "locks"))
        kept = sorted(p.name for p in feat.glob("*.h5"))
        for name in kept:
            if compare_h5(feat / name, ref_dir / name)[1]:
                tally.partial_accepted += 1
        remount_tmpfs(point, "size=64m")
        again = run_cli(EXTRACT, extract_args(coords, point))
        if again.returncode != 0:
            tally.fail(f"rerun after freeing space exited {again.returncode}")
        lost = 0
        for want in ref_files:
            total, missing = compare_h5(feat / want.name, want)
            tally.outputs_compared += 1
            tally.bytes_compared += total
            lost += missing
        tally.bytes_lost += lost
        tally.temp_left += len(temp_files(point))
        tally.locks_left += len(lock_files(point / "locks"))
        tally.recovered += int(again.returncode == 0 and lost == 0)
        tally.notes.append(f"kept through the failure: {kept}")
    finally:
        umount(point)
    _mid_write(work, tally)
    return tally


MID_WRITE = """
import sys
from pathlib import Path
import numpy as np
from wsi_ncmi.batch import atomic_output
from wsi_ncmi.errors import DiskFullError
point = Path(sys.argv[1])
try:
    with atomic_output(point / "slide.h5") as tmp:
        from wsi_ncmi.features.store import FeatureFileWriter
        writer = FeatureFileWriter(tmp, np.zeros((2000, 2)), 256, "float32", {"slide_id": "s"})
        import os
        free = os.statvfs(point).f_bavail * os.statvfs(point).f_frsize
        (point / "filler").write_bytes(b"x" * (free - 64 * 1024))  # another job fills the disk
        try:
            for start in range(0, 2000, 100):
                writer.write_rows(start, np.ones((100, 256), np.float32), np.ones(100, bool))
            writer.finish()
        except BaseException:
            writer.abort()
            raise
except DiskFullError as err:
    print("DiskFullError:", err)
    sys.exit(1)
"""


def _mid_write(work: Path, tally: Tally) -> None:
    """The disk fills up while a features file is being written (another job's file)."""
    point = work / "tinyfs_mid"
    if not mount_tmpfs(point, "size=4m"):
        return
    try:
        tally.injected += 1
        done = subprocess.run(
            [sys.executable, "-c", MID_WRITE, str(point)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        message = done.stdout.strip()
        tally.notes.append(f"mid-write ENOSPC: exit {done.returncode}: {message[:200]}")
        left = temp_files(point)
        tally.temp_left += len(left)
        clear = done.returncode == 1 and "slide.h5" in message and "no space left" in message
        if not clear:
            tally.fail(f"mid-write ENOSPC: exit {done.returncode}, {message or done.stderr[-300:]}")
        tally.recovered += int(clear and not left and not (point / "slide.h5").exists())
    finally:
        umount(point)


def _simulated(work: Path, tally: Tally) -> Tally:
    """Fallback without ``mount``: ENOSPC raised inside an atomic write."""
    from wsi_ncmi.batch import atomic_output
    from wsi_ncmi.errors import DiskFullError

    tally.kind = "disk full (simulated ENOSPC)"
    tally.command = "atomic_output + OSError(ENOSPC)"
    tally.injected += 1
    final = work / "sim" / "features.h5"
    try:
        with atomic_output(final) as tmp:
            tmp.write_bytes(b"x" * 4096)
            raise OSError(errno.ENOSPC, "No space left on device")
    except DiskFullError as err:
        ok = "features.h5" in str(err) and not final.exists() and not temp_files(final.parent)
        tally.recovered += int(ok)
    tally.temp_left += len(temp_files(final.parent))
    return tally
