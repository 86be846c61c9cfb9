"""A first call of each oneMKL vector-math function, on one thread, before any parallel use.

PyTorch's CPU builds compute ``log``, ``exp``, ``sqrt``, ``erf``, ``tanh`` and a few more
ops on contiguous float32/float64 tensors with oneMKL's vector math (VML). oneMKL 2024.2,
the version in the torch 2.13 CPU wheel, picks each function's kernel on its first call.
When that first call comes from several intra-op threads at once, one thread can compute
its chunk with a low-accuracy kernel although high accuracy was asked for (PyTorch issue
188792). Every later call is exact again, so the damage is one batch of one process.

Seen here: ``wsi-predict`` extracting ``stain-stats`` features with 2 intra-op threads in
about 1 process in 8 wrote one batch whose optical-density features (``-log``) were off
by up to 7e-5 for one half of the batch, so the same slide gave different features and
predictions from run to run. :func:`warm_vector_math` makes each function's first call
from the calling thread, on a 1-element tensor (no intra-op parallelism), before any
model runs.
"""

from __future__ import annotations

import functools

import torch

#: The torch ops PyTorch hands to oneMKL VML on the CPU (ATen's ``cpu/vml.h``).
VML_OPS: tuple[str, ...] = (
    "acos", "asin", "atan", "cos", "erf", "erfc", "erfinv", "exp", "log", "log10", "log2",
    "sin", "sqrt", "tan", "tanh", "trunc",
)  # fmt: skip


@functools.cache
def warm_vector_math() -> tuple[str, ...]:
    """Call each op of :data:`VML_OPS` once, in float32 and float64, on this thread.

    Cached: the first call per process does the work (microseconds), later calls return
    at once. Call it before a model's first multi-threaded forward pass; the Lightning
    modules of extraction and training do, in their ``setup`` hook.

    Returns:
        The ops called.
    """
    for dtype in (torch.float32, torch.float64):
        one = torch.full((1,), 0.5, dtype=dtype)
        for name in VML_OPS:
            getattr(torch, name)(one)
    return VML_OPS
