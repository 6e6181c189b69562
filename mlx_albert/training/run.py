"""finetune(): from a checkpoint and data files to a trained model folder, and the options of
`mlx-albert train` (flags equal TrainingArgs' fields)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

from ..sentence.training import LOSS_NAMES
from ..tasks import get, trainable
from .args import CHOICES, HELP
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
    loss: str | None = None,
    matryoshka_dims: list[int] | None = None,
    mini_batch_size: int = 32,
) -> tuple[Trainer, dict]:
    """Trains `model` (a checkpoint folder, repo id or shipped model's short name) on `task` and
    saves it to args.output_dir.

    Args:
        task: any name of a trainable task: "sequence_classification", "token_classification",
            "question_answering", "multiple_choice", "pretraining" (a plain text file, MLM +
            sentence order) or "sentence-embedding" (pairs, with `loss`), or their pipeline names.
        train_file, eval_file: .jsonl or .csv (fields: see mlx_albert.training.data), or .txt for
            pre-training.
        problem_type: sequence classification only; default from the labels (numbers: regression,
            lists: multi-label, else single-label).
        from_scratch: random weights of the checkpoint's config (its tokenizer kept).
        force: write into an output_dir that already holds files (a model, other runs); without it,
            only an empty or missing folder, or --resume of a run there, is accepted.
        loss, matryoshka_dims, mini_batch_size: "sentence-embedding" only: sentence-transformers'
            loss class name, MatryoshkaLoss dimensions, and the cached loss's mini-batch.

    Returns:
        (the Trainer, the final evaluation metrics).
    """
    import mlx.core as mx

    from ..heads import ARCHITECTURES
    from ..hub import Checkpoint
    from ..loading import check_tokenizer, load
    from ..tokenizer import AlbertTokenizer
    from .distributed import DataParallel

    spec = get(task)
    recipe = spec.recipe
    if recipe is None:
        raise ValueError(f"task must be one of {trainable()}, got {task!r}")
    args = args or TrainingArgs()
    mx.random.seed(args.seed)  # new heads are initialised from it: runs repeat exactly
    checkpoint = Checkpoint.open(model)  # resolved and read once for the whole run
    check_output(Path(args.output_dir), checkpoint.root, Path(train_file), force or args.resume)
    DataParallel().barrier()  # every rank has checked the output folder before rank 0 writes to it
    if max_length < 5:
        raise ValueError(
            f"--max-length {max_length} is too short: an example needs [CLS], [SEP] and text (>= 5)"
        )
    max_length = min(max_length, checkpoint.config.max_positions)
    if hasattr(recipe, "trainer"):  # a recipe that builds its own run (sentence embeddings)
        trainer = recipe.trainer(
            checkpoint, str(model), train_file, eval_file, args, max_length, loss, matryoshka_dims,
            mini_batch_size, task=spec,
        )  # fmt: skip
        return trainer, trainer.train()
    if loss is not None or matryoshka_dims:
        raise ValueError("--loss and --matryoshka-dims are for --task sentence-embedding")
    tokenizer = AlbertTokenizer.from_pretrained(checkpoint)
    examples = recipe.read(train_file)
    changes, label_to_id, problem_type = recipe.label_plan(examples, checkpoint.config, problem_type)
    if from_scratch:
        net = ARCHITECTURES[spec.architecture](checkpoint.config.replace(**changes))
    else:  # float32 weights whatever the checkpoint stores (shipped models are float16): AdamW needs
        # them; --mixed-precision picks a half-precision compute dtype on top.
        net = load(checkpoint, spec.architecture, dtype=mx.float32, **changes)
    check_tokenizer(net, tokenizer, checkpoint.source)

    def features(data):
        return recipe.featurize(data, tokenizer, max_length, label_to_id, problem_type, doc_stride, args.seed)

    train = features(examples)
    evaluation = features(recipe.read(eval_file)) if eval_file else None
    trainer = Trainer(net, tokenizer, args, train, evaluation, base_model=str(model))
    return trainer, trainer.train()


def configure_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--model", required=True, help="checkpoint folder or Hub repo id to start from")
    parser.add_argument("--task", required=True, choices=trainable(), help="what to train")
    parser.add_argument("--train", required=True, help="training data: .jsonl/.csv (.txt for pretraining)")
    parser.add_argument("--eval", default=None, help="evaluation data, same format")
    parser.add_argument("--max-length", type=int, default=128, help="tokens per example (default 128)")
    parser.add_argument("--doc-stride", type=int, default=64, help="QA: tokens shared by context windows")
    parser.add_argument(
        "--problem-type", choices=["single_label_classification", "multi_label_classification", "regression"]
    )
    parser.add_argument(
        "--from-scratch",
        action="store_true",
        help="start from random weights of the model's config (pretraining)",
    )
    parser.add_argument(
        "--force", action="store_true", help="write into a non-empty --output-dir (not needed with --resume)"
    )
    parser.add_argument(
        "--loss",
        choices=LOSS_NAMES,
        help="sentence-embedding: sentence-transformers' loss (pairs: MultipleNegativesRankingLoss, its "
        "Cached form; scored pairs: CoSENTLoss, CosineSimilarityLoss)",
    )
    parser.add_argument(
        "--matryoshka-dims",
        type=_dims,
        help="sentence-embedding: train every prefix of these widths too (MatryoshkaLoss), e.g. 768,256,64",
    )
    parser.add_argument(
        "--mini-batch-size",
        type=int,
        default=32,
        help="CachedMultipleNegativesRankingLoss: rows per forward pass (memory; default 32)",
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
        args.loss,
        args.matryoshka_dims,
        args.mini_batch_size,
    )
    if trainer.dp.rank == 0:  # the only rank that writes
        logger.info("saved to %s", training.output_dir)
    return {
        "output_dir": training.output_dir,
        "steps": trainer.state["step"],
        "best": trainer.state["best_metric"],
        **results,
    }


def _dims(text: str) -> list[int]:
    try:
        dims = [int(d) for d in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected widths like 768,256,64, got {text!r}") from None
    if not dims or min(dims) < 1:
        raise argparse.ArgumentTypeError(f"widths must be positive integers, got {text!r}")
    return dims


def check_output(out: Path, model: Path, train: Path, allowed: bool) -> None:
    """--output-dir must not overlap the model or the data, and holds files only with --resume or
    --force."""
    from ..files import LOCK, check_disjoint, in_use, lock_holder

    check_disjoint({"--output-dir": out}, {"--model": model, "--train": train})
    if (holder := lock_holder(out)) is not None:
        raise FileExistsError(in_use(out, holder))
    if out.is_dir() and any(p.name != LOCK for p in out.iterdir()) and not allowed:
        raise FileExistsError(
            f"--output-dir {out} already holds files (a model or an earlier run): pass --resume to continue "
            "the run there, --force to write into it anyway, or choose an empty folder"
        )
