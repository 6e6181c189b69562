"""finetune(): from a checkpoint and data files to a trained model folder, and the options of
`mlx-albert train` (flags equal TrainingArgs' fields)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

from .data import TASK_ARCHITECTURES as ARCHITECTURE
from .data import build, label_set, read_records
from .pretraining import read_documents, sop_dataset
from .trainer import Trainer, TrainingArgs

logger = logging.getLogger(__name__)


def finetune(
    model: str | Path,
    task: str,
    train_file: str | Path,
    eval_file: str | Path | None = None,
    args: TrainingArgs | None = None,
    max_length: int = 128,
    doc_stride: int = 64,
    problem_type: str | None = None,
    from_scratch: bool = False,
    force: bool = False,
) -> tuple[Trainer, dict]:
    """Trains `model` (a checkpoint folder or repo id) on `task` and saves it to args.output_dir.

    Args:
        task: "sequence_classification", "token_classification", "question_answering",
            "multiple_choice" or "pretraining" (a plain text file, MLM + sentence order).
        train_file, eval_file: .jsonl or .csv (fields: see mlx_albert.training.data), or .txt for
            pre-training.
        problem_type: sequence classification only; default from the labels (numbers: regression,
            lists: multi-label, else single-label).
        from_scratch: pre-training only: random weights of the checkpoint's config.
        force: write into an output_dir that already holds files (a model, other runs); without it,
            only an empty or missing folder, or --resume of a run there, is accepted.

    Returns:
        (the Trainer, the final evaluation metrics).
    """
    from .. import ARCHITECTURES, AlbertConfig, AlbertTokenizer, load
    from ..files import check_disjoint
    from ..hub import resolve
    from ..loading import check_tokenizer
    from .distributed import DataParallel

    if task not in ARCHITECTURE:
        raise ValueError(f"task must be one of {list(ARCHITECTURE)}, got {task!r}")
    args = args or TrainingArgs()
    import mlx.core as mx

    mx.random.seed(args.seed)  # new heads are initialised from it: runs repeat exactly
    folder = resolve(model)
    out = Path(args.output_dir)
    check_disjoint({"--output-dir": out}, {"--model": folder, "--train": Path(train_file)})
    if out.is_dir() and any(out.iterdir()) and not (force or args.resume):
        raise FileExistsError(
            f"--output-dir {out} already holds files (a model or an earlier run): pass --resume to continue "
            "the run there, --force to write into it anyway, or choose an empty folder"
        )
    DataParallel().barrier()  # every rank has checked the output folder before rank 0 writes to it
    if max_length < 5:
        raise ValueError(
            f"--max-length {max_length} is too short: an example needs [CLS], [SEP] and text (>= 5)"
        )
    tokenizer = AlbertTokenizer.from_pretrained(folder)
    max_length = min(max_length, AlbertConfig.from_json(folder / "config.json").max_positions)
    if task == "pretraining":
        if from_scratch:
            config = AlbertConfig.from_json(folder / "config.json")
            net = ARCHITECTURES["for_pre_training"](config)
        else:
            net = load(folder, "for_pre_training", dtype=mx.float32)
        train = sop_dataset(read_documents(train_file), tokenizer, max_length, args.seed)
        evaluation = (
            sop_dataset(read_documents(eval_file), tokenizer, max_length, args.seed) if eval_file else None
        )
    else:
        records = read_records(train_file)
        changes, label_to_id = {}, {}
        if task in ("sequence_classification", "token_classification"):
            kind, labels = label_set(task, records)
            existing = AlbertConfig.from_json(folder / "config.json")
            if kind == "multi_label_vectors":  # 0/1 columns: the checkpoint's names when they fit
                names = (
                    existing.id_to_label
                    if existing.num_labels == len(labels) and existing.id_to_label
                    else {}
                )
                labels = [names.get(i, f"LABEL_{i}") for i in range(len(labels))]
                kind = "multi_label_classification"
                existing = (
                    existing.replace(label_to_id={n: i for i, n in enumerate(labels)})
                    if not names
                    else existing
                )
            kind = problem_type or kind
            if kind == "regression":
                changes = {"num_labels": 1, "problem_type": "regression", "id_to_label": {0: "score"}}
            elif set(existing.label_to_id) == set(labels) and existing.num_labels == len(labels):
                label_to_id = dict(existing.label_to_id)  # a model fine-tuned on these labels before
                changes = {"problem_type": kind} if task == "sequence_classification" else {}
            else:
                label_to_id = {name: i for i, name in enumerate(labels)}
                changes = {"num_labels": len(labels), "id_to_label": dict(enumerate(labels))}
                if task == "sequence_classification":
                    changes["problem_type"] = kind
            problem_type = kind
        # float32 weights whatever the checkpoint stores (shipped models are float16): AdamW needs
        # them; --mixed-precision picks a half-precision compute dtype on top.
        net = load(folder, ARCHITECTURE[task], dtype=mx.float32, **changes)
        train = build(task, records, tokenizer, max_length, label_to_id, problem_type, doc_stride)
        evaluation = None
        if eval_file:
            evaluation = build(
                task, read_records(eval_file), tokenizer, max_length, label_to_id, problem_type, doc_stride
            )
    check_tokenizer(net, tokenizer, str(folder))
    trainer = Trainer(net, tokenizer, args, train, evaluation, base_model=str(model))
    return trainer, trainer.train()


HELP = {
    "output_dir": "where checkpoints, log.jsonl, loss.png, best/ and the final model go",
    "epochs": "passes over the training data (fractions allowed)",
    "max_steps": "optimiser steps in all (overrides --epochs)",
    "batch_size": "examples per micro-batch",
    "eval_batch_size": "examples per evaluation batch",
    "grad_accumulation": "micro-batches per optimiser step (effective batch = batch size x this)",
    "learning_rate": "peak AdamW learning rate",
    "weight_decay": "AdamW decoupled weight decay (never on biases and LayerNorm weights)",
    "adam_beta1": "AdamW beta1",
    "adam_beta2": "AdamW beta2",
    "adam_epsilon": "AdamW epsilon",
    "schedule": "learning rate after warm-up: linear, cosine or constant",
    "warmup_ratio": "share of the steps spent warming up linearly from 0",
    "warmup_steps": "warm-up steps (overrides --warmup-ratio)",
    "max_grad_norm": "clip gradients to this global norm (0: no clipping)",
    "mixed_precision": "bfloat16 or float16 compute over float32 master weights (GPU backends)",
    "seed": "seed of head initialisation, data order, dropout and masking",
    "log_steps": "steps between log lines",
    "eval_steps": "steps between evaluations (default: every epoch)",
    "save_steps": "steps between checkpoints (default: every epoch)",
    "save_total_limit": "checkpoints kept (the newest ones)",
    "metric": "eval metric that picks best/ (default: the task's: accuracy, f1, pearson, ...)",
    "greater_is_better": "whether a larger --metric is better",
    "lora_rank": "train LoRA adapters of this rank on the shared layer instead of all weights",
    "lora_alpha": "LoRA scale numerator (scale = alpha / rank)",
    "lora_dropout": "dropout on the LoRA input",
    "adapter_only": "LoRA: save only adapters.safetensors + adapter_config.json (load onto the base model)",
    "mlm_probability": "pretraining: share of tokens masked",
    "max_ngram": "pretraining: mask n-grams up to this length (ALBERT used 3)",
    "compile": "compile the training step with mx.compile",
    "progress": "show a progress line on stderr",
    "resume": "continue from the newest complete checkpoint in --output-dir",
}
CHOICES = {"schedule": ["linear", "cosine", "constant"], "mixed_precision": ["bfloat16", "float16"]}


def configure_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--model", required=True, help="checkpoint folder or Hub repo id to start from")
    parser.add_argument("--task", required=True, choices=list(ARCHITECTURE), help="what to train")
    parser.add_argument("--train", required=True, help="training data: .jsonl/.csv (.txt for pretraining)")
    parser.add_argument("--eval", default=None, help="evaluation data, same format")
    parser.add_argument("--max-length", type=int, default=128, help="tokens per example (default 128)")
    parser.add_argument("--doc-stride", type=int, default=64, help="QA: tokens shared by context windows")
    parser.add_argument(
        "--problem-type", choices=["single_label_classification", "multi_label_classification", "regression"]
    )
    parser.add_argument("--from-scratch", action="store_true", help="pretraining: start from random weights")
    parser.add_argument(
        "--force", action="store_true", help="write into a non-empty --output-dir (not needed with --resume)"
    )
    for f in dataclasses.fields(TrainingArgs):
        flag = "--" + f.name.replace("_", "-")
        if isinstance(f.default, bool):
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=f.default, help=HELP[f.name]
            )
        else:  # optional fields (default None) are ints except the two named ones
            kind = (
                type(f.default)
                if f.default is not None
                else (str if f.name in ("mixed_precision", "metric") else int)
            )
            parser.add_argument(
                flag,
                type=kind,
                default=f.default,
                choices=CHOICES.get(f.name),
                help=f"{HELP[f.name]} (default {f.default})",
            )
    return parser


def run_from_args(args: argparse.Namespace) -> dict:
    names = {f.name for f in dataclasses.fields(TrainingArgs)}
    training = TrainingArgs(**{k: v for k, v in vars(args).items() if k in names})
    trainer, results = finetune(
        args.model,
        args.task,
        args.train,
        args.eval,
        training,
        args.max_length,
        args.doc_stride,
        args.problem_type,
        args.from_scratch,
        args.force,
    )
    if trainer.dp.rank == 0:  # the only rank that writes
        logger.info("saved to %s", training.output_dir)
    return {
        "output_dir": training.output_dir,
        "steps": trainer.state["step"],
        "best": trainer.state["best_metric"],
        **results,
    }
