"""The task commands (fill-mask, classify, ner, qa, multiple-choice, feature-extraction, embed),
one per task of the registry: shared flags, the task's own, its records in, its answers out
(sharded over ranks under `mlx.launch`)."""

from __future__ import annotations

import argparse
import sys

from ..records import FORMATS
from ..tasks import Task
from .io import Records, safe_json, write_lines


def add_parser(sub) -> None:
    """One command per task of the registry that has one."""
    from ..tasks import TASKS

    for task in TASKS:
        if task.command:
            add_task_parser(sub, task)


def add_task_parser(sub, task: Task) -> argparse.ArgumentParser:
    """A command for `task`: the flags every task command has, then the task's own (and a vector
    output's, for a task whose answers are vectors)."""
    p = sub.add_parser(task.command, help=task.help, description=task.help)
    p.add_argument("--model", required=True, help="checkpoint folder, Hub repo id, or pydoc-small")
    p.add_argument(
        "--adapter-path", help="LoRA adapters (from `train --lora-rank R`) merged onto --model, their base"
    )
    p.add_argument("texts", nargs="*", help=task.texts_help)
    p.add_argument(
        "--file", help="inputs from a .txt (one per line), .jsonl or .csv (with a header) file; - for stdin"
    )
    p.add_argument(
        "--format",
        choices=FORMATS,
        default="auto",
        help="how to read --file or stdin (default auto: by the file's suffix; stdin whose first line is a "
        "JSON object is read as JSON lines)",
    )
    p.add_argument(
        "--batch-size", type=int, default=None, help=f"inputs per forward pass (default {task.batch_size})"
    )
    p.add_argument("--max-length", type=int, default=None, help="tokens per input (default: the model's)")
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], help="compute dtype")
    p.add_argument("--json", action="store_true", help="one JSON result per line")
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress on stderr (default: when stderr is a terminal)",
    )
    p.add_argument(
        "--allow-untrained-head",
        action="store_true",
        help="run even if the checkpoint has no trained weights for this task's head (random answers)",
    )
    task.add_arguments(p)
    if task.vectors:
        from . import vectors  # which builds on this module's helpers

        vectors.add_arguments(p)
    p.set_defaults(run=vectors.run if task.vectors else run, task=task)
    return p


def open_pipeline(args, **defaults):
    """The task's pipeline for args.model (dtype, batch size, untrained-head choice from the flags)."""
    from ..tasks import pipeline

    if args.batch_size is not None:
        defaults["batch_size"] = args.batch_size
    dtype = _dtype(args.dtype)
    return pipeline(
        args.task.name,
        args.model,
        dtype=dtype,
        allow_untrained_head=args.allow_untrained_head,
        adapter_path=args.adapter_path,
        **defaults,
    )


def options(args) -> dict:
    """The call options every task command sets: progress, max_length, and the task's own."""
    progress = args.progress if args.progress is not None else sys.stderr.isatty()
    common = {"progress": progress, **({"max_length": args.max_length} if args.max_length else {})}
    task = args.task.cli_options(args)
    if "max_seq_len" in task:  # QA names its length max_seq_len
        common.pop("max_length", None)
    return {**common, **task}


def records_opener(args):
    def open_records(required, optional=()) -> Records:
        return Records(args.file, args.texts, tuple(required), tuple(optional), args.format)

    return open_records


def run_pipeline(pipe, inputs, records: Records, **call_options):
    """pipe(inputs) streamed; under `mlx.launch`, every rank runs every N-th chunk and rank 0 gets
    all results in input order (the others none)."""
    import mlx.core as mx

    group = mx.distributed.init()
    if group.size() == 1:
        return pipe(inputs, **call_options)
    from ..batching import CHUNK_BATCHES
    from ..sharded import sharded

    if group.rank() != 0:
        records.keep, call_options = False, {**call_options, "progress": False}
    # the chunks a single process streams through: so each gives the same batches, the same bits
    size = pipe.defaults.get("batch_size", pipe.task.batch_size) * CHUNK_BATCHES
    return sharded(lambda items: pipe(items, **call_options), inputs, size, group)


def run(args) -> None:
    """A task command: its records in, one answer per input out."""
    task = args.task
    records, inputs = task.cli_inputs(args, None, records_opener(args))
    pipe = open_pipeline(args)
    results = run_pipeline(pipe, inputs, records, **options(args))
    if getattr(task, "json_only", False):
        for result in results:  # nested lists: one JSON line each
            records.answered()
            print(safe_json(result), flush=True)
        return
    write_lines(results, records, args.json, lambda r: task.human(r, args))


def _dtype(name: str | None) -> str | None:
    if name is None:
        return None
    import mlx.core as mx

    if name != "float32" and mx.default_device() == mx.cpu:
        print(
            f"mlx-albert: warning: --dtype {name} on the CPU backend is about 30x slower than float32 "
            "(no fast half-precision kernels there); leave --dtype out on CPU",
            file=sys.stderr,
        )
    return name
