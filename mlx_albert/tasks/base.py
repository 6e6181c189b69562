"""What a task is: one object holding every name it goes by (pipeline, CLI command, HTTP route,
training spelling), the head it needs, how it answers texts, how its records become training
features, its metrics, its exported outputs and how a server request for it is checked. Each task
file declares one; the registry (tasks/__init__.py) finds them by any name."""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from pathlib import Path

import mlx.core as mx
import numpy as np

from ..records import DataError, read_records
from ..runtime import collate
from ..text import escape


class RequestError(ValueError):
    """A server request's input is wrong (HTTP 400), naming the field (`param`)."""

    def __init__(self, message: str, param: str = "inputs"):
        super().__init__(message)
        self.param = param


@dataclass
class Limits:
    """What a server request may hold, and what checks it on the event loop."""

    max_input_chars: int
    max_length: int  # tokens the model reads
    front: object = None  # the event loop's own tokenizer (the worker thread has another)
    vocab_size: int = 1 << 31


def tokens_at_most(text: str, limits: Limits) -> int:
    """An upper bound on a text's tokens as the model reads it: every token but [CLS] and [SEP]
    holds at least one character, and texts are cut to max_length."""
    return min(len(text) + 3, limits.max_length)


def check_option(
    name: str, value, kind: type, lo=None, hi=None, choices=None, optional: bool = False
) -> None:
    """A request option of the right type and range, or a RequestError naming it (booleans are not
    integers here, nor integers floats)."""
    if value is None and optional:
        return
    ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
    if ok and kind in (int, float):
        ok = (lo is None or value >= lo) and (hi is None or value <= hi)
    if ok and choices is not None:
        ok = value in choices
    if not ok:
        want = (
            f"one of {list(choices)}"
            if choices
            else f"{'an integer' if kind is int else 'a ' + kind.__name__}"
        )
        if kind in (int, float) and (lo is not None or hi is not None):
            want += f" in [{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
        raise RequestError(
            f"{name} must be {want}{' or null' if optional else ''}, got {str(value)[:40]!r}", name
        )


@dataclass
class Dataset:
    """Tokenised features (dicts of int lists and labels) and, for evaluation, what the metrics need."""

    task: str
    features: list[dict]
    examples: list[dict] = field(default_factory=list)  # raw inputs kept for evaluation (QA, NER)

    def __len__(self) -> int:
        return len(self.features)

    def check_ids(self, vocab_size: int, name: str = "training") -> None:
        """Raises when a token id falls outside [0, vocab_size): it would read past the embedding table."""
        for i, f in enumerate(self.features):
            ids = f["input_ids"]
            for row in ids if ids and isinstance(ids[0], list) else [ids]:
                if row and (max(row) >= vocab_size or min(row) < 0):
                    bad = max(row) if max(row) >= vocab_size else min(row)
                    raise DataError(
                        f"{name} example {i} holds token id {bad} outside the model's vocabulary "
                        f"[0, {vocab_size}): the tokenizer does not belong to this model; use the "
                        "checkpoint's own tokenizer"
                    )

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


def text_of(item, what: str, limits: Limits) -> str:
    """A non-empty string within the server's character limit, or a RequestError."""
    if not isinstance(item, str) or not item.strip():
        raise RequestError(f"{what} must be a non-empty string")
    if len(item) > limits.max_input_chars:
        raise RequestError(f"{what} has {len(item)} characters; the limit is {limits.max_input_chars}")
    return item


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def label_name(config, i: int) -> str:
    return config.id_to_label.get(int(i), f"LABEL_{int(i)}")


def scores(items: list[dict], key: str) -> str:
    """'label=0.9512  other=0.0488': a plain-text answer line."""
    return "  ".join(f"{escape(str(d[key]))}={d['score']:.4f}" for d in items)


class Task:
    """A task: its names, its head, and every room's view of it (see the module docstring). The
    defaults serve a classifier over rows; task files override what differs."""

    name: str = ""  # the pipeline's name, the canonical one
    architecture: str = "base"  # spec name of the head it needs
    aliases: tuple[str, ...] = ()  # other pipeline names (transformers')
    command: str | None = None  # the CLI's command
    route: str | None = None  # the server's path
    training: str | None = None  # `mlx-albert train --task`
    accepts: tuple[str, ...] = ()  # other architectures whose checkpoints answer it too
    needs_head: bool = True  # False: the backbone alone answers
    fields: tuple[str, ...] = ("text",)  # what an input record holds (CLI files)
    optional_fields: tuple[str, ...] = ()
    options: frozenset[str] = frozenset()  # what a server request may set
    outputs: tuple[str, ...] = ("logits",)  # the exported function's outputs
    inputs_rank: int = 2  # (batch, seq); 3: (batch, choices, seq)
    batch_size: int = 8  # the pipeline's default
    token_level: bool = False  # training loss averaged over labelled tokens, not rows

    def names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(n for n in (self.name, *self.aliases, self.command, self.training) if n))

    # -- answering texts (the pipeline) -----------------------------------------------------------
    def predict(self, model, tokenizer, inputs, **options):
        raise NotImplementedError

    def prepare(self, checkpoint, model, tokenizer) -> dict:
        """Defaults a checkpoint sets for this task's calls (embed: its sentence-transformers head)."""
        return {}

    def runs_on(self, model) -> bool:
        """Whether `model` carries this task's head (or needs none): its architecture or one it accepts."""
        from ..heads import ARCHITECTURES

        if not self.needs_head:
            return True
        return any(isinstance(model, ARCHITECTURES[n]) for n in (self.architecture, *self.accepts))

    def needs_pooler(self, options: dict) -> bool:
        """Whether answering uses the pooler (a checkpoint may lack a trained one)."""
        return self.needs_head

    def export_outputs(self, model, prepared: dict, inputs: dict) -> tuple:
        """The exported function's outputs (`outputs`, in order) for the traced inputs
        (input_ids, attention_mask, token_type_ids; not range-checked: a host sync cannot be
        traced). `prepared`: what prepare() gave."""
        result = model(**inputs, check_inputs=False)
        return tuple(getattr(result, f) for f in self.outputs)

    # -- the command line -------------------------------------------------------------------------
    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """The command's own flags (beside those of every task command)."""

    def cli_options(self, args: argparse.Namespace) -> dict:
        return {}

    def cli_inputs(self, args: argparse.Namespace, records, open_records):
        """(records, inputs) of a command: by default its records as they are."""
        records = open_records(self.fields, self.optional_fields)
        return records, records.start()

    def human(self, result, args: argparse.Namespace) -> str:
        """One answer as a plain-text line."""
        return str(result)

    # -- the server -------------------------------------------------------------------------------
    def request_inputs(self, body: dict) -> dict:
        """The request body with shorthand fields folded into `inputs` (QA's question/context)."""
        return body

    def check_options(self, options: dict, limits: Limits) -> None:
        """A request's options checked for type and range (RequestError naming the option)."""

    def check_request(self, item, options: dict, limits: Limits) -> tuple[int, int]:
        """One input of a request checked before it is batched with others (RequestError), and what
        it costs: (tokens at most the model will run, answers at most it will return)."""
        return tokens_at_most(text_of(item, "inputs", limits), limits), 1

    def single_result(self, result, inputs, options: dict):
        """The answer to a request whose `inputs` was one item, not a list."""
        return result

    # -- training ---------------------------------------------------------------------------------
    def read_training(self, path: str | Path) -> list:
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
    ):
        raise ValueError(f"{self.name} has no training")

    def collate(self, features: list[dict], tokenizer, max_positions: int, rng, args) -> dict:
        return collate(features, tokenizer.pad_token_id, max_positions)

    def default_metric(self, config) -> str:
        return "accuracy"

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

    # Data parallelism: each rank's loss scaled by its share of the global batch's denominator.
    def loss_shares(self, batch: dict, mine: np.ndarray) -> list[float]:
        rows = len(batch["input_ids"])
        if self.token_level:
            labels = np.array(batch["labels"])
            return [(labels[mine] != -100).sum() / (labels != -100).sum(), 1.0]
        return [mine.size / rows, mine.size / rows]

    def scaled_loss(self, model, batch: dict, scale: mx.array) -> mx.array:
        return model(**batch, check_inputs=False).loss.astype(mx.float32) * scale[0]


def mean_loss(stats: list[dict]) -> float:
    return sum(s["loss"] * s["n"] for s in stats) / sum(s["n"] for s in stats)


def logits_and_rows(stats: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Every evaluated row's logits, and which example each is."""
    logits = np.concatenate([np.array(s["logits"], np.float32).reshape(s["n"], -1) for s in stats])
    rows = np.concatenate([np.array(s["rows"], int) for s in stats])
    return logits, rows


def finite(value: float) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
