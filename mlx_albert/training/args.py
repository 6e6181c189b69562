"""TrainingArgs: every option of a run, with its default; each is a flag of `mlx-albert train`
(HELP says what it does)."""

from __future__ import annotations

from dataclasses import dataclass

from ..checks import finite, integer_in


@dataclass
class TrainingArgs:
    output_dir: str = "albert-finetuned"
    epochs: float = 3.0
    max_steps: int | None = None  # overrides epochs
    batch_size: int = 16
    eval_batch_size: int = 32
    grad_accumulation: int = 1  # micro-batches per optimiser step
    learning_rate: float = 5e-5
    weight_decay: float = 0.0  # not applied to biases and LayerNorm weights
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    schedule: str = "linear"  # linear | cosine | constant, after warm-up
    warmup_ratio: float = 0.0
    warmup_steps: int | None = None  # overrides warmup_ratio
    max_grad_norm: float = 1.0  # <= 0: no clipping
    mixed_precision: str | None = None  # bfloat16 | float16 compute, float32 master weights
    seed: int = 0
    log_steps: int = 10
    eval_steps: int | None = None  # default: at the end of every epoch
    save_steps: int | None = None  # default: at the end of every epoch
    save_total_limit: int = 2
    metric: str | None = None  # for keeping the best model; default per task
    greater_is_better: bool = True
    lora_rank: int = 0  # > 0: LoRA adapters instead of full fine-tuning
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    adapter_only: bool = False  # LoRA: save adapters.safetensors + adapter_config.json, no merged model
    mlm_probability: float = 0.15
    max_ngram: int = 1  # pre-training: mask n-grams up to this length (ALBERT used 3)
    compile: bool = True
    progress: bool = True
    resume: bool = False

    def __post_init__(self):
        """Refuses values that would train something else than asked (0 epochs trained one step)."""
        if not (finite(self.epochs) and 0 < self.epochs <= 1e6):
            raise ValueError(
                f"epochs must be a number above 0, got {self.epochs!r}: --epochs 1 trains one pass"
            )
        counts = {
            "max_steps": 1,
            "batch_size": 1,
            "eval_batch_size": 1,
            "grad_accumulation": 1,
            "log_steps": 1,
        }
        counts.update(
            {"eval_steps": 1, "save_steps": 1, "save_total_limit": 1, "warmup_steps": 0, "lora_rank": 0}
        )
        counts.update({"max_ngram": 1})
        for name, low in counts.items():
            value = getattr(self, name)
            if value is not None and not integer_in(value, low):
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        for name in ("learning_rate", "weight_decay", "adam_epsilon", "max_grad_norm"):
            if not finite(getattr(self, name)) or (name != "max_grad_norm" and getattr(self, name) < 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {getattr(self, name)!r}")
        for name, low, high in (("adam_beta1", 0, 1), ("adam_beta2", 0, 1), ("lora_dropout", 0, 1)):
            if not (finite(getattr(self, name)) and low <= getattr(self, name) < high):
                raise ValueError(f"{name} must be in [{low}, {high}), got {getattr(self, name)!r}")
        if not (finite(self.warmup_ratio) and 0 <= self.warmup_ratio <= 1):
            raise ValueError(f"warmup_ratio must be in [0, 1], got {self.warmup_ratio!r}")
        if not (finite(self.mlm_probability) and 0 < self.mlm_probability < 1):
            raise ValueError(f"mlm_probability must be in (0, 1), got {self.mlm_probability!r}")
        if self.lora_rank:
            from ..lora import check_lora

            check_lora(self.lora_rank, self.lora_alpha, "--lora-rank/--lora-alpha")


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
