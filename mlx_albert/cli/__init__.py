"""`mlx-albert` (also `python -m mlx_albert`): convert checkpoints and run every ALBERT task from the
shell. Each command owns its parser (one module each; the task commands come from the task
registry); this module builds them into one program and turns user errors into one line."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from .. import __version__
from ..records import DataError
from ..text import escape
from . import convert, export, fuse, info, search, serve, tasks, train
from .io import UserError

EPILOG = """examples:
  mlx-albert fill-mask --model pydoc-small "Return a new [MASK] from the iterable."
  mlx-albert classify --model my-classifier --file reviews.csv --json > labels.jsonl
  mlx-albert ner --model my-ner --aggregation simple < article.txt
  mlx-albert qa --model my-qa --context "ALBERT shares one layer's weights." "What is shared?"
  mlx-albert multiple-choice --model my-mc --question "Fire plus water" "goes out" "grows"
  mlx-albert embed --model pydoc-small --file sentences.txt --output vectors.npy
  mlx-albert embed --model pydoc-small --file docs.jsonl --output vectors/   # shards, resumable
  mlx-albert search --index vectors/ --model pydoc-small "how do I sort a list?"
  mlx-albert train --model albert/albert-base-v2 --task sequence_classification \\
      --train train.jsonl --eval dev.jsonl --output-dir my-classifier --epochs 3
  mlx-albert classify --model albert/albert-base-v2 --adapter-path my-lora "a text"
  mlx-albert fuse --model albert/albert-base-v2 --adapter-path my-lora --save-path my-model
  mlx-albert serve --model pydoc-small --port 8080
  mlx-albert export --model pydoc-small --task fill-mask --output pydoc.mlxfn
  mlx-albert info --model pydoc-small
(pydoc-small is the model shipped in the package; models/... paths are relative to the repository)"""
# the commands, in --help's order: each module's add_parser(sub) adds its own (tasks: one per task)
COMMANDS = (convert, tasks, search, train, fuse, export, serve, info)


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
    for command in COMMANDS:
        command.add_parser(sub)
    for p in sub.choices.values():
        # SUPPRESS: `-v` after the command sets it, and leaving it out there keeps a `-v` given before
        p.add_argument(
            "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log loading details"
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    from ..training.trainer import TrainingError

    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    args = configure_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    loading = logging.getLogger("mlx_albert.pretrained")
    level = loading.level
    if not args.verbose:  # which checkpoint weights a task leaves unused is detail (-v shows it)
        loading.setLevel(logging.ERROR)
    try:
        return args.run(args) or 0
    except BrokenPipeError:  # `| head` closed the pipe: stop quietly, as other Unix tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush does not complain
        return 141
    except (UserError, DataError, ValueError, TypeError, OSError, ImportError, TrainingError) as e:
        print(f"mlx-albert {args.command}: error: {escape(str(e))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        loading.setLevel(level)


if __name__ == "__main__":
    sys.exit(main())
