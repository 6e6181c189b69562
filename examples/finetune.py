"""Fine-tune ALBERT on the bundled review sentiment data, end to end, then use the result.

python examples/finetune.py [--model models/tiny-albert] [--epochs 10] [--output-dir reviews-albert]

The same run from the shell:
  mlx-albert train --model models/tiny-albert --task sequence_classification \\
      --train examples/data/reviews_train.jsonl --eval examples/data/reviews_dev.jsonl \\
      --output-dir reviews-albert --epochs 10 --batch-size 16 --learning-rate 1e-3 --warmup-ratio 0.06 \\
      --weight-decay 0.01
"""

import argparse
import time
from pathlib import Path

import mlx_albert
from mlx_albert.training import TrainingArgs
from mlx_albert.training.run import finetune

DATA = Path(__file__).parent / "data"

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--model", default=str(Path(__file__).parent.parent / "models" / "tiny-albert"))
parser.add_argument("--epochs", type=float, default=10)
parser.add_argument("--output-dir", default="reviews-albert")
parser.add_argument("--force", action="store_true", help="replace an earlier run in --output-dir")
options = parser.parse_args()

args = TrainingArgs(
    output_dir=options.output_dir,
    epochs=options.epochs,
    batch_size=16,
    learning_rate=1e-3,
    warmup_ratio=0.06,
    weight_decay=0.01,
    log_steps=10,
)
start = time.perf_counter()
trainer, results = finetune(
    options.model,
    "sequence_classification",
    DATA / "reviews_train.jsonl",
    DATA / "reviews_dev.jsonl",
    args,
    force=options.force,
)
print(f"trained {trainer.state['step']} steps in {time.perf_counter() - start:.0f} s")
print("held-out, last epoch:", {k: round(v, 4) for k, v in results.items()})
print(
    f"best held-out accuracy {trainer.state['best_metric']:.4f} at step {trainer.state['best_step']}",
    f"(in {args.output_dir}/best)",
)

classify = mlx_albert.pipeline("text-classification", options.output_dir)
for text in ["the soup was great and the staff was friendly", "the coffee was not good"]:
    print(f"{text!r} -> {classify(text)[0]}")
