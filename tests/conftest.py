"""Shared pytest fixtures: repository paths and the shared CAMELYON label files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """One intra-op torch thread for the test: tiny models on a shared machine only
    oversubscribe with more (and the default-tier workers already run one per core)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def camelyon_manifest_path() -> Path:
    """The committed CAMELYON-17 manifest."""
    return REPO_ROOT / "data_manifests" / "camelyon17.csv"


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """``../shared/data`` next to the repository (skips the test when it is absent)."""
    path = REPO_ROOT.parent / "shared" / "data"
    if not (path / "camelyon17_stages_with_center.csv").exists():
        pytest.skip(f"shared label files not found in {path}")
    return path


#: Test files whose single tests or module fixtures take the longest (seconds each, from
#: ``pytest --durations=0``), longest first: those of ``make test-slow`` (the fault
#: harness, a full-size slide, the 500-bag C17 configs, ...), then those of ``make test``.
#: They are collected first, and the make targets keep that order when they hand whole
#: files to their workers (``--dist loadfile --no-loadscope-reorder``), so no worker is
#: left with a long file at the end while the others idle (by default xdist starts with
#: the files that have the most tests).
LONGEST_FIRST: tuple[str, ...] = (
    "test_faults_recovery.py",
    "test_synth.py",
    "test_train_c17_configs.py",
    "test_wheel.py",
    "test_bench_suite.py",
    "test_bench_resume.py",
    "test_bench_shard.py",
    "test_bench_e2e.py",
    "test_synth_bench_preset.py",
    "test_train_fit.py",
    "test_features_extract.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Move the files of :data:`LONGEST_FIRST` to the front, in that order (stable)."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (``make test`` runs 2 workers), one torch thread per worker.

    Two workers with torch's default of one thread per core would oversubscribe a small
    machine; one thread each keeps every core busy without contention.
    """
    import os

    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)
