"""`mlx-albert export`: a task's forward as an .mlxfn file (mlx_albert.export)."""

from __future__ import annotations

import sys


def add_parser(sub) -> None:
    from ..tasks import TASKS

    help = "write a task's forward as an .mlxfn file for Swift/C++/Python apps (mx.export_function)"
    p = sub.add_parser("export", help=help, description=help)
    p.add_argument("--model", required=True, help="checkpoint folder, Hub repo id, or pydoc-small")
    names = sorted(n for t in TASKS if t.export for n in t.names())
    p.add_argument("--task", required=True, choices=names, help="which head's outputs to export")
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
    p.set_defaults(run=run)


def run(args) -> None:
    from ..export import export

    out = export(
        args.model,
        args.task,
        args.output,
        seq=args.seq,
        batch=args.batch,
        choices=args.choices,
        shapeless=args.shapeless,
        force=args.force,
        allow_untrained_head=args.allow_untrained_head,
        dtype=args.dtype,
    )
    print(f"wrote {out} and {out.with_suffix('.tokenizer')}/", file=sys.stderr)
