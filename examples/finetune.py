"""Fine-tune the bundled albert-pydoc-small on a small task, and show what its pre-training buys:
the same run from random weights, same data, same steps, side by side.

python examples/finetune.py [--model pydoc-small] [--epochs 10] [--output-dir pydoc-topics]

The task: which part of Python's documentation a sentence comes from (tutorial, library reference,
language reference, C API), 100 training sentences per part, 75 held out (examples/data, built by
models/pydoc_corpus.py --task-out). The same run from the shell:
  mlx-albert train --model pydoc-small --task sequence_classification \\
      --train examples/data/pydoc_topics_train.jsonl --eval examples/data/pydoc_topics_dev.jsonl \\
      --output-dir pydoc-topics --epochs 10 --batch-size 16 --learning-rate 3e-4 --warmup-ratio 0.1
"""

import argparse
import tempfile
import time
from pathlib import Path

import mlx_albert
from mlx_albert.hub import resolve
from mlx_albert.training import TrainingArgs
from mlx_albert.training.run import finetune

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "examples" / "data"

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--model", default="pydoc-small")  # the model shipped in the package
parser.add_argument("--epochs", type=float, default=10)
parser.add_argument("--output-dir", default="pydoc-topics")
parser.add_argument("--no-baseline", action="store_true", help="skip the run from random weights")
parser.add_argument("--force", action="store_true", help="replace an earlier run in --output-dir")
options = parser.parse_args()


def run(model: str, output_dir: str, force: bool) -> tuple[float, dict]:
    args = TrainingArgs(
        output_dir=output_dir,
        epochs=options.epochs,
        batch_size=16,
        learning_rate=3e-4,
        warmup_ratio=0.1,
        log_steps=25,
        seed=0,
    )
    start = time.perf_counter()
    trainer, _ = finetune(
        model,
        "sequence_classification",
        DATA / "pydoc_topics_train.jsonl",
        DATA / "pydoc_topics_dev.jsonl",
        args,
        force=force,
    )
    return time.perf_counter() - start, trainer.state


seconds, state = run(options.model, options.output_dir, options.force)
results = {"pre-trained": (seconds, state)}
if not options.no_baseline:
    with tempfile.TemporaryDirectory() as tmp:
        # The same architecture and tokenizer, random weights (seeded): what pre-training started from.
        import mlx.core as mx

        mx.random.seed(0)
        random_init = Path(tmp) / "random-init"
        config = mlx_albert.AlbertConfig.from_json(resolve(options.model) / "config.json")
        mlx_albert.AlbertForMaskedLM(config).save_pretrained(random_init)
        mlx_albert.AlbertTokenizer.from_pretrained(options.model).save_pretrained(random_init)
        results["random weights"] = run(str(random_init), str(Path(tmp) / "run"), False)

print(f"\nheld-out accuracy after {state['step']} steps ({len(results)} runs, same data and steps):")
for name, (seconds, run_state) in results.items():
    best, step = run_state["best_metric"], run_state["best_step"]
    print(f"  from {name:<14} {best:.3f} (best, at step {step}; {seconds:.0f} s)")
print(f"the fine-tuned model is in {options.output_dir} (best checkpoint in {options.output_dir}/best)")

classify = mlx_albert.pipeline("text-classification", options.output_dir)
for text in [
    "Return the number of items in the container.",
    "Let's try some simple Python commands.",
    "Return a new reference to the object, or NULL with an exception set on failure.",
]:
    print(f"{text!r} -> {classify(text)[0]}")
