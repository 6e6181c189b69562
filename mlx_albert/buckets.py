"""Batch widths: a batch is padded to its longest sequence rounded up to a bucket, so that few
distinct shapes reach the model (each new shape is a new trace of a compiled training step, and on
GPU backends new kernels to JIT). Multiples of 8 on the CPU backend, which pays for every padded
token; multiples of 32 on GPUs, where a few more tokens cost little and compilations a lot."""

from __future__ import annotations

import mlx.core as mx

CPU_MULTIPLE = 8
GPU_MULTIPLE = 32


def pad_multiple() -> int:
    return CPU_MULTIPLE if mx.default_device() == mx.cpu else GPU_MULTIPLE


def padded_width(longest: int, max_positions: int | None = None) -> int:
    """`longest` rounded up to the backend's bucket, but never past max_positions (nor below longest)."""
    multiple = pad_multiple()
    return max(longest, min(-(-longest // multiple) * multiple, max_positions or 1 << 30))
