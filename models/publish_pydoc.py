"""Turns a finished `models/pretrain_pydoc.sh` run into models/albert-pydoc-small: float16 weights
in transformers' layout, tokenizer.json + spiece.model, held-out numbers in eval.json and a model
card; the held-out text is copied to tests/data for the test that guards the shipped model.

    python models/publish_pydoc.py CORPUS_DIR OUT_DIR --run RUN_DIR:MAX_LENGTH [--run ...]
        [--wall-time SECONDS] [--eval-length N] [--force]

Each --run is one training phase, in order (a phase starts from the one before); the model
published is the last one's."""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent))

import mlx_albert  # noqa: E402, F401  (before mlx.core: it picks the BLAS)
from mlx_albert import AlbertTokenizer, load  # noqa: E402
from mlx_albert.files import staged_folder  # noqa: E402
from mlx_albert.training import evaluate_pretraining, read_documents, sop_dataset  # noqa: E402

SEED = 0


def most_frequent_token(tokenizer: AlbertTokenizer, documents: list[list[str]]) -> int:
    """The training corpus's most frequent token (special tokens aside): the trivial MLM baseline."""
    counts = collections.Counter()
    for document in documents:
        for encoding in tokenizer.encode(document)[0]:
            counts.update(encoding.ids[1:-1])
    return counts.most_common(1)[0][0]


def held_out_numbers(model, tokenizer, heldout: Path, frequent: int, max_length: int) -> dict:
    """eval.json's numbers: evaluate_pretraining on the held-out pairs of up to max_length tokens
    (seed SEED), with the accuracy of always predicting the most frequent training token on the
    same masks."""
    data = sop_dataset(read_documents(heldout), tokenizer, max_length, SEED)
    metrics = evaluate_pretraining(model, tokenizer, data, seed=SEED, constant_token=frequent)
    return {**metrics, "pairs": len(data), "max_length": max_length}


CARD = """---
license: psf-2.0
language: en
library_name: mlx-albert
tags: [albert, mlx, fill-mask, python-docs]
---

# albert-pydoc-small

A small ALBERT pre-trained from random weights by `mlx-albert train --task pretraining` (masked
language modelling with n-gram masking + sentence-order prediction) on the English prose of
Python's documentation and the standard library's docstrings. It is the default model of the
quick start because it is small enough to ship in the repository and was made by this library end
to end (corpus, vocabulary, pre-training, conversion).

It is an early model: {wall} of a 2-core CPU took it to {ratio:.1f}x the masked-token accuracy of
always guessing the most frequent token and taught it sentence order, but its fill-mask answers
are still mostly frequent words. It needs more pre-training: `mlx-albert train --task pretraining
--model models/albert-pydoc-small ...` continues from it (a GPU does in minutes what took the CPU over
an hour). It knows nothing outside Python's documentation.

| | |
| --- | --- |
| shape | embedding {embedding_size}, hidden {hidden_size}, {heads} heads, FFN {intermediate_size}, {blocks} blocks of one shared layer, max {max_positions} tokens |
| parameters | {parameters:,} (float16, {size_mb:.1f} MB) |
| vocabulary | {vocab_size} lower-cased SentencePiece unigram pieces (`spiece.model`, `tokenizer.json`) |
| corpus | {documents:,} documents, {words:,} words (train); {heldout_documents} documents held out |
| training | {training} |
| wall time | {wall} on a 2-core x86_64 CPU (MLX CPU backend, OpenBLAS) |

## Held-out numbers

On the {pairs} held-out segment pairs of up to {eval_length} tokens (15% of tokens masked, seed
{eval_seed}; {masked} masked tokens):

| metric | value |
| --- | --- |
| masked-token top-1 accuracy | {mlm_accuracy:.3f} |
| masked-token top-5 accuracy | {mlm_top5_accuracy:.3f} |
| baseline: always the most frequent token ({frequent!r}) | {baseline_accuracy:.3f} |
| perplexity of masked tokens | {perplexity:.1f} |
| sentence-order accuracy (chance 0.5) | {sop_accuracy:.3f} |

`tests/test_pydoc_model.py` recomputes these on the same sample.

## Reproduce

```
apt-get install python3-doc          # Debian/Ubuntu; on a Mac: --docs path/to/cpython/Doc
pip install sentencepiece
bash models/pretrain_pydoc.sh corpus pydoc-run
```

`models/pydoc_corpus.py` builds the corpus (sha256 of train.txt `{train_sha}`, built from Python
{python}'s documentation and standard library) and the vocabulary; `models/pretrain_pydoc.sh`
holds every training flag; `models/publish_pydoc.py` writes this folder.

## Licence

The training text is Python's documentation and source, © Python Software Foundation, under the
PSF License Agreement (Python 2.0 licence); this model is derived from it and distributed under
the same terms.
"""  # noqa: E501


def phase(run: str) -> dict:
    folder, _, length = run.rpartition(":")
    args = json.loads((Path(folder) / "training_args.json").read_text())
    return {"folder": Path(folder), "max_length": int(length), **args}


def describe(phases: list[dict]) -> str:
    return "; ".join(
        f"{'then ' if i else ''}{p['max_steps']} steps of batch {p['batch_size']} x {p['max_length']} "
        f"tokens, AdamW lr {p['learning_rate']} ({p['schedule']}, {p['warmup_steps']} warm-up), "
        f"n-grams <= {p['max_ngram']}, seed {p['seed']}"
        for i, p in enumerate(phases)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("out", type=Path, nargs="?", default=HERE / "albert-pydoc-small")
    parser.add_argument("--run", action="append", required=True, help="RUN_DIR:MAX_LENGTH, one per phase")
    parser.add_argument("--wall-time", type=float, help="seconds the training took, all phases")
    parser.add_argument(
        "--eval-length", type=int, help="tokens per held-out pair (default: the last phase's)"
    )
    parser.add_argument("--force", action="store_true", help="replace an existing OUT_DIR")
    args = parser.parse_args()
    if args.out.exists() and not args.force:
        parser.error(f"{args.out} exists: pass --force to replace it")
    import mlx.core as mx

    phases = [phase(r) for r in args.run]
    run, eval_length = phases[-1]["folder"], args.eval_length or phases[-1]["max_length"]
    tokenizer = AlbertTokenizer.from_pretrained(run)
    frequent = most_frequent_token(tokenizer, read_documents(args.corpus / "train.txt"))
    manifest = json.loads((args.corpus / "MANIFEST.json").read_text())
    logs = [
        [json.loads(line) for line in (p["folder"] / "log.jsonl").read_text().splitlines()] for p in phases
    ]
    with staged_folder(args.out) as tmp:
        model = load(run, "for_pre_training", dtype=mx.float16)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        shutil.copy2(args.corpus / "init" / "spiece.model", tmp / "spiece.model")
        # The numbers of the shipped (float16) weights, computed in float32 as the CPU runs them.
        shipped = load(tmp, "for_pre_training", dtype=mx.float32)
        numbers = held_out_numbers(shipped, tokenizer, args.corpus / "heldout.txt", frequent, eval_length)
        evaluation = {
            **numbers,
            "seed": SEED,
            "most_frequent_token": frequent,
            "steps": sum(p["max_steps"] for p in phases),
            "wall_time_s": args.wall_time,
            "phases": [{k: v for k, v in p.items() if k != "folder"} for p in phases],
            "train_logs": [[e for e in log if "eval_loss" in e or e is log[-1]] for log in logs],
            "corpus": manifest,
        }
        config = model.config
        size = sum(p.stat().st_size for p in tmp.iterdir()) / 1e6
        wall = f"{args.wall_time / 60:.0f} minutes" if args.wall_time else "not recorded"
        (tmp / "eval.json").write_text(json.dumps(evaluation, indent=2) + "\n")
        (tmp / "README.md").write_text(
            CARD.format(
                **config.to_hf(),
                heads=config.num_attention_heads,
                blocks=config.num_blocks,
                max_positions=config.max_positions,
                parameters=model.num_parameters(),
                size_mb=size,
                documents=manifest["documents"][0],
                heldout_documents=manifest["documents"][1],
                words=manifest["words"][0],
                training=describe(phases),
                wall=wall,
                eval_seed=SEED,
                eval_length=eval_length,
                masked=numbers["masked_tokens"],
                frequent=tokenizer.convert_ids_to_tokens([frequent])[0],
                train_sha=manifest["train.txt"][:16],
                python=manifest["python"],
                ratio=numbers["mlm_accuracy"] / numbers["baseline_accuracy"],
                **{k: v for k, v in numbers.items() if k not in ("max_length", "masked_tokens")},
            )
        )
    data = HERE.parent / "tests" / "data"
    data.mkdir(exist_ok=True)
    shutil.copy2(args.corpus / "heldout.txt", data / "pydoc_heldout.txt")
    print(json.dumps({k: v for k, v in evaluation.items() if k not in ("corpus", "train_logs")}, indent=2))


if __name__ == "__main__":
    main()
