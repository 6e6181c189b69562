"""`mlx-albert` (also `python -m mlx_albert`): convert checkpoints and run every ALBERT task from the
shell. Text comes from arguments, a --file (.txt one per line, .jsonl, .csv with a header) or stdin."""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from . import __version__

EPILOG = """examples:
  mlx-albert fill-mask --model mlx_model "The capital of France is [MASK]."
  mlx-albert classify --model my-classifier --file reviews.csv --json > labels.jsonl
  mlx-albert ner --model my-ner --aggregation simple < article.txt
  mlx-albert qa --model my-qa --context "ALBERT shares one layer's weights." "What is shared?"
  mlx-albert embed --model mlx_model --file sentences.txt --output vectors.npy
  mlx-albert train --model albert/albert-base-v2 --task sequence_classification \\
      --train train.jsonl --eval dev.jsonl --output-dir my-classifier --epochs 3
  mlx-albert info --model mlx_model"""


class UserError(Exception):
    """A problem with the command line or its inputs: reported in one line, no traceback."""


def read_records(path: str | None, texts: list[str], fields: tuple[str, ...]) -> Iterator:
    """Inputs as strings (one field) or dicts of `fields`, from arguments, a file or stdin, lazily."""
    if texts:
        yield from texts
        return
    if path is None:
        if sys.stdin.isatty():
            raise UserError("no input: give texts as arguments, --file FILE, or pipe text on stdin")
        source, name, kind = sys.stdin, "<stdin>", "txt"
    else:
        if not Path(path).is_file():
            raise UserError(f"--file {path}: no such file")
        source, name, kind = open(path, encoding="utf-8", newline=""), path, Path(path).suffix.lstrip(".")
    with source:
        if kind == "jsonl":
            for number, line in enumerate(source, 1):
                if line.strip():
                    yield _record(_json_line(line, name, number), fields, f"{name}:{number}")
        elif kind == "csv":
            reader = csv.DictReader(source)
            missing = [f for f in fields[:1] if f not in (reader.fieldnames or [])]
            if missing:
                raise UserError(f"{name}: the header needs a {missing[0]!r} column, has {reader.fieldnames}")
            for row in reader:
                yield _record({k: v for k, v in row.items() if v}, fields, f"{name}:{reader.line_num}")
        else:  # plain text: one input per non-empty line
            yield from (line.rstrip("\n") for line in source if line.strip())


def _json_line(line: str, name: str, number: int):
    try:
        return json.loads(line)
    except json.JSONDecodeError as e:
        raise UserError(f"{name}:{number}: not valid JSON ({e.msg})") from None


def _record(value, fields: tuple[str, ...], where: str):
    if isinstance(value, str) and len(fields) == 1:
        return value
    if not isinstance(value, dict) or fields[0] not in value:
        raise UserError(f"{where}: expected an object with a {fields[0]!r} field, got {value!r}")
    if len(fields) == 1:
        return value[fields[0]]
    return {k: value[k] for k in fields if k in value}


def _print(result, as_json: bool, human) -> None:
    print(json.dumps(result, ensure_ascii=False) if as_json else human(result), flush=True)


def _scores(items: list[dict], key: str) -> str:
    return "  ".join(f"{d[key]}={d['score']:.4f}" for d in items)


def _run_task(args, task: str, fields: tuple[str, ...], human, **options) -> None:
    from .pipelines import pipeline

    pipe = pipeline(task, args.model, dtype=_dtype(args.dtype), batch_size=args.batch_size, **options)
    records = read_records(args.file, args.texts, fields)
    progress = sys.stderr.isatty() and not args.texts
    for result in pipe(records, progress=progress):
        _print(result, args.json, human)


def _dtype(name: str | None):
    if name is None:
        return None
    import mlx.core as mx

    return getattr(mx, name)


def cmd_fill_mask(args) -> None:
    def human(r):
        lists = r if r and isinstance(r[0], list) else [r]
        return "\n".join(_scores([{**d, "t": d["token_str"]} for d in answers], "t") for answers in lists)

    _run_task(args, "fill-mask", ("text",), human, top_k=args.top_k, targets=args.targets)


def cmd_classify(args) -> None:
    options = {"top_k": args.top_k} if args.top_k is not None else {}
    if args.function:
        options["function_to_apply"] = args.function

    def human(r):
        return _scores(r if isinstance(r, list) else [r], "label")

    _run_task(args, "text-classification", ("text", "text_pair"), human, **options)


def cmd_ner(args) -> None:
    def human(entities):
        key = "entity" if args.aggregation == "none" else "entity_group"
        return (
            "  ".join(f"[{e['word']}]{e[key]}({e['start']}:{e['end']} {e['score']:.3f})" for e in entities)
            or "-"
        )

    _run_task(
        args,
        "token-classification",
        ("text",),
        human,
        aggregation_strategy=args.aggregation,
        stride=args.stride,
    )


def cmd_qa(args) -> None:
    from .pipelines import pipeline

    pipe = pipeline("question-answering", args.model, dtype=_dtype(args.dtype), batch_size=args.batch_size)
    if args.context is not None or args.context_file is not None:
        context = (
            args.context if args.context is not None else Path(args.context_file).read_text(encoding="utf-8")
        )
        questions = read_records(args.file, args.texts, ("question",))
        records = ({"question": q, "context": context} for q in questions)
    elif args.texts:
        raise UserError("give --context (or --context-file) with questions as arguments")
    else:
        records = read_records(args.file, [], ("question", "context"))
    options = dict(
        top_k=args.top_k, max_answer_len=args.max_answer_len, handle_impossible_answer=args.impossible
    )

    def human(r):
        return "  ".join(
            f"{a['answer']!r} ({a['start']}:{a['end']} {a['score']:.4f})"
            for a in (r if isinstance(r, list) else [r])
        )

    for result in pipe(records, **options):
        _print(result, args.json, human)


def cmd_embed(args) -> None:
    from .pipelines import pipeline

    pipe = pipeline("embed", args.model, dtype=_dtype(args.dtype), batch_size=args.batch_size)
    vectors = pipe(
        read_records(args.file, args.texts, ("text",)), pooling=args.pooling, normalize=not args.no_normalize
    )
    if args.output:
        from .files import atomic_write

        matrix = np.stack(list(vectors))
        atomic_write(Path(args.output), lambda tmp: np.save(open(tmp, "wb"), matrix))
        print(
            f"wrote {matrix.shape[0]} embeddings of size {matrix.shape[1]} to {args.output}", file=sys.stderr
        )
        return
    for v in vectors:
        _print([round(float(x), 6) for x in v], args.json, lambda r: " ".join(f"{x:.6f}" for x in r))


def cmd_convert(args) -> None:
    from .convert import convert

    options = {k: v for k, v in vars(args).items() if k not in ("command", "verbose", "run")}
    print(f"Converted {args.hf_path} -> {convert(**options)}")


def cmd_train(args) -> None:
    from .training.run import run_from_args

    logging.getLogger("mlx_albert").setLevel(logging.INFO)
    print(json.dumps(run_from_args(args)))


def cmd_info(args) -> None:
    from mlx.utils import tree_flatten

    from .hub import resolve
    from .loading import load

    folder = resolve(args.model)
    model = load(folder, lazy=True)
    config = model.config
    params = dict(tree_flatten(model.parameters()))
    info = {
        "path": str(folder),
        "architecture": type(model).__name__,
        "parameters": model.num_parameters(),
        "bytes": int(sum(v.nbytes for v in params.values())),
        "dtype": str(model.dtype).removeprefix("mlx.core."),
        "quantization": config.quantization,
        "tokenizer": next((n for n in ("tokenizer.json", "spiece.model") if (folder / n).exists()), None),
        "config": {k: v for k, v in vars(config).items() if k not in ("extra",)},
    }
    if args.json:
        print(json.dumps(info, default=str))
        return
    for key, value in info.items():
        if key != "config":
            print(f"{key:>13}: {value}")
    print("       config:")
    for key, value in info["config"].items():
        print(f"{'':>15}{key} = {value!r}")


def configure_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlx-albert",
        description="Convert and run ALBERT models with MLX.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"mlx-albert {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log loading details")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    from .convert import configure_parser as convert_parser

    convert_parser(
        sub.add_parser("convert", help="transformers checkpoint -> MLX folder (dtype, quantization)")
    )

    def task(name: str, help: str, fn, text_help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("--model", required=True, help="checkpoint folder or Hub repo id")
        p.add_argument("texts", nargs="*", help=text_help)
        p.add_argument(
            "--file", help="inputs from a .txt (one per line), .jsonl or .csv (with a header) file"
        )
        p.add_argument("--batch-size", type=int, default=8, help="inputs per forward pass (default 8)")
        p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], help="compute dtype")
        p.add_argument("--json", action="store_true", help="one JSON result per line")
        p.set_defaults(run=fn)
        return p

    p = task("fill-mask", "predict the [MASK] tokens of texts", cmd_fill_mask, "texts with [MASK]")
    p.add_argument("--top-k", type=int, default=5, help="answers per mask (default 5)")
    p.add_argument("--targets", nargs="+", help="only score these words")
    p = task("classify", "label texts or text pairs (jsonl/csv: text, text_pair)", cmd_classify, "texts")
    p.add_argument("--top-k", type=int, default=None, help="the k best labels (default: the best one)")
    p.add_argument(
        "--function", choices=["softmax", "sigmoid", "none"], help="score function (default: config's)"
    )
    p = task("ner", "label tokens / find entities", cmd_ner, "texts")
    p.add_argument(
        "--aggregation",
        default="simple",
        choices=["none", "simple", "first", "average", "max"],
        help="default simple",
    )
    p.add_argument(
        "--stride", type=int, default=None, help="cover long texts in windows overlapping this much"
    )
    p = task(
        "qa",
        "answer questions from a context (jsonl/csv: question, context)",
        cmd_qa,
        "questions (with --context)",
    )
    p.add_argument("--context", help="the context for every question")
    p.add_argument("--context-file", help="read the context from this file")
    p.add_argument("--top-k", type=int, default=1, help="answers per question")
    p.add_argument("--max-answer-len", type=int, default=15, help="longest answer in tokens")
    p.add_argument("--impossible", action="store_true", help="allow the empty answer")
    p = task("embed", "sentence embeddings", cmd_embed, "texts")
    p.add_argument("--pooling", default="mean", choices=["mean", "cls", "pooler"], help="default mean")
    p.add_argument("--no-normalize", action="store_true", help="keep raw lengths (default: unit L2 norm)")
    p.add_argument("--output", help="write an (N, H) float32 .npy file instead of printing")
    train_help = "fine-tune any head on .jsonl/.csv data, or pre-train (MLM + SOP) on a .txt file"
    p = sub.add_parser("train", help=train_help, description=train_help)
    from .training.run import configure_parser as train_parser

    train_parser(p).set_defaults(run=cmd_train)
    p = sub.add_parser("info", help="config, parameter count, dtype and quantization of a checkpoint")
    p.add_argument("--model", required=True, help="checkpoint folder or Hub repo id")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .training.trainer import TrainingError

    args = configure_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR, format="%(message)s")
    if args.command == "convert":
        from .convert import main as convert_main

        return convert_main(
            argv[argv.index("convert") + 1 :] if argv else sys.argv[sys.argv.index("convert") + 1 :]
        )
    try:
        args.run(args)
    except (UserError, ValueError, TypeError, OSError, ImportError, TrainingError) as e:
        print(f"mlx-albert {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `| head`
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
