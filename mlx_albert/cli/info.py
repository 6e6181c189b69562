"""`mlx-albert info`: a checkpoint's config, parameter count, dtype, quantization and BLAS."""

from __future__ import annotations

import json

from ..text import escape
from .io import safe_json


def add_parser(sub) -> None:
    p = sub.add_parser("info", help="config, parameter count, dtype, quantization and BLAS of a checkpoint")
    p.add_argument("--model", required=True, help="checkpoint folder, Hub repo id, or pydoc-small")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=run)


def run(args) -> None:
    from .. import _blas
    from ..hub import Checkpoint
    from ..loading import load

    checkpoint = Checkpoint.open(args.model)
    folder = checkpoint.folder
    model = load(checkpoint, lazy=True, dtype="auto")  # the checkpoint's own dtype
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
