"""How a task trains, an optional object on its Task: records in, features (a Dataset), batches,
the loss (and each rank's share of it), evaluation in units that ranks may share, and the metrics.
The trainer takes these as callables (training/trainer.py); a recipe is their default."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import mlx.core as mx
import numpy as np

from ..batching import collate
from ..inputs import check_bounds
from ..records import DataError, read_records
from ..text import escape


@dataclass
class Dataset:
    """Tokenised features (dicts of int lists and labels) of one task and, for evaluation, what the
    metrics need."""

    task: object  # the Task whose recipe made them
    features: list[dict]
    examples: list[dict] = field(default_factory=list)  # raw inputs kept for evaluation (QA, NER)

    def __len__(self) -> int:
        return len(self.features)

    def check_ids(self, config, name: str = "training") -> None:
        """Raises when a token id falls outside the model's vocabulary (it would read past the
        embedding table): the tokenizer is not the checkpoint's."""
        for i, f in enumerate(self.features):
            ids = f["input_ids"]
            rows = [r for r in (ids if ids and isinstance(ids[0], list) else [ids]) if r]
            if rows:
                lo, hi = min(map(min, rows)), max(map(max, rows))
                check_bounds(config, "input_ids", lo, hi, f"{name} example {i}", DataError)

    def lengths(self) -> np.ndarray:
        """The longest sequence of each example (for length bucketing)."""
        return np.array([_length(f) for f in self.features])

    def token_counts(self) -> np.ndarray:
        """Tokens of each example, every choice counted (for throughput)."""
        return np.array(
            [
                sum(map(len, ids)) if isinstance(ids[0], list) else len(ids)
                for ids in (f["input_ids"] for f in self.features)
            ]
        )


def _length(feature: dict) -> int:
    ids = feature["input_ids"]
    return max(len(x) for x in ids) if ids and isinstance(ids[0], list) else len(ids)


def field_of(where: str, record: dict, name: str, kind=str):
    """record[name] checked to be a `kind`, or a DataError naming file:line (CSV cells split for lists)."""
    if name not in record:
        raise DataError(f"{where}: missing field {name!r} (has {sorted(record)})")
    value = record[name]
    if kind is list and isinstance(value, str):  # CSV cells
        value = value.split("|") if name == "choices" else value.split()
    if not isinstance(value, kind):
        raise DataError(
            f"{where}: field {name!r} should be a {kind.__name__}, got {escape(repr(value))[:80]}"
        )
    return value


class Recipe:
    """A task's training: the defaults serve a classifier over rows; recipes override what differs."""

    name: str = ""  # `mlx-albert train --task`
    token_level: bool = False  # loss averaged over labelled tokens, not rows

    def read(self, path: str | Path) -> list:
        return read_records(path)

    def label_set(self, examples: list) -> tuple[str, list[str]]:
        """(problem type, label names) of training data (classifiers and taggers)."""
        raise ValueError(f"{self.name} has no labels")

    def label_plan(self, examples: list, config, problem_type: str | None):
        """(config changes, label_to_id, problem type) the training data asks of the head."""
        return {}, {}, problem_type

    def featurize(
        self,
        examples,
        tokenizer,
        max_length: int,
        label_to_id: dict,
        problem_type,
        doc_stride: int,
        seed: int,
    ) -> Dataset:
        raise NotImplementedError

    def collate(self, features: list[dict], tokenizer, max_positions: int, rng, args) -> dict:
        return collate(features, tokenizer.pad_token_id, max_positions)

    def default_metric(self, config) -> str:
        return "accuracy"

    # -- the loss -------------------------------------------------------------------------------
    def loss(self, model, batch: dict) -> mx.array:
        """The batch's mean loss (ids were checked once by the trainer: the check's host sync
        cannot be compiled)."""
        return model(**batch, check_inputs=False).loss.astype(mx.float32)

    # Data parallelism: each rank's loss scaled by its share of the global batch's denominator.
    def loss_shares(self, batch: dict, mine: np.ndarray) -> list[float]:
        rows = len(batch["input_ids"])
        if self.token_level:
            labels = np.array(batch["labels"])
            return [(labels[mine] != -100).sum() / (labels != -100).sum(), 1.0]
        return [mine.size / rows, mine.size / rows]

    def scaled_loss(self, model, batch: dict, scale: mx.array) -> mx.array:
        return self.loss(model, batch) * scale[0]

    # -- evaluation -----------------------------------------------------------------------------
    # Evaluation runs in units (batches, or examples for QA) that ranks may share; each gives JSON-able
    # stats, and combine turns all of them into the metrics.
    def eval_units(self, data: Dataset, batch_size: int) -> tuple[list, int]:
        """(units, units per chunk): by default the eval set's batches, longest first, numbered."""
        order = np.argsort(-data.lengths(), kind="stable")
        return list(enumerate(order[i : i + batch_size] for i in range(0, len(order), batch_size))), 1

    def eval_run(self, model, tokenizer, data: Dataset, units: list, collate, seed: int) -> list[dict]:
        """batch_stats of each numbered batch, collated by collate(features, rng) with rng fixed by
        (seed, its number): what pre-training masks is a function of the batch, whoever runs it."""
        stats = []
        for j, rows in units:
            rng = np.random.default_rng([seed, 10**6, j])
            batch = collate([data.features[i] for i in rows], rng)
            out = model(**batch, check_inputs=False)
            stats.append(self.batch_stats(model.config, data, rows, batch, out))
        return stats

    def batch_stats(self, config, data: Dataset, rows, batch: dict, out) -> dict:
        """What the metrics need from one evaluation batch (small and JSON-able: ranks exchange it)."""
        return {
            "loss": float(out.loss.item()),
            "n": len(rows),
            "rows": [int(i) for i in rows],
            "logits": np.array(out.logits.astype(mx.float32)).tolist(),
        }

    def combine(self, config, data: Dataset, stats: list[dict]) -> dict:
        """The metrics (and the mean loss) from every batch's stats, in any order."""
        raise NotImplementedError


def mean_loss(stats: list[dict]) -> float:
    return sum(s["loss"] * s["n"] for s in stats) / sum(s["n"] for s in stats)


def logits_and_rows(stats: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Every evaluated row's logits, and which example each is."""
    logits = np.concatenate([np.array(s["logits"], np.float32).reshape(s["n"], -1) for s in stats])
    rows = np.concatenate([np.array(s["rows"], int) for s in stats])
    return logits, rows
