"""Quantized ALBERT: file size and pooled-output cosine similarity against float32, per bit width.

    python benchmarks/quantization.py [--model base] [--out bench_results]

Random weights of the real config (no download); prints a Markdown table, writes JSON."""

import argparse
import json
import tempfile
from pathlib import Path

import mlx_albert  # first: preloads an optimised cblas before mlx.core initialises

# isort: split
import mlx.core as mx
import numpy as np
from bench import config_for, inputs

from mlx_albert import AlbertModel
from mlx_albert.convert import convert


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="base")
    p.add_argument("--bits", default="8,4,4/8", help="bit widths; a/b: a bits, b for the shared layers")
    p.add_argument("--out", default="bench_results")
    args = p.parse_args()
    ids, mask = inputs(4, 64)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        mx.random.seed(0)
        AlbertModel(config_for(args.model)).save_pretrained(Path(tmp) / "f32")
        ref = np.array(mlx_albert.load(Path(tmp) / "f32")(ids, attention_mask=mask).pooler_output)
        f32_size = (Path(tmp) / "f32" / "model.safetensors").stat().st_size
        for spec in args.bits.split(","):
            bits, _, shared = spec.partition("/")
            out = convert(
                str(Path(tmp) / "f32"),
                str(Path(tmp) / f"q{bits}-{shared}"),
                quantize=True,
                q_bits=int(bits),
                q_shared_bits=int(shared) if shared else None,
            )
            pooled = np.array(mlx_albert.load(out)(ids, attention_mask=mask).pooler_output)
            cos = (pooled * ref).sum(-1) / np.linalg.norm(pooled, axis=-1) / np.linalg.norm(ref, axis=-1)
            size = (out / "model.safetensors").stat().st_size
            rows.append(
                dict(
                    model=args.model,
                    bits=spec,
                    size_mb=size / 2**20,
                    f32_mb=f32_size / 2**20,
                    ratio=size / f32_size,
                    min_cosine=float(cos.min()),
                )
            )
    lines = ["| model | bits | file MB | float32 MB | ratio | min pooled cosine |", "|" + " --- |" * 6]
    lines += [
        f"| {r['model']} | {r['bits']} | {r['size_mb']:.1f} | {r['f32_mb']:.1f} | {r['ratio']:.1%} | "
        f"{r['min_cosine']:.5f} |"
        for r in rows
    ]
    print("\n".join(lines))
    Path(args.out).mkdir(exist_ok=True)
    (Path(args.out) / "quantization.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
