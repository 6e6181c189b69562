"""`mlx-albert embed`: the embed task's command, whose vectors can also go to a file: one row per
input line, blank lines included (their vector is the empty text's), so rows never misalign."""

from __future__ import annotations

import sys
from pathlib import Path

from . import tasks
from .io import UserError, write_lines


def add_parser(sub, task) -> None:
    p = tasks.add_parser(sub, task, run)
    p.add_argument("--output", help="write an (N, D) float32 .npy file instead of printing")
    p.add_argument("--force", action="store_true", help="replace an existing --output file")


def run(args) -> None:
    import numpy as np

    output = Path(args.output) if args.output else None
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
    print(f"wrote {matrix.shape[0]} embeddings of size {matrix.shape[1]} to {args.output}", file=sys.stderr)


def _blank_kept(args):
    opener = tasks.records_opener(args)

    def open_records(required, optional=()):
        records = opener(required, optional)
        records.keep_blank = True  # one vector per line: a blank line is the empty text
        return records

    return open_records
