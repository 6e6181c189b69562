"""Fine-tuning and pre-training of every ALBERT head on MLX: data, optimiser, loop, metrics, LoRA."""

from ..lora import apply_lora, merge_lora
from .data import DataError, Dataset, batch_order, build, collate, label_set, read_records
from .evaluate import evaluate_pretraining
from .optim import adamw, clip_by_global_norm, schedule
from .pretraining import mask_tokens, masked_batch, read_documents, sop_dataset
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
