"""The output of a task command whose answers are vectors (`Task.vectors`: `mlx-albert embed`):
printed, or written to `--output`: a `.npy` file (one (N, D) float32 matrix), or a folder of shards
(sentence/vectors.py) for large inputs: flat memory, progress with rate and time left, resumed after
a kill by running the same command again, shared between ranks under `mlx.launch`. One row per input
line, blank lines included (their vector is the empty text's), so rows never misalign."""

from __future__ import annotations

import contextlib
import itertools
import os
import sys
from pathlib import Path

from . import tasks
from .io import UserError, write_lines


def add_arguments(p) -> None:
    """The flags of a vector output."""
    p.add_argument(
        "--output",
        help="a .npy file (an (N, D) float32 matrix), or a folder of shards for large inputs (resumable)",
    )
    p.add_argument(
        "--force", action="store_true", help="replace an existing --output file, or another run's vectors"
    )
    p.add_argument(
        "--precision",
        choices=["float32", "int8", "binary"],
        default="float32",
        help="folder output: what the shards store (sentence-transformers' quantize_embeddings)",
    )
    p.add_argument(
        "--storage", choices=["npy", "safetensors"], default="npy", help="folder output: shard files"
    )
    p.add_argument("--shard-size", type=int, default=4096, help="folder output: inputs per shard")


def run(args) -> None:
    """The command: its records in, vectors printed or written to --output."""
    output = Path(args.output) if args.output else None
    if output is not None and output.suffix.lower() != ".npy":
        return _to_folder(args, output)
    if output is not None:
        if not output.parent.is_dir():
            raise UserError(f"--output {args.output}: the folder {output.parent} does not exist")
        if output.exists() and not args.force:
            raise UserError(f"--output {args.output} exists; pass --force to replace it")
    records, inputs = args.task.cli_inputs(args, None, _blank_kept(args))
    pipe = tasks.open_pipeline(args)
    vectors = tasks.run_pipeline(pipe, inputs, records, **tasks.options(args))
    if output is None:
        rows = ([round(float(x), 6) for x in v] for v in vectors)
        write_lines(rows, records, args.json, lambda r: args.task.human(r, args))
        return
    _to_npy(vectors, records, output)


def _to_npy(vectors, records, output: Path) -> None:
    import numpy as np

    from ..files import atomic_write

    rows = []
    for v in vectors:  # under mlx.launch this drives every rank's rounds; rank 0 gets the rows
        records.answered()
        rows.append(v)
    if not rows:  # another rank's: rank 0 writes the file
        return
    matrix = np.stack(rows)

    def save(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, matrix)

    atomic_write(output, save)
    print(f"wrote {matrix.shape[0]} embeddings of size {matrix.shape[1]} to {output}", file=sys.stderr)


def _to_folder(args, folder: Path) -> None:
    """Embeds the input into a folder of shards (vectors.embed_folder), resuming a run there."""
    import mlx.core as mx

    from ..sentence import vectors
    from ..sharded import broadcast_json
    from ..tasks.embed import configure

    if not 0 < args.shard_size <= vectors.MAX_SHARD:
        raise UserError(f"--shard-size must be between 1 and {vectors.MAX_SHARD}, got {args.shard_size}")
    records = _blank_kept(args)(("text",))
    records.keep = False  # results go to files, not next to their inputs
    rows = records.located()
    first = next(rows)  # a missing file, an empty input or a bad first line: before loading the model
    pipe = tasks.open_pipeline(args)
    options = tasks.options(args)
    encoder = configure(
        pipe.model, pipe.tokenizer, pipe.defaults.get("encoder"), options.get("pooling"),
        options.get("normalize"), args.max_length,
    )  # fmt: skip
    if options.get("prompt_name"):
        try:
            encoder = encoder.with_prompt(options["prompt_name"])
        except ValueError as e:
            raise UserError(f"--prompt-name: {e}") from None
    probe = encoder.encode([vectors.PROBE], batch_size=1, prompt="")[0]
    wanted = vectors.Manifest(
        model=str(args.model),
        dimension=len(probe),
        probe=probe.astype(float).tolist(),
        precision=args.precision,
        storage=args.storage,
        shard_size=args.shard_size,
        batch_size=args.batch_size or args.task.batch_size,
        options={k: options.get(k) for k in ("pooling", "normalize", "max_length")}
        | ({"prompt_name": options["prompt_name"]} if options.get("prompt_name") else {}),
        input=vectors.input_identity(args.file, args.texts),
    )
    group = mx.distributed.init()
    with contextlib.ExitStack() as held:
        problem = None
        if group.rank() == 0:
            try:
                held.enter_context(vectors.writing(folder))  # one writer per folder: rank 0 holds it
                resumed = vectors.prepare(folder, wanted, args.force)
            except (OSError, ValueError) as e:
                problem = str(e)
        problem = broadcast_json(problem, group) if group.size() > 1 else problem
        if problem is not None:
            raise UserError(problem)
        if group.rank() == 0 and resumed is not wanted:
            state = "holds this run's vectors: checking them" if resumed.count else "resuming the run there"
            print(f"mlx-albert embed: {folder} {state}", file=sys.stderr)
        _embed(
            args,
            encoder,
            itertools.chain([first], rows),
            folder,
            resumed if group.rank() == 0 else wanted,
            group,
            options["progress"],
        )


def _embed(args, encoder, rows, folder: Path, manifest, group, show_progress: bool) -> None:
    from ..batching import Progress
    from ..sentence import vectors

    total = vectors.count_lines(args.file) if not args.texts else len(args.texts)
    progress = Progress(total, show_progress and group.rank() == 0, "embedded lines")
    kill = os.environ.get("MLX_ALBERT_KILL_AFTER_SHARD")  # test hook: a kill between two shards
    report = vectors.embed_folder(
        encoder, rows, folder, manifest, progress, group, int(kill) if kill else None
    )
    for problem in report.repaired:
        print(f"mlx-albert embed: recomputed a damaged shard: {problem}", file=sys.stderr)
    done = report.manifest
    if group.rank() != 0:
        return
    shards = f"{done.shards()} shard{'s' * (done.shards() != 1)}"
    where = f"{done.count} embeddings of size {done.dimension} in {shards}"
    if report.computed == 0:
        print(
            f"mlx-albert embed: {folder} is already complete ({where}, checked): nothing to do",
            file=sys.stderr,
        )
    else:
        print(f"wrote {where} to {folder}", file=sys.stderr)


def _blank_kept(args):
    opener = tasks.records_opener(args)

    def open_records(required, optional=()):
        records = opener(required, optional)
        records.keep_blank = True  # one vector per line: a blank line is the empty text
        return records

    return open_records
