"""The models a server holds: each loaded once, with its tokenizers and its SentenceEncoder (the
sentence-transformers head when the folder has one), and what `/v1/models` says about it."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from ..hub import Checkpoint
from ..loading import load
from ..sentence.encoder import SentenceEncoder
from ..tasks import Limits, Task

logger = logging.getLogger(__name__)


@dataclass
class ServedModel:
    id: str
    model: object
    tokenizer: object  # the worker thread's
    encoder: SentenceEncoder | None = None
    front: object = None  # the event loop's own tokenizer: encode changes a tokenizer's settings

    def __post_init__(self):
        self.front = self.front or self.tokenizer.copy()
        self.encoder = self.encoder or SentenceEncoder(self.model, self.tokenizer)

    @property
    def max_length(self) -> int:
        return min(self.tokenizer.model_max_length, self.model.config.max_positions)

    def limits(self, max_input_chars: int) -> Limits:
        return Limits(max_input_chars, self.max_length, self.front, self.model.config.vocab_size)

    def supports(self, task: Task) -> bool:
        """Whether the checkpoint's own architecture carries the task's head (embed: always)."""
        return task.runs_on(self.model)

    def info(self) -> dict:
        config, head = self.model.config, self.encoder.head
        source = (
            "sentence-transformers' modules.json" if self.encoder.config else "the embed pipeline's defaults"
        )
        return {
            "id": self.id,
            "object": "model",
            "owned_by": "local",
            "architecture": type(self.model).__name__,
            "labels": (  # only where a classifier answers with them
                [config.id_to_label.get(i, f"LABEL_{i}") for i in range(config.num_labels)]
                if "classifier" in self.model
                else []
            ),
            "max_length": self.max_length,
            "dtype": str(self.model.dtype).removeprefix("mlx.core."),
            "embedding": {"pooling": "+".join(head.modes), "normalize": head.normalizes, "from": source},
        }


def parse_specs(specs: list[str]) -> dict[str, str]:
    """`--model PATH` (named after the folder) or `--model name=PATH`, repeatable -> {name: path}."""
    out: dict[str, str] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = Path(spec.rstrip("/")).name or spec, spec
        if not name or not path:
            raise ValueError(f"--model {spec!r}: use PATH or name=PATH")
        if name in out:
            raise ValueError(f"--model: the name {name!r} is given twice; name them with name=PATH")
        out[name] = path
    return out


def parse_adapters(specs: list[str], models: dict[str, str]) -> dict[str, str]:
    """`--adapter-path PATH` (with one --model) or `--adapter-path name=PATH` -> {model name: path}."""
    out: dict[str, str] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not (sep and name in models):  # a plain path: the one model's
            if len(models) != 1:
                raise ValueError(
                    f"--adapter-path {spec!r}: name the model it goes onto (name=PATH, with a name of "
                    f"{sorted(models)})"
                )
            name, path = next(iter(models)), spec
        if name in out:
            raise ValueError(f"--adapter-path: two adapters for the model {name!r}")
        out[name] = path
    return out


def load_models(
    specs: dict[str, str], dtype=None, adapters: dict[str, str] | None = None
) -> dict[str, ServedModel]:
    served, adapters = {}, adapters or {}
    for name, path in specs.items():
        checkpoint = Checkpoint.open(path)  # resolved and read once: model, tokenizer, encoder
        adapter = adapters.get(name)
        model, tokenizer = load(checkpoint, return_tokenizer=True, dtype=dtype, adapter_path=adapter)
        encoder = SentenceEncoder.from_pretrained(checkpoint, model=model, tokenizer=tokenizer)
        served[name] = ServedModel(name, model, tokenizer, encoder)
        logger.info("serving %s (%s) from %s", name, type(model).__name__, checkpoint.root)
    return served
