"""The models a server holds: each loaded once with its tokenizer, its embedding pooling read from
sentence-transformers' files when the folder has them, and what `/v1/models` says about it."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from ..hub import resolve
from ..loading import load
from ..pipelines import TASKS

logger = logging.getLogger(__name__)


@dataclass
class ServedModel:
    id: str
    model: object
    tokenizer: object
    pooling: str = "mean"
    normalize: bool = True
    pooling_source: str = "the embed pipeline's defaults"
    front: object = None  # the event loop's own tokenizer (the worker thread uses `tokenizer`)

    def __post_init__(self):
        self.front = self.front or self.tokenizer.copy()

    @property
    def max_length(self) -> int:
        return min(self.tokenizer.model_max_length, self.model.config.max_positions)

    def supports(self, task: str) -> bool:
        """Whether the checkpoint's own architecture carries the task's head (embeddings: always)."""
        if task in ("embed", "feature-extraction"):
            return True
        wanted = TASKS[task][1]
        from ..heads import ARCHITECTURES

        names = {wanted} | ({"for_pre_training"} if task == "fill-mask" else set())
        return any(isinstance(self.model, ARCHITECTURES[n]) for n in names)

    def info(self) -> dict:
        config = self.model.config
        return {
            "id": self.id,
            "object": "model",
            "owned_by": "local",
            "architecture": type(self.model).__name__,
            "labels": [config.id_to_label.get(i, f"LABEL_{i}") for i in range(config.num_labels)],
            "max_length": self.max_length,
            "dtype": str(self.model.dtype).removeprefix("mlx.core."),
            "embedding": {"pooling": self.pooling, "normalize": self.normalize, "from": self.pooling_source},
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


def load_models(specs: dict[str, str], dtype=None) -> dict[str, ServedModel]:
    served = {}
    for name, path in specs.items():
        folder = resolve(path)
        model, tokenizer = load(folder, return_tokenizer=True, dtype=dtype)
        pooling, normalize, source = _sentence_transformers_pooling(folder)
        served[name] = ServedModel(name, model, tokenizer, pooling, normalize, source)
        logger.info("serving %s (%s) from %s", name, type(model).__name__, folder)
    return served


def _sentence_transformers_pooling(folder: Path) -> tuple[str, bool, str]:
    """(pooling, normalize, where it came from): sentence-transformers' modules.json and
    1_Pooling/config.json when present, else the embed pipeline's defaults (mean, normalised)."""
    modules_path = folder / "modules.json"
    if not modules_path.is_file():
        return "mean", True, "the embed pipeline's defaults"
    try:
        modules = json.loads(modules_path.read_text(encoding="utf-8"))
        kinds = {m.get("type", ""): m.get("path", "") for m in modules}
        pooling_dir = next((p for t, p in kinds.items() if t.endswith("models.Pooling")), "1_Pooling")
        pooling = json.loads((folder / pooling_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, AttributeError, TypeError) as e:
        raise ValueError(f"{modules_path} or its pooling config is malformed ({e})") from None
    if pooling.get("pooling_mode_cls_token"):
        mode = "cls"
    elif pooling.get("pooling_mode_mean_tokens", True):
        mode = "mean"
    else:
        raise ValueError(f"{folder}: only cls or mean pooling is supported, got {pooling}")
    normalize = any(t.endswith("models.Normalize") for t in kinds)
    return mode, normalize, "sentence-transformers' modules.json"
