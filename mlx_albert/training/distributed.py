"""Data parallelism on `mx.distributed` (launched with `mlx.launch`; one process behaves as before).

Every rank builds the same global micro-batch on the host (same order, same masks: they are
functions of seed, epoch and position) and runs its slice of the rows. Each rank's mean loss is
scaled by its share of the global loss's denominator (rows, or labelled tokens), so that the sum
over ranks of the scaled gradients, one `all_sum` over one flat buffer per step, equals the
single-process gradient of the whole batch."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten


class DataParallel:
    def __init__(self):
        self.group = mx.distributed.init()
        self.world, self.rank = self.group.size(), self.group.rank()

    @property
    def active(self) -> bool:
        return self.world > 1

    def shard(self, batch: dict, task) -> tuple[dict, mx.array]:
        """This rank's rows of a global batch and the scales of its loss terms (the task's shares
        of the batch's denominators: rows, labelled tokens, or both for pre-training)."""
        rows = len(batch["input_ids"])
        parts = np.array_split(np.arange(rows), self.world)
        mine = parts[self.rank]
        if mine.size == 0:  # fewer rows than ranks (an epoch's last batch): one row, weight 0
            mine, scale = parts[0][:1], [0.0, 0.0]
        else:
            scale = task.loss_shares(batch, mine)
        index = mx.array(mine)
        return {k: v[index] for k, v in batch.items()}, mx.array(scale, dtype=mx.float32)

    def all_sum(self, grads, loss: mx.array):
        """Sums gradients and loss over the ranks in one collective call (one flat float32 buffer)."""
        leaves = tree_flatten(grads)
        flat = mx.concatenate(
            [loss.reshape(1).astype(mx.float32)] + [g.reshape(-1).astype(mx.float32) for _, g in leaves]
        )
        flat = mx.distributed.all_sum(flat, group=self.group)
        out, start = [], 1
        for name, g in leaves:
            out.append((name, flat[start : start + g.size].reshape(g.shape).astype(g.dtype)))
            start += g.size
        return tree_unflatten(out), flat[0]

    def map(self, run, items: list, chunk: int) -> list:
        """run(items) -> one result per item; across ranks, each runs every N-th chunk and rank 0
        gets all results in order (the other ranks get [])."""
        if not self.active:
            return run(items)
        from ..sharded import sharded

        return list(sharded(run, items, chunk, self.group))

    def from_rank0(self, compute):
        """compute() on rank 0, its (JSON-able) result handed to every rank."""
        if not self.active:
            return compute()
        from ..sharded import broadcast_json

        return broadcast_json(compute() if self.rank == 0 else None, self.group)

    def barrier(self) -> None:
        if self.active:
            mx.eval(mx.distributed.all_sum(mx.array(0.0), group=self.group))

    def bytes_per_step(self, params) -> int:
        """What one all_sum moves per rank: the flat float32 buffer of every trainable gradient."""
        return 4 * (1 + sum(v.size for _, v in tree_flatten(params)))
