"""Batch inference over `mx.distributed` ranks (under `mlx.launch`): every rank reads the same input
stream, runs every N-th chunk of it, and rank 0 receives all results in input order (one
`all_gather` of the chunk results per round), so its output equals a single process's. Memory stays
bounded: one round of N chunks is held at a time."""

from __future__ import annotations

import io
import itertools
import json
from collections.abc import Callable, Iterable, Iterator

import mlx.core as mx
import numpy as np


def sharded(run: Callable[[list], list], inputs: Iterable, chunk: int, group) -> Iterator:
    """Results of run() over `inputs`, in input order, yielded on rank 0 (other ranks yield none)."""
    it = iter(inputs)
    world, rank = group.size(), group.rank()
    while True:
        chunks = [list(itertools.islice(it, chunk)) for _ in range(world)]  # the same on every rank
        mine = chunks[rank]
        blobs = _all_gather_bytes(_encode(run(mine) if mine else []), group)
        if rank == 0:
            for blob in blobs:
                yield from _decode(blob)
        if len(chunks[-1]) < chunk:  # the input ended within this round (every rank sees the same)
            return


def _encode(results: list) -> bytes:
    if len(results) and isinstance(results[0], np.ndarray):  # embeddings: one float32 matrix
        buffer = io.BytesIO()
        np.save(buffer, np.stack(results).astype(np.float32), allow_pickle=False)
        return b"A" + buffer.getvalue()
    return b"J" + json.dumps(results, default=float).encode()


def _decode(blob: bytes) -> list:
    if blob[:1] == b"A":
        return list(np.load(io.BytesIO(blob[1:]), allow_pickle=False))
    return json.loads(blob[1:].decode())


def _all_gather_bytes(data: bytes, group) -> list[bytes]:
    sizes = mx.distributed.all_gather(mx.array([len(data)], dtype=mx.int32), group=group).tolist()
    width = max(sizes)
    if width == 0:
        return [b""] * len(sizes)
    padded = np.zeros(width, np.uint8)
    padded[: len(data)] = np.frombuffer(data, np.uint8)
    gathered = np.array(mx.distributed.all_gather(mx.array(padded), group=group)).reshape(len(sizes), width)
    return [gathered[i, :n].tobytes() for i, n in enumerate(sizes)]


def broadcast_json(value, group):
    """Rank 0's JSON-able value on every rank."""
    blobs = _all_gather_bytes(json.dumps(value).encode() if group.rank() == 0 else b"", group)
    return json.loads(blobs[0].decode())
