"""`mlx-albert search`: the top-k inputs of a folder of vectors (written by `embed --output DIR`) for
each query, embedded with the index's model and options: rank, score, line number and the line's
text (read back from the input file when it is unchanged)."""

from __future__ import annotations

import sys
from pathlib import Path

from .io import UserError, safe_json


def add_parser(sub) -> None:
    p = sub.add_parser("search", help="search a folder of vectors written by `embed --output DIR`")
    p.add_argument("queries", nargs="+", help="query texts")
    p.add_argument("--index", required=True, help="the folder written by `mlx-albert embed --output`")
    p.add_argument(
        "--model",
        help="the model that built the index (folder, repo id, pydoc-small; default: its manifest's)",
    )
    p.add_argument("--prompt-name", help="a prompt of the model's folder put before each query (e.g. query)")
    p.add_argument("--top-k", type=int, default=10, help="results per query (default 10)")
    p.add_argument(
        "--rescore-multiplier",
        type=int,
        default=4,
        help="int8/binary indexes: candidates per result rescored with the float query (default 4)",
    )
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], help="compute dtype")
    p.add_argument("--json", action="store_true", help="one JSON list of results per query")
    p.set_defaults(run=run)


def run(args) -> None:
    from ..sentence.encoder import SentenceEncoder
    from ..sentence.search import search
    from ..sentence.vectors import Manifest

    index = Path(args.index)
    if not index.is_dir():
        raise UserError(f"--index {args.index}: no such folder")
    manifest = Manifest.read(index)
    options, model = manifest.options, args.model or manifest.model
    encoder = SentenceEncoder.from_pretrained(
        model, options.get("pooling"), options.get("normalize"), dtype=args.dtype
    )
    if options.get("max_length"):
        encoder = encoder.with_length(options["max_length"])
    found = search(
        index, args.queries, args.top_k, encoder, args.rescore_multiplier, str(model), args.prompt_name
    )
    texts = _texts(manifest.input, {hit["line"] for hits in found for hit in hits})
    for query, hits in zip(args.queries, found, strict=True):
        rows = [{"rank": r, **hit, "text": texts.get(hit["line"])} for r, hit in enumerate(hits, 1)]
        if args.json:
            print(safe_json(rows), flush=True)
            continue
        if len(args.queries) > 1:
            print(f"# {_clip(query)}")
        for row in rows:
            text = "" if row["text"] is None else _clip(row["text"])
            print(f"{row['rank']}\t{row['score']:.4f}\tline {row['line']}\t{text}", flush=True)


def _texts(identity: dict, lines: set[int]) -> dict[int, str]:
    """The texts of `lines` read back from the index's input file (one streaming pass), when that
    file is still the one embedded; else none, with a warning."""
    from .. import records
    from ..sentence.vectors import input_identity

    path = identity.get("path")
    if path in (None, "<stdin>", "<arguments>"):
        return {}
    try:
        same = input_identity(path) == identity
    except OSError:
        same = False
    if not same:
        print(
            f"mlx-albert search: warning: {_clip(str(path))} is missing or changed since it was embedded: "
            "showing line numbers only",
            file=sys.stderr,
        )
        return {}
    texts = {}
    try:  # the manifest's path is data: read as any user's input file (regular files only, bounded)
        for where, value in records.read(path, keep_blank=True):
            number = records.line_number(where)
            if number in lines:
                texts[number] = value.get("text", "") if isinstance(value, dict) else str(value)
                if len(texts) == len(lines):
                    break
    except (OSError, ValueError) as e:
        print(f"mlx-albert search: warning: {_clip(str(e))}: showing line numbers only", file=sys.stderr)
        return {}
    return texts


def _clip(text: str, width: int = 100) -> str:
    from ..text import escape

    text = escape(str(text))
    return text if len(text) <= width else text[: width - 3] + "..."
