"""Sentence-embedding fine-tuning: throughput of `train --task sentence-embedding` against
sentence-transformers' SentenceTransformerTrainer (torch, CPU, float32, in its own process) with the
same model, pairs, batch, length, loss (MultipleNegativesRankingLoss) and learning rate; and the peak
memory of one step of the cached loss (GradCache, mini-batch 8) against the uncached one as the batch
grows. Throughput is the difference of two runs' wall times (N and 2N steps), so loading and
compiling cancel out. Prints Markdown tables and writes JSON.

    python benchmarks/sentence_train.py                         # the bundled model, batch 32, 10 steps
    python benchmarks/sentence_train.py --steps 5 --batches 16,64 --out bench_results"""

from __future__ import annotations

import argparse
import json
import platform
import random
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "mlx_albert" / "bundled" / "albert-pydoc-small"

THEIRS = r"""
import json, sys, time, torch
from datasets import Dataset
from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, losses
from sentence_transformers.training_args import SentenceTransformerTrainingArguments
folder, data, steps, batch, length, lr, out = sys.argv[1:8]
torch.set_num_threads(int(sys.argv[8]))
rows = [json.loads(line) for line in open(data)]
train = Dataset.from_dict({"anchor": [r["anchor"] for r in rows], "positive": [r["positive"] for r in rows]})
times = []
for n in (int(steps), 2 * int(steps)):
    model = SentenceTransformer(folder, device="cpu", model_kwargs={"torch_dtype": torch.float32})
    model.max_seq_length = int(length)
    args = SentenceTransformerTrainingArguments(
        output_dir=out, max_steps=n, per_device_train_batch_size=int(batch), learning_rate=float(lr),
        save_strategy="no", logging_steps=10**6, report_to=[], use_cpu=True, dataloader_drop_last=True,
        disable_tqdm=True,
    )
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=train,
                                         loss=losses.MultipleNegativesRankingLoss(model))
    start = time.perf_counter()
    trainer.train()
    times.append(time.perf_counter() - start)
print(json.dumps(times))
"""


def pairs(path: Path, n: int, seed: int = 0) -> Path:
    """n (anchor, positive) pairs of ~20 words each from the held-out pydoc text."""
    lines = [json.loads(x)["text"] for x in (ROOT / "examples/data/pydoc_topics_train.jsonl").open()]
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.sample(lines, 2)
        rows.append({"anchor": a, "positive": b})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def ours(folder: Path, data: Path, steps: int, batch: int, length: int, lr: float, tmp: Path) -> list[float]:
    from mlx_albert.cli import main

    times = []
    for n in (steps, 2 * steps):
        out = tmp / f"ours-{n}"
        start = time.perf_counter()
        code = main(["train", "--task", "sentence-embedding", "--loss", "MultipleNegativesRankingLoss",
                     "--model", str(folder), "--train", str(data), "--output-dir", str(out),
                     "--max-steps", str(n), "--batch-size", str(batch), "--max-length", str(length),
                     "--learning-rate", str(lr), "--no-progress", "--save-steps", str(10**6)])  # fmt: skip
        times.append(time.perf_counter() - start)
        assert code == 0
    return times


def peak_memory(folder: Path, data: Path, batches: list[int], length: int) -> list[dict]:
    """Peak MLX memory of one loss + gradient step, uncached and cached (mini-batch 8)."""
    import mlx.core as mx

    from mlx_albert import SentenceEncoder
    from mlx_albert.sentence.losses import CachedMultipleNegativesRankingLoss, MultipleNegativesRankingLoss
    from mlx_albert.sentence.training import featurize, pad_column, read_pairs
    from mlx_albert.tasks import get

    encoder = SentenceEncoder.from_pretrained(str(folder), dtype=mx.float32)
    rows = featurize(read_pairs(data, "MultipleNegativesRankingLoss"), encoder, length, get("embed")).features
    pad, limit = encoder.tokenizer.pad_token_id, encoder.backbone.config.max_positions
    out = []
    for batch in batches:
        columns = [pad_column([f["input_ids"][c] for f in rows[:batch]], pad, limit) for c in (0, 1)]
        mx.eval(columns)
        row = {"batch": batch}
        for name, loss in (
            ("uncached", MultipleNegativesRankingLoss(encoder)),
            ("cached", CachedMultipleNegativesRankingLoss(encoder, mini_batch_size=8)),
        ):
            mx.clear_cache()
            mx.reset_peak_memory()
            value, grads = loss.value_and_grad(columns)
            mx.eval(value, grads)
            row[name] = mx.get_peak_memory() / 2**20
        out.append(row)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=str(BUNDLED))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=2e-5)
    parser.add_argument("--batches", default="16,32,64,128", help="batch sizes of the memory table")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the machine's cores)")
    parser.add_argument("--out", default="bench_results")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = pairs(tmp / "pairs.jsonl", max(args.batch_size * 2 * args.steps, 64))
        # a float32 copy both sides read (the bundled model stores float16)
        from mlx_albert import SentenceEncoder

        folder = tmp / "model"
        SentenceEncoder.from_pretrained(args.model, dtype=__import__("mlx.core").core.float32).save(folder)
        mine = ours(folder, data, args.steps, args.batch_size, args.max_length, args.learning_rate, tmp)
        theirs = None
        done = subprocess.run(
            [sys.executable, "-c", THEIRS, str(folder), str(data), str(args.steps), str(args.batch_size),
             str(args.max_length), str(args.learning_rate), str(tmp / "st"), str(args.threads)],
            capture_output=True, text=True,
        )  # fmt: skip
        if done.returncode == 0:
            theirs = json.loads(done.stdout.strip().splitlines()[-1])
        else:
            print(f"sentence-transformers' trainer did not run: {done.stderr.strip().splitlines()[-1:]}")
        memory = peak_memory(folder, data, [int(b) for b in args.batches.split(",")], args.max_length)
    pairs_per_s = lambda t: args.steps * args.batch_size / (t[1] - t[0])  # noqa: E731
    result = {
        "date": str(date.today()), "machine": platform.processor() or platform.machine(),
        "model": args.model, "steps": args.steps, "batch_size": args.batch_size,
        "max_length": args.max_length, "mlx_albert_pairs_per_s": pairs_per_s(mine),
        "sentence_transformers_pairs_per_s": pairs_per_s(theirs) if theirs else None,
        "peak_memory_mib": memory,
    }  # fmt: skip
    print(f"\n| trainer | pairs/s (batch {args.batch_size}, length {args.max_length}) |\n|---|---|")
    print(f"| mlx_albert train --task sentence-embedding | {result['mlx_albert_pairs_per_s']:.1f} |")
    if theirs:
        print(
            f"| SentenceTransformerTrainer (torch CPU) | {result['sentence_transformers_pairs_per_s']:.1f} |"
        )
    print("\n| batch | uncached peak MiB | cached (mini-batch 8) peak MiB |\n|---|---|---|")
    for row in memory:
        print(f"| {row['batch']} | {row['uncached']:.0f} | {row['cached']:.0f} |")
    Path(args.out).mkdir(exist_ok=True)
    (Path(args.out) / "sentence_train.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
