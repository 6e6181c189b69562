"""A folder of sentence vectors: fixed-size shards (`.npy` with the input line numbers alongside, or
one `.safetensors` each) written atomically one at a time, and a manifest naming the model, the
dimension, the precision, the input and the run's identity. One run writes a folder at a time. A
run killed at any point and started again keeps the shards on disk that are this run's and whole
(shards.py checks them) and computes the others exactly as an uninterrupted run would (a
shard's batches depend only on its own texts); under `mlx.launch` rank r writes shards r, r + N,
... . Read back one shard at a time (memory-mapped `.npy`), so an index never needs to fit in memory."""

from __future__ import annotations

import contextlib
import itertools
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from ..batching import Progress
from ..checks import integer_in
from ..files import LOCK, FolderLock, atomic_write, in_use, read_json
from ..text import escape
from .encoder import SentenceEncoder
from .ops import quantize
from .shards import (  # noqa: F401  (read_shard, write_shard: this module's names before the split)
    REPAIR,
    SHARD,
    ShardError,
    present,
    read_shard,
    shard_files,
    write_shard,
)

MANIFEST = "manifest.json"
KIND = "mlx-albert-vectors"
STORAGES = ("npy", "safetensors")
# What a shard stores, as sentence-transformers' quantize_embeddings makes it: float32; int8 (255
# steps between each dimension's minimum and maximum over the first shard); binary (np.packbits of
# x > 0, minus 128, as int8).
PRECISIONS = ("float32", "int8", "binary")
PROBE = "A sentence that every index embeds, so that the model which made the vectors can be recognised."
SAME_MODEL = 0.999  # cosine of two probe vectors of one model (other device or dtype: ~1 - 1e-4)
MAX_DIMENSION = 1 << 16
MAX_SHARD = 1 << 22
MAX_COUNT = 1 << 40
_RUN = re.compile(r"^[0-9a-f]{64}$")


@dataclass
class Manifest:
    """What a folder of vectors holds and how it was made (manifest.json)."""

    model: str  # as the user named it (messages), recognised by `probe`
    dimension: int
    probe: list[float]  # the model's float32 vector of PROBE
    precision: str = "float32"
    storage: str = "npy"
    shard_size: int = 4096  # inputs per shard: the unit of work, of resuming and of sharing ranks
    batch_size: int = 64
    options: dict = field(default_factory=dict)  # what else changes the vectors: pooling, length
    input: dict = field(default_factory=dict)  # {"path", "size", "mtime_ns"} of the input file
    ranges: list | None = None  # int8: (2, dimension) minimum and maximum of the first shard's vectors
    count: int | None = None  # vectors in all, once every shard is written
    run: str | None = None  # this run's identity: every shard it wrote records it (None: before 0.3)

    @property
    def width(self) -> int:
        """Stored columns: the dimension, or its packed bits for binary."""
        return -(-self.dimension // 8) if self.precision == "binary" else self.dimension

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.float32 if self.precision == "float32" else np.int8)

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        """The manifest of `folder`, checked field by field (it is untrusted input)."""
        path = Path(folder) / MANIFEST
        data = read_json(path, "vectors manifest", limit=1 << 22)
        if not isinstance(data, dict) or data.get("kind") != KIND:
            raise ValueError(f"{path} is not an mlx-albert vectors manifest")
        known = {f.name for f in fields(cls)}
        try:
            manifest = cls(**{k: v for k, v in data.items() if k in known})
            manifest.check()
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path} is malformed ({escape(str(e))[:160]})") from None
        return manifest

    def check(self) -> None:
        if not integer_in(self.dimension, 1, MAX_DIMENSION):
            raise ValueError(f"dimension {self.dimension!r}")
        if not integer_in(self.shard_size, 1, MAX_SHARD):
            raise ValueError(f"shard_size {self.shard_size!r}")
        if self.precision not in PRECISIONS or self.storage not in STORAGES:
            raise ValueError(f"precision {self.precision!r} or storage {self.storage!r}")
        if not isinstance(self.probe, list) or len(self.probe) != self.dimension:
            raise ValueError("probe vector")
        if not all(isinstance(x, int | float) and abs(x) < 1e30 for x in self.probe):
            raise ValueError("probe vector values")
        if not isinstance(self.options, dict) or not isinstance(self.input, dict):
            raise ValueError("options or input")
        if self.precision == "int8" and np.asarray(self.ranges, np.float64).shape != (2, self.dimension):
            raise ValueError("int8 ranges")
        if self.count is not None and not integer_in(self.count, 0, MAX_COUNT):
            raise ValueError(f"count {self.count!r}")
        if not integer_in(self.batch_size, 1, MAX_SHARD):
            raise ValueError(f"batch_size {self.batch_size!r}")
        if self.run is not None and not (isinstance(self.run, str) and _RUN.match(self.run)):
            raise ValueError("run identity")
        path = self.input.get("path")
        if not (isinstance(path, str) and len(path) <= 4096) or not all(
            integer_in(self.input[k]) for k in ("size", "mtime_ns") if k in self.input
        ):
            raise ValueError("input")

    def write(self, folder: Path) -> None:
        import json

        text = json.dumps({"kind": KIND, "version": 1, **asdict(self)}) + "\n"
        atomic_write(Path(folder) / MANIFEST, lambda tmp: tmp.write_text(text))

    def shards(self) -> int:
        return -(-self.count // self.shard_size) if self.count else 0

    def rows(self, index: int) -> int:
        """The rows shard `index` of a complete folder holds: shard_size, less in the last."""
        return min(self.shard_size, self.count - index * self.shard_size)

    def new_run(self) -> Manifest:
        """This manifest with a new run identity: a digest of what makes the vectors (input, model,
        options) and a random part, so that no other run's shard is ever taken for this one's."""
        import hashlib
        import json

        made = {k: v for k, v in asdict(self).items() if k not in ("count", "run", "ranges")}
        text = json.dumps({**made, "nonce": os.urandom(16).hex()}, sort_keys=True)
        self.run = hashlib.sha256(text.encode()).hexdigest()
        return self

    def same_model(self, other: Manifest) -> bool:
        a, b = np.asarray(self.probe, np.float64), np.asarray(other.probe, np.float64)
        if a.shape != b.shape:
            return False
        cosine = a @ b / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-30)
        return bool(cosine >= SAME_MODEL)

    def describe(self) -> str:
        return f"model {escape(self.model)[:200]} (dimension {self.dimension})"


def input_identity(path, texts: list[str] | None = None) -> dict:
    """What tells one input from another (or a changed file): path, size and modification time of a
    file, a digest of texts given as arguments; stdin has none (it cannot be resumed)."""
    if texts:
        import hashlib

        digest = hashlib.sha256("\n".join(texts).encode("utf-8", "surrogatepass")).hexdigest()
        return {"path": "<arguments>", "sha256": digest}
    if path in (None, "-"):
        return {"path": "<stdin>"}
    stat = Path(path).stat()
    return {"path": str(Path(path).resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def count_lines(path) -> int | None:
    """Lines of a regular file, counted in 1 MiB reads (for the progress line's total)."""
    if path in (None, "-") or not Path(path).is_file():
        return None
    lines, last = 0, b"\n"
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            lines += block.count(b"\n")
            last = block[-1:]
    return lines + (last != b"\n")


# -- shards ---------------------------------------------------------------------------------------
def shards(folder: Path) -> tuple[Manifest, Iterator[tuple[np.ndarray, np.ndarray]]]:
    """The manifest of a complete folder of vectors and its shards in order, read one at a time:
    every shard but the last holds shard_size rows, and they add up to the manifest's count."""
    manifest = Manifest.read(folder)
    if manifest.count is None:
        raise ValueError(
            f"{folder} is not complete (the run that writes it stopped): run the same embed command again "
            "to finish it"
        )
    extra = shard_files(folder, manifest.shards(), manifest.storage)[0]
    if extra.exists():
        raise ValueError(
            f"{extra} lies past the {manifest.count} vectors {folder / MANIFEST} counts: {REPAIR}"
        )
    return manifest, (read_shard(folder, i, manifest) for i in range(manifest.shards()))


# -- writing ----------------------------------------------------------------------------------------
@contextlib.contextmanager
def writing(folder: Path):
    """Holds `folder` (made if missing) for one writer: a second run is refused naming the first."""
    folder = Path(folder)
    if not folder.parent.is_dir():
        raise FileNotFoundError(f"cannot write {folder}: the folder {folder.parent} does not exist")
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(f"{folder} is a file: give a folder for the vectors (or a .npy file name)")
    made = not folder.exists()
    folder.mkdir(exist_ok=True)
    lock = FolderLock(folder)
    if (holder := lock.acquire()) is not None:
        raise FileExistsError(in_use(folder, holder))
    try:
        yield folder
    finally:
        lock.release()
        if made:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if still empty: a run refused before its first file leaves nothing


def prepare(folder: Path, wanted: Manifest, force: bool) -> Manifest:
    """The manifest to write `folder` under: the one there when this is the same run (resumed), else
    `wanted` with a new run identity. Another model's or another run's vectors are replaced only with
    force; files that are not vectors are never deleted. Call it holding the folder (`writing`)."""
    folder = Path(folder)
    if not (folder / MANIFEST).is_file():
        if any(p.name != LOCK for p in folder.iterdir()) and not force:
            raise FileExistsError(
                f"{folder} holds files that are not mlx-albert vectors: choose a new or empty folder "
                "(or pass --force to write beside them)"
            )
        return wanted.new_run()
    old = Manifest.read(folder)
    problem = _difference(old, wanted)
    if problem is None and old.run is not None:
        return old  # the same run: resumed (with its int8 ranges)
    problem = problem or "vectors written before runs were recorded"
    if not force and present(
        folder, old.storage
    ):  # (a run that stopped before its first shard: nothing to lose)
        raise FileExistsError(
            f"{folder} holds {problem}: pass --force to replace them, or choose another folder"
        )
    for item in folder.iterdir():
        if SHARD.match(item.name) or item.name == MANIFEST:
            item.unlink()
    return wanted.new_run()


def _difference(old: Manifest, new: Manifest) -> str | None:
    if old.dimension != new.dimension or not old.same_model(new):
        return f"the vectors of {old.describe()}, not of {new.describe()}"
    for name in ("precision", "storage", "shard_size", "batch_size", "options"):
        if getattr(old, name) != getattr(new, name):
            return f"vectors made with {name} {getattr(old, name)!r} (this run: {getattr(new, name)!r})"
    if old.input != new.input or new.input.get("path") == "<stdin>":
        return (
            f"the vectors of another input ({escape(str(old.input.get('path')))[:200]}, or the file "
            "changed since; stdin cannot be resumed)"
        )
    return None


@dataclass
class Written:
    """What a run did: its manifest (complete), the shards it computed, and why any were redone."""

    manifest: Manifest
    computed: int = 0
    repaired: list[str] = field(default_factory=list)


def embed_folder(
    encoder: SentenceEncoder,
    rows: Iterable[tuple[int, str]],
    folder: Path,
    manifest: Manifest,
    progress: Progress,
    group=None,
    kill_after: int | None = None,
) -> Written:
    """Embeds (line number, text) rows into `folder` shard by shard and writes the manifest. A shard
    already on disk is kept when it is this run's and whole (its record, header, size and line
    numbers checked), else computed again. Under a distributed group, rank r writes shards r, r + N,
    ... and rank 0 the manifest once every rank is done."""
    folder = Path(folder)
    world, rank = (group.size(), group.rank()) if group is not None else (1, 0)
    it, computed = iter(rows), {}
    if rank == 0:
        if manifest.precision == "int8" and manifest.ranges is None:  # calibrated on the first shard
            first = list(itertools.islice(it, manifest.shard_size))
            computed[0] = vectors = _encode(encoder, [t for _, t in first], manifest.batch_size)
            manifest.ranges = np.vstack([vectors.min(axis=0), vectors.max(axis=0)]).tolist()
            it = itertools.chain(first, it)
        manifest.count = None
        manifest.write(folder)  # before any shard: a killed run's folder is recognised when resumed
    _barrier(group)
    if rank != 0:
        manifest = Manifest.read(folder)  # rank 0's, int8 ranges included
    done, report, count = present(folder, manifest.storage), Written(manifest), 0
    for index in itertools.count():
        shard = list(itertools.islice(it, manifest.shard_size))
        if not shard:
            break
        count += len(shard)
        if index % world != rank:
            progress.skip(len(shard))
            continue
        lines = np.array([n for n, _ in shard], np.int64)
        if index in done:
            problem = _kept(folder, index, manifest, lines)
            if problem is None:
                progress.skip(len(shard))
                continue
            report.repaired.append(problem)
        vectors = computed.pop(index, None)
        if vectors is None:
            vectors = _encode(encoder, [t for _, t in shard], manifest.batch_size, progress)
        else:
            progress.update(len(shard))
        ranges = np.asarray(manifest.ranges, np.float32) if manifest.ranges is not None else None
        vectors = quantize(vectors, manifest.precision, ranges)
        write_shard(folder, index, vectors, lines, manifest.storage, manifest.run)
        report.computed += 1
        if kill_after == index:  # test hook: die (SIGKILL, no cleanup) after this shard
            import signal

            os.kill(os.getpid(), signal.SIGKILL)
    progress.end()
    report.computed = _sum(report.computed, group)  # every rank's shards are on disk
    manifest.count = count
    on_disk = present(folder, manifest.storage)
    missing = sorted(set(range(manifest.shards())) - on_disk)
    if missing:
        raise OSError(f"{folder}: shards {missing[:5]} are missing (removed while this run wrote): run again")
    if rank == 0:
        for index in sorted(i for i in on_disk if i >= manifest.shards()):  # past this input's end
            for path in shard_files(folder, index, manifest.storage):
                path.unlink(missing_ok=True)
        manifest.write(folder)
    return report


def _kept(folder: Path, index: int, manifest: Manifest, lines: np.ndarray) -> str | None:
    """None when shard `index` on disk is this run's whole shard of `lines`, else what is wrong."""
    try:
        _, found = read_shard(folder, index, manifest, rows=len(lines), verify=True)
    except ShardError as e:
        return str(e).removesuffix(f": {REPAIR}")
    if not np.array_equal(found, lines):
        return f"{shard_files(folder, index, manifest.storage)[-1]} holds other line numbers"
    return None


def _sum(value: int, group) -> int:
    """`value` summed over the ranks (a barrier too)."""
    if group is None or group.size() == 1:
        return value
    import mlx.core as mx

    total = mx.distributed.all_sum(mx.array(value, mx.int32), group=group)
    return int(total.item())


def _barrier(group) -> None:
    if group is not None and group.size() > 1:
        import mlx.core as mx

        mx.eval(mx.distributed.all_sum(mx.array(0.0), group=group))


def _encode(encoder: SentenceEncoder, texts: list[str], batch_size: int, progress: Progress | None = None):
    """float32 vectors of one shard, in pieces of 16 batches (each piece length-sorted) so that the
    progress line moves; the pieces depend only on the shard, so a resumed run repeats them."""
    piece, parts = batch_size * 16, []
    for start in range(0, len(texts), piece):
        parts.append(encoder.encode(texts[start : start + piece], batch_size=batch_size))
        if progress is not None:
            progress.update(len(parts[-1]))
    return np.concatenate(parts).astype(np.float32, copy=False)
