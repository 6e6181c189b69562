"""`mlx-albert train`: fine-tune any head, or pre-train (flags equal TrainingArgs' fields)."""

from __future__ import annotations

import logging

from .io import safe_json


def add_parser(sub) -> None:
    from ..training.run import configure_parser

    help = "fine-tune any head on .jsonl/.csv data, or pre-train (MLM + SOP) on a .txt file"
    configure_parser(sub.add_parser("train", help=help, description=help)).set_defaults(run=run)


def run(args) -> None:
    import mlx.core as mx

    from ..training.run import run_from_args

    logging.getLogger("mlx_albert").setLevel(logging.INFO)
    results = run_from_args(args)
    if mx.distributed.init().rank() == 0:  # under mlx.launch, one report, not one per rank
        print(safe_json(results))
