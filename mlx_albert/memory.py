"""How much of a batch inference runs at once: slices whose activations stay under a budget. The
CPU computes one op at a time anyway, so slicing there costs little and bounds peak memory; GPUs
get a sixteenth of their memory (a Mac's GPU shares it with the system): big batches still fill the
device, corpus-sized ones no longer swap."""

from __future__ import annotations

import functools

import mlx.core as mx

CPU_ACTIVATION_BUDGET = 128 << 20  # bytes
GPU_MEMORY_FRACTION = 16
# A GPU holds more of the graph in flight: peak ~5x the one-layer estimate of slice_size (12 GB at
# batch 256 x 128, bfloat16 ALBERT-base, H200, MLX 0.32).
GPU_GRAPH_FACTOR = 5


def on_gpu() -> bool:
    return mx.default_device() != mx.cpu


def device_memory() -> int | None:
    """Bytes of memory the default GPU may use (Metal's recommended working set, CUDA's total)."""
    return _device_memory(str(mx.default_device()))


@functools.cache  # asked once per device, not on every forward (CUDA asks NVML)
def _device_memory(device: str) -> int | None:
    info = mx.device_info()
    for key in ("max_recommended_working_set_size", "memory_size", "total_memory"):
        if isinstance(info.get(key), int) and info[key] > 0:
            return info[key]
    return None


def default_budget() -> int | None:
    """The backend's activation budget in bytes (None: unknown device memory, no slicing)."""
    if not on_gpu():
        return CPU_ACTIVATION_BUDGET
    memory = device_memory()
    return memory // GPU_MEMORY_FRACTION if memory else None


def slice_size(
    batch: int, seq: int, itemsize: int, num_heads: int, intermediate_size: int, budget: int | None = None
) -> int:
    """Sequences per slice: all of them unless their activations would pass `budget` (bytes;
    None: the backend's default)."""
    budget = budget if budget is not None else default_budget()
    # about 5 copies of the attention scores and 10 of the FFN activation per sequence
    per_sequence = seq * (5 * num_heads * seq + 10 * intermediate_size) * itemsize
    if on_gpu():
        per_sequence *= GPU_GRAPH_FACTOR
    if budget is None or batch * per_sequence <= budget:
        return batch
    return max(1, budget // per_sequence)
