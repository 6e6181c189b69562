"""Fine-tuning and pre-training of every ALBERT head on MLX: the loop (knowing no task: each task's
features, batches, losses and metrics come from mlx_albert.tasks), optimiser, checkpoints, LoRA,
data parallelism."""

from ..lora import apply_lora, merge_lora
from ..records import read_documents
from ..tasks.pretraining import evaluate_pretraining, mask_tokens, masked_batch, sop_dataset
from .data import DataError, Dataset, batch_order, build, collate, label_set, read_records
from .optim import adamw, clip_by_global_norm, schedule
from .trainer import Trainer, TrainingArgs, TrainingError

__all__ = [
    "DataError",
    "Dataset",
    "Trainer",
    "TrainingArgs",
    "TrainingError",
    "adamw",
    "apply_lora",
    "batch_order",
    "build",
    "clip_by_global_norm",
    "collate",
    "evaluate_pretraining",
    "label_set",
    "mask_tokens",
    "masked_batch",
    "merge_lora",
    "read_documents",
    "read_records",
    "schedule",
    "sop_dataset",
]
