"""``wsi-bench``: the CE-vs-NCMI benchmark, per hospital, over losses × aggregators × seeds."""

from wsi_ncmi.bench.config import BenchConfig
from wsi_ncmi.bench.parser import load_config
from wsi_ncmi.bench.pipeline import BenchOutcome, prepare_features, run_bench
from wsi_ncmi.bench.plan import Cell, plan_cells
from wsi_ncmi.bench.sweep import SweepOutcome, run_sweep

__all__ = [
    "BenchConfig",
    "BenchOutcome",
    "Cell",
    "SweepOutcome",
    "load_config",
    "plan_cells",
    "prepare_features",
    "run_bench",
    "run_sweep",
]
