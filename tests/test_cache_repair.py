"""Every cache error names its fix, and the fix works (tile, extract, break, train, fix)."""

from __future__ import annotations

from pathlib import Path

import _faults  # noqa: F401  (puts tools/ on sys.path)
import pytest
import torch


@pytest.mark.slow  # 4-5 s: tiles, extracts, poisons and repairs a cohort
def test_poisoned_caches_are_refused_and_repaired(tmp_path: Path) -> None:
    """Was: 'has NaN/inf features …; re-extract it', but wsi-extract skipped the file."""
    from faults.repair import BREAKS, repair_round_trips

    torch.set_num_threads(1)
    tally, outcomes = repair_round_trips(tmp_path)
    assert [o.name for o in outcomes][: len(BREAKS)] == list(BREAKS)
    assert tally.problems == [], tally.problems
    assert tally.recovered == tally.injected == len(BREAKS) + 2
