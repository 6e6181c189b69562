"""`mlx-albert fuse`: LoRA adapters merged into their base model, written as a model folder
(mlx_albert.fuse, as mlx-lm's `fuse`)."""

from __future__ import annotations

import sys


def add_parser(sub) -> None:
    help = "merge LoRA adapters (from `train --lora-rank R`) into their base model and save it"
    p = sub.add_parser("fuse", help=help, description=help)
    p.add_argument("--model", required=True, help="the base model the adapters were trained on")
    p.add_argument("--adapter-path", required=True, help="the adapters' folder (adapter_config.json)")
    p.add_argument("--save-path", required=True, help="the merged model's folder")
    p.add_argument("--force", action="store_true", help="replace a non-empty --save-path")
    p.set_defaults(run=run)


def run(args) -> None:
    from ..fuse import fuse

    out = fuse(args.model, args.adapter_path, args.save_path, force=args.force)
    print(f"mlx-albert fuse: wrote {out}", file=sys.stderr)
