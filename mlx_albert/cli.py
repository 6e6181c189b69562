"""`mlx-albert` (also `python -m mlx_albert`): convert checkpoints and run every ALBERT task from the
shell. Text comes from arguments, a --file (.txt one per line, .jsonl, .csv with a header) or stdin."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from . import __version__
from .cli_io import FORMATS, UserError, safe_json
from .cli_tasks import (
    cmd_classify,
    cmd_embed,
    cmd_feature_extraction,
    cmd_fill_mask,
    cmd_multiple_choice,
    cmd_ner,
    cmd_qa,
)
from .pipelines import ALIASES, TASKS
from .text import escape

EPILOG = """examples:
  mlx-albert fill-mask --model pydoc-small "Return a new [MASK] from the iterable."
  mlx-albert classify --model my-classifier --file reviews.csv --json > labels.jsonl
  mlx-albert ner --model my-ner --aggregation simple < article.txt
  mlx-albert qa --model my-qa --context "ALBERT shares one layer's weights." "What is shared?"
  mlx-albert multiple-choice --model my-mc --question "Fire plus water" "goes out" "grows"
  mlx-albert embed --model pydoc-small --file sentences.txt --output vectors.npy
  mlx-albert train --model albert/albert-base-v2 --task sequence_classification \\
      --train train.jsonl --eval dev.jsonl --output-dir my-classifier --epochs 3
  mlx-albert serve --model pydoc-small --port 8080
  mlx-albert export --model pydoc-small --task fill-mask --output pydoc.mlxfn
  mlx-albert info --model pydoc-small
(pydoc-small is the model shipped in the package; models/... paths are relative to the repository)"""


def cmd_train(args) -> None:
    import mlx.core as mx

    from .training.run import run_from_args

    logging.getLogger("mlx_albert").setLevel(logging.INFO)
    results = run_from_args(args)
    if mx.distributed.init().rank() == 0:  # under mlx.launch, one report, not one per rank
        print(safe_json(results))


def cmd_export(args) -> None:
    from .export import export

    out = export(
        args.model,
        args.task,
        args.output,
        args.seq,
        args.batch,
        args.choices,
        args.shapeless,
        args.force,
        args.allow_untrained_head,
        args.dtype,
    )
    print(f"wrote {out} and {out.with_suffix('.tokenizer')}/", file=sys.stderr)


def cmd_serve(args) -> None:
    from .serve import run

    run(args)


def cmd_info(args) -> None:
    from . import _blas
    from .hub import resolve
    from .loading import load

    folder = resolve(args.model)
    model = load(folder, lazy=True, dtype="auto")  # the checkpoint's own dtype
    config = model.config
    info = {
        "path": str(folder),
        "architecture": type(model).__name__,
        "parameters": model.num_parameters(),
        "bytes": int(sum(v.nbytes for _, v in _flat(model))),
        "dtype": str(model.dtype).removeprefix("mlx.core."),
        "quantization": config.quantization,
        "tokenizer": next((n for n in ("tokenizer.json", "spiece.model") if (folder / n).exists()), None),
        "blas": _blas.describe(),
        "config": {k: v for k, v in vars(config).items() if k not in ("extra",)},
    }
    if args.json:
        print(safe_json(json.loads(json.dumps(info, default=str))))
        return
    for key, value in info.items():
        if key != "config":
            print(f"{key:>13}: {escape(str(value))}")
    print("       config:")
    for key, value in info["config"].items():
        print(f"{'':>15}{key} = {escape(repr(value))}")


def _flat(model):
    from mlx.utils import tree_flatten

    return tree_flatten(model.parameters())


def _verbose(p: argparse.ArgumentParser) -> None:
    # SUPPRESS: `-v` after the subcommand sets it, and leaving it out there keeps a `-v` given before
    p.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log loading details"
    )


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

    _verbose(
        convert_parser(
            sub.add_parser("convert", help="transformers checkpoint -> MLX folder (dtype, quantization)")
        )
    )

    def task(name: str, help: str, fn, text_help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("--model", required=True, help="checkpoint folder or Hub repo id")
        p.add_argument("texts", nargs="*", help=text_help)
        p.add_argument(
            "--file",
            help="inputs from a .txt (one per line), .jsonl or .csv (with a header) file; - for stdin",
        )
        p.add_argument(
            "--format",
            choices=FORMATS,
            default="auto",
            help="how to read --file or stdin (default auto: by the file's suffix; stdin whose first line "
            "is a JSON object is read as JSON lines)",
        )
        p.add_argument(
            "--batch-size",
            type=int,
            default=None,
            help="inputs per forward pass (default: the task's, 8; embed 64)",
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
        _verbose(p)
        p.set_defaults(run=fn)
        return p

    p = task("fill-mask", "predict the [MASK] tokens of texts", cmd_fill_mask, "texts with [MASK]")
    p.add_argument("--top-k", type=int, default=5, help="answers per mask (default 5)")
    p.add_argument(
        "--targets",
        action="append",
        help="only score these words, comma-separated (repeatable): --targets cat,dog",
    )
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
    p.add_argument(
        "--doc-stride", type=int, default=None, help="tokens shared by consecutive context windows"
    )
    p.add_argument("--impossible", action="store_true", help="allow the empty answer")
    p = task(
        "multiple-choice",
        "score the choices of a question (jsonl/csv: question, choices)",
        cmd_multiple_choice,
        "choices (with --question)",
    )
    p.add_argument("--question", help="the question whose choices are the arguments")
    task(
        "feature-extraction",
        "last hidden states per token, one JSON [1, L, H] per input",
        cmd_feature_extraction,
        "texts",
    )
    p = task("embed", "sentence embeddings", cmd_embed, "texts")
    p.add_argument("--pooling", default="mean", choices=["mean", "cls", "pooler"], help="default mean")
    p.add_argument("--no-normalize", action="store_true", help="keep raw lengths (default: unit L2 norm)")
    p.add_argument("--output", help="write an (N, H) float32 .npy file instead of printing")
    p.add_argument("--force", action="store_true", help="replace an existing --output file")
    train_help = "fine-tune any head on .jsonl/.csv data, or pre-train (MLM + SOP) on a .txt file"
    p = sub.add_parser("train", help=train_help, description=train_help)
    from .training.run import configure_parser as train_parser

    train_parser(p).set_defaults(run=cmd_train)
    _verbose(p)
    export_help = "write a task's forward as an .mlxfn file for Swift/C++/Python apps (mx.export_function)"
    p = sub.add_parser("export", help=export_help, description=export_help)
    p.add_argument("--model", required=True, help="checkpoint folder or Hub repo id")
    p.add_argument(
        "--task", required=True, choices=sorted([*TASKS, *ALIASES]), help="which head's outputs to export"
    )
    p.add_argument("--output", required=True, help="the .mlxfn file; tokenizer files go to OUTPUT.tokenizer/")
    p.add_argument(
        "--seq",
        type=int,
        default=None,
        help="sequence length the function takes (default: the model's maximum)",
    )
    p.add_argument("--batch", type=int, default=1, help="batch size the function takes (default 1)")
    p.add_argument("--choices", type=int, default=2, help="multiple-choice: choices per question (default 2)")
    p.add_argument(
        "--dtype", choices=["float32", "float16", "bfloat16"], help="weights' dtype (default: as stored)"
    )
    p.add_argument(
        "--shapeless", action="store_true", help="any shape (refused: the forward is shape-specific)"
    )
    p.add_argument("--force", action="store_true", help="replace an existing --output")
    p.add_argument("--allow-untrained-head", action="store_true", help="export a head the checkpoint lacks")
    _verbose(p)
    p.set_defaults(run=cmd_export)
    serve_help = "a local HTTP server: OpenAI-compatible /v1/embeddings and every task (needs [serve])"
    p = sub.add_parser("serve", help=serve_help, description=serve_help)
    from .serve import configure_parser as serve_parser

    serve_parser(p).set_defaults(run=cmd_serve)
    _verbose(p)
    p = sub.add_parser("info", help="config, parameter count, dtype, quantization and BLAS of a checkpoint")
    p.add_argument("--model", required=True, help="checkpoint folder or Hub repo id")
    p.add_argument("--json", action="store_true", help="print JSON")
    _verbose(p)
    p.set_defaults(run=cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .training.trainer import TrainingError

    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    args = configure_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    if args.command == "convert":
        from .convert import main as convert_main

        rest = argv[argv.index("convert") + 1 :]
        return convert_main([a for a in rest if a not in ("-v", "--verbose")])
    loading = logging.getLogger("mlx_albert.pretrained")
    level = loading.level
    if not args.verbose:  # which checkpoint weights a task leaves unused is detail (-v shows it)
        loading.setLevel(logging.ERROR)
    try:
        args.run(args)
    except BrokenPipeError:  # `| head` closed the pipe: stop quietly, as other Unix tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush does not complain
        return 141
    except (UserError, ValueError, TypeError, OSError, ImportError, TrainingError) as e:
        print(f"mlx-albert {args.command}: error: {escape(str(e))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        loading.setLevel(level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
