"""The CLI's task commands (fill-mask, classify, ner, qa, multiple-choice, feature-extraction,
embed): each reads its records, runs its pipeline (sharded under `mlx.launch`) and writes answers."""

from __future__ import annotations

import sys
from pathlib import Path

from .cli_io import Records, UserError, safe_json, write_lines
from .text import escape


def _scores(items: list[dict], key: str) -> str:
    return "  ".join(f"{escape(str(d[key]))}={d['score']:.4f}" for d in items)


def _pipeline(args, task: str, **defaults):
    from .pipelines import pipeline

    if args.batch_size is not None:
        defaults["batch_size"] = args.batch_size
    return pipeline(
        task, args.model, dtype=_dtype(args.dtype), allow_untrained_head=args.allow_untrained_head, **defaults
    )


def _options(args) -> dict:
    progress = args.progress if args.progress is not None else sys.stderr.isatty()
    return {"progress": progress, **({"max_length": args.max_length} if args.max_length else {})}


def _run(pipe, inputs, records: Records, **options):
    """pipe(inputs) streamed; under `mlx.launch`, every rank runs every N-th chunk and rank 0 gets
    all results in input order (the others none)."""
    import mlx.core as mx

    group = mx.distributed.init()
    if group.size() == 1:
        return pipe(inputs, **options)
    from .sharded import sharded

    if group.rank() != 0:
        records.keep, options = False, {**options, "progress": False}
    from .runtime import CHUNK_BATCHES

    # the chunks a single process streams through: so each gives the same batches, the same bits
    size = pipe.defaults.get("batch_size", _default_batch(pipe)) * CHUNK_BATCHES
    return sharded(lambda items: pipe(items, **options), inputs, size, group)


def _default_batch(pipe) -> int:
    import inspect

    return inspect.signature(pipe.function).parameters["batch_size"].default


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


def _records(args, required, optional=()) -> Records:
    return Records(args.file, args.texts, required, optional, args.format)


def cmd_fill_mask(args) -> None:
    def human(r):
        lists = r if r and isinstance(r[0], list) else [r]
        lines = [_scores([{**d, "t": d["token_str"]} for d in answers], "t") for answers in lists]
        if len(lines) == 1:
            return lines[0]
        return "\n".join(f"{'' if i == 0 else chr(9)}[MASK {i + 1}] {line}" for i, line in enumerate(lines))

    targets = [t for group in args.targets or [] for t in group.split(",") if t] or None
    records = _records(args, ("text",))
    inputs = records.start()
    pipe = _pipeline(args, "fill-mask", top_k=args.top_k, targets=targets)
    write_lines(_run(pipe, inputs, records, **_options(args)), records, args.json, human)


def cmd_classify(args) -> None:
    options = {"top_k": args.top_k} if args.top_k is not None else {}
    if args.function:
        options["function_to_apply"] = args.function
    records = _records(args, ("text",), ("text_pair",))
    inputs = records.start()
    pipe = _pipeline(args, "text-classification", **options)
    results = _run(pipe, inputs, records, **_options(args))
    write_lines(results, records, args.json, lambda r: _scores(r if isinstance(r, list) else [r], "label"))


def cmd_ner(args) -> None:
    def human(entities):
        key = "entity" if args.aggregation == "none" else "entity_group"
        return (
            "  ".join(
                f"[{escape(e['word'])}]{escape(e[key])}({e['start']}:{e['end']} {e['score']:.3f})"
                for e in entities
            )
            or "-"
        )

    records = _records(args, ("text",))
    inputs = records.start()
    pipe = _pipeline(args, "token-classification", aggregation_strategy=args.aggregation, stride=args.stride)
    write_lines(_run(pipe, inputs, records, **_options(args)), records, args.json, human)


def cmd_qa(args) -> None:
    if args.context is not None and args.context_file is not None:
        raise UserError("give --context or --context-file, not both")
    if args.texts and args.context is None and args.context_file is None:
        raise UserError("give --context (or --context-file) with questions as arguments")
    context = args.context
    if args.context_file is not None:
        try:
            context = Path(args.context_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"--context-file {args.context_file}: {type(e).__name__}: {e}") from None
    if context is not None:
        records = _records(args, ("question",))
        inputs = ({"question": q, "context": context} for q in records.start())
    else:
        records = _records(args, ("question", "context"))
        inputs = records.start()
    options = dict(
        top_k=args.top_k, max_answer_len=args.max_answer_len, handle_impossible_answer=args.impossible
    )
    if args.doc_stride is not None:
        options["doc_stride"] = args.doc_stride
    if args.max_length:
        options["max_seq_len"] = args.max_length
    pipe = _pipeline(args, "question-answering")

    def human(r):
        return "  ".join(
            f"{escape(a['answer'])!r} ({a['start']}:{a['end']} {a['score']:.4f})"
            for a in (r if isinstance(r, list) else [r])
        )

    progress = _options(args)["progress"]
    write_lines(_run(pipe, inputs, records, progress=progress, **options), records, args.json, human)


def cmd_multiple_choice(args) -> None:
    if args.texts:
        if args.question is None:
            raise UserError(
                "give --question with the choices as arguments (or --file with question, choices)"
            )
        args.texts = [{"question": args.question, "choices": args.texts}]
    records = _records(args, ("question", "choices"))
    inputs = records.start()
    pipe = _pipeline(args, "multiple-choice")
    write_lines(
        _run(pipe, inputs, records, **_options(args)), records, args.json, lambda r: _scores(r, "choice")
    )


def cmd_feature_extraction(args) -> None:
    records = _records(args, ("text",))
    inputs = records.start()
    pipe = _pipeline(args, "feature-extraction")
    for result in _run(pipe, inputs, records, **_options(args)):  # nested lists [1, L, H]: JSON
        records.answered()
        print(safe_json(result), flush=True)


def cmd_embed(args) -> None:
    import numpy as np

    output = Path(args.output) if args.output else None
    if output is not None:
        if not output.parent.is_dir():
            raise UserError(f"--output {args.output}: the folder {output.parent} does not exist")
        if output.exists() and not args.force:
            raise UserError(f"--output {args.output} exists; pass --force to replace it")
    records = _records(args, ("text",))
    inputs = records.start()
    pipe = _pipeline(args, "embed")
    vectors = _run(
        pipe, inputs, records, pooling=args.pooling, normalize=not args.no_normalize, **_options(args)
    )
    if output is not None:
        from .files import atomic_write

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
        print(
            f"wrote {matrix.shape[0]} embeddings of size {matrix.shape[1]} to {args.output}", file=sys.stderr
        )
        return
    write_lines(
        ([round(float(x), 6) for x in v] for v in vectors),
        records,
        args.json,
        lambda r: " ".join(f"{x:.6f}" for x in r),
    )
