"""The shards of a folder of vectors on disk: their files (`.npy` vectors, `.lines.npy` input line
numbers and a `.json` record of the run that wrote them with the files' sha256, or one
`.safetensors`), written atomically, and read back only once every part checks out against the
manifest (record, `.npy` header, byte size, rows, line numbers). Errors are one ShardError line
naming the file."""

from __future__ import annotations

import json
import os
import re
import tokenize
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..files import atomic_write, open_regular, read_json
from ..text import escape

if TYPE_CHECKING:  # the manifest's type only: vectors.py imports this module
    from .vectors import Manifest

SHARD = re.compile(r"^shard-(\d{6})(\.lines\.npy|\.npy|\.json|\.safetensors)$")


def shard_files(folder: Path, index: int, storage: str) -> tuple[Path, ...]:
    """The files of a shard, the record written last: (vectors, line numbers, record) for npy, where
    the record (.json) holds the run identity, the rows and the other two files' sha256; one
    .safetensors (the run identity in its metadata)."""
    stem = Path(folder) / f"shard-{index:06d}"
    if storage == "safetensors":
        return (stem.with_suffix(".safetensors"),)
    return stem.with_suffix(".npy"), stem.with_suffix(".lines.npy"), stem.with_suffix(".json")


def present(folder: Path, storage: str) -> set[int]:
    """Indices of the shards whose vectors file is in `folder` (complete or not, this run's or not)."""
    suffix = ".safetensors" if storage == "safetensors" else ".npy"
    found = set()
    for item in Path(folder).iterdir():
        m = SHARD.match(item.name)
        if m and m[2] == suffix:
            found.add(int(m[1]))
    return found


def write_shard(
    folder: Path, index: int, vectors: np.ndarray, lines: np.ndarray, storage: str, run: str | None
) -> None:
    files = shard_files(folder, index, storage)
    lines = lines.astype(np.int64)
    if storage == "safetensors":
        from safetensors.numpy import save_file

        tensors = {"embeddings": np.ascontiguousarray(vectors), "lines": lines}
        metadata = {"run": run or "", "rows": str(len(lines))}
        atomic_write(files[0], lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
        return
    files[2].unlink(missing_ok=True)  # a shard being rewritten is incomplete until its record is back
    atomic_write(files[1], lambda tmp: _save_npy(tmp, lines))
    atomic_write(files[0], lambda tmp: _save_npy(tmp, vectors))
    digests = {"vectors": _digest(files[0]), "lines": _digest(files[1])}
    record = json.dumps({"run": run, "rows": len(lines), **digests}) + "\n"
    atomic_write(files[2], lambda tmp: tmp.write_text(record))


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, array, allow_pickle=False)


class ShardError(ValueError):
    """A shard that is missing, damaged, or not this run's (one line naming the file)."""


def read_shard(
    folder: Path, index: int, manifest: Manifest, rows: int | None = None, verify: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(vectors, line numbers) of a shard, every part checked against the manifest before use: the
    run that wrote it, the `.npy` header and the file's size, `rows` rows (default: what a complete
    folder's shard `index` holds), increasing line numbers; with `verify`, the files' sha256 against
    the record too (resume does; a search reads each shard once and skips it). `.npy` vectors are
    memory-mapped."""
    files = shard_files(folder, index, manifest.storage)
    if rows is None:
        rows = manifest.rows(index)
    if manifest.storage == "safetensors":
        vectors, lines, record = _part(files[0], _read_safetensors, files[0])
    else:
        record = _part(files[2], _read_record, files[2]) if manifest.run is not None else {}
        vectors = _part(files[0], _read_npy, files[0], manifest.dtype, (rows, manifest.width))
        lines = np.array(_part(files[1], _read_npy, files[1], np.dtype(np.int64), (rows,)))
    if manifest.run is not None and record.get("run") != manifest.run:
        raise ShardError(f"{files[-1]} was written by another run than {folder}'s manifest: {REPAIR}")
    for part, path in zip(("vectors", "lines"), files[:2], strict=False):
        if (
            verify
            and manifest.run is not None
            and manifest.storage == "npy"
            and record.get(part) != _digest(path)
        ):
            raise ShardError(f"{path} is not the file its record {files[2].name} describes: {REPAIR}")
    if vectors.shape != (rows, manifest.width) or vectors.dtype != manifest.dtype or lines.shape != (rows,):
        raise ShardError(
            f"{files[0]} holds {vectors.shape} {vectors.dtype} vectors for {lines.shape} lines where "
            f"({rows}, {manifest.width}) {manifest.dtype} belong: {REPAIR}"
        )
    if rows and (lines[0] < 1 or (rows > 1 and not np.all(np.diff(lines) > 0))):
        raise ShardError(f"{files[-1]}: its line numbers are not increasing from 1: {REPAIR}")
    return vectors, lines


REPAIR = "run the same embed command again to recompute it"


def _part(path: Path, read, *args):
    """read(*args), any failure a ShardError naming `path` and the reason."""
    try:
        return read(*args)
    except (OSError, ValueError, EOFError, KeyError) as e:
        text = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        reason = escape(text.replace(str(path), "").strip(" :") or type(e).__name__)[:120]
        raise ShardError(f"{path} is damaged ({reason}): {REPAIR}") from None


def _read_npy(path: Path, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    """A `.npy` file's array, memory-mapped, once its header says `dtype` and `shape` (C order) and
    the file holds exactly that many bytes: nothing is read past a header that lies."""
    fmt = np.lib.format
    with open_regular(path, "vectors shard") as f:
        version = fmt.read_magic(f)
        header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        try:
            found, fortran, dt = header(f, max_header_size=1 << 14)
        except tokenize.TokenError:  # numpy reads a header it cannot parse with Python's tokenizer
            raise ValueError("its header is not a .npy header") from None
        offset, size = f.tell(), os.fstat(f.fileno()).st_size
    if dt != dtype or fortran or tuple(found) != shape:
        raise ValueError(f"holds a {dt} array of shape {tuple(found)}, not {dtype} {shape}")
    if size != offset + int(np.prod(shape)) * dtype.itemsize:
        raise ValueError(
            f"{size} bytes where its header promises {offset + int(np.prod(shape)) * dtype.itemsize}"
        )
    return np.memmap(path, dtype, "r", offset, shape) if shape[0] else np.zeros(shape, dtype)


def _digest(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open_regular(path, "vectors shard") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _read_record(path: Path) -> dict:
    record = read_json(path, "shard record", limit=1 << 12)
    if not isinstance(record, dict):
        raise ValueError("not a shard record")
    return record


def _read_safetensors(path: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    from safetensors import safe_open

    from ..weights import check_safetensors

    check_safetensors(path)
    with safe_open(str(path), "np") as f:
        return f.get_tensor("embeddings"), f.get_tensor("lines"), dict(f.metadata() or {})
