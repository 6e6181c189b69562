"""load(): a checkpoint as one of the spec's architectures (the class from config.json's
`architectures`), optionally with its tokenizer, and the checks that keep the pair honest."""

from __future__ import annotations

import os
from pathlib import Path

import mlx.nn as nn

from .config import AlbertConfig
from .heads import ARCHITECTURES
from .hub import resolve
from .tokenizer import AlbertTokenizer
from .weights import BACKBONE


class UntrainedHeadError(ValueError):
    """A task needs a head the checkpoint does not have (it would answer with random weights)."""


def load(
    path_or_repo_id: str | os.PathLike,
    architecture: str | None = None,
    return_tokenizer: bool = False,
    adapter_path: str | os.PathLike | None = None,
    **kwargs,
):
    """Loads a checkpoint as one of the spec's architectures.

    Args:
        path_or_repo_id: checkpoint folder or Hub repo id.
        architecture: "base", "for_masked_language_modeling", ... (or a transformers class name);
            default: the checkpoint's `architectures`, else "base".
        return_tokenizer: also return the checkpoint's AlbertTokenizer: `model, tokenizer = load(...)`.
        adapter_path: a folder of LoRA adapters (adapters.safetensors + adapter_config.json, written
            by `mlx-albert train --lora-rank R`) to load onto this base model, merged; its
            architecture and head are the adapter's.
        **kwargs: passed to `from_pretrained` (dtype, revision, lazy, config overrides).

    Raises:
        ValueError: an unknown architecture, weights that do not fit, or a tokenizer whose
            vocabulary is larger than the model's embedding table.
    """
    folder = resolve(path_or_repo_id, kwargs.get("revision"), kwargs.get("cache_dir"))
    if adapter_path is not None:
        from .lora import adapter_config

        adapter = adapter_config(Path(adapter_path))
        architecture = architecture or adapter["architecture"]
        kwargs = {**_head_changes(adapter["head_config"]), **kwargs}
    by_class = {cls.__name__: cls for cls in ARCHITECTURES.values()}
    config = AlbertConfig.from_json(folder / "config.json")
    if architecture is None:
        names = config.architectures or ["AlbertModel"]
        if not isinstance(names, list) or names[0] not in by_class:
            raise ValueError(
                f"unknown architecture {str(names)[:80]!r} in {folder / 'config.json'}; "
                f"pass architecture= one of {list(ARCHITECTURES)}"
            )
        cls = by_class[names[0]]
    else:
        key = architecture.lstrip(":")
        cls = ARCHITECTURES.get(key) or by_class.get(key)
        if cls is None:
            raise ValueError(f"unknown architecture {architecture!r}; use one of {list(ARCHITECTURES)}")
    model = cls.from_pretrained(folder, config=config, **{k: v for k, v in kwargs.items() if k != "revision"})
    if adapter_path is not None:
        from .lora import load_adapters

        load_adapters(model, Path(adapter_path))
    if not return_tokenizer:
        return model
    tokenizer = AlbertTokenizer.from_pretrained(folder)
    check_tokenizer(model, tokenizer, str(folder))
    return model, tokenizer


def _head_changes(head: dict) -> dict:
    """AlbertConfig fields of a head from its transformers config keys (adapter_config.json)."""
    named = AlbertConfig.from_hf(
        {"num_labels": head.get("num_labels"), "id2label": head.get("id2label") or {}}
    )
    changes = {
        "num_labels": named.num_labels,
        "id_to_label": named.id_to_label,
        "label_to_id": named.label_to_id,
    }
    if head.get("problem_type"):
        changes["problem_type"] = head["problem_type"]
    return changes


def check_tokenizer(model: nn.Module, tokenizer: AlbertTokenizer, source: str = "the checkpoint") -> None:
    """Refuses a tokenizer that can produce ids past the model's embedding table."""
    vocab = model.config.vocab_size
    if tokenizer.vocab_size > vocab:
        raise ValueError(
            f"the tokenizer of {source} has {tokenizer.vocab_size} tokens but the model's vocab_size is "
            f"{vocab}: ids >= {vocab} would read past the embedding table; use the tokenizer that "
            "belongs to this model"
        )


def check_trained(model: nn.Module, task: str, source: str, allow_pooler: bool = True) -> None:
    """Raises UntrainedHeadError when `model` was loaded with head weights initialised anew."""
    missing = [
        k
        for k in missing_keys(model)
        if not (allow_pooler and k.removeprefix(BACKBONE).startswith("pooler."))
    ]
    if missing:
        heads = sorted({k.removeprefix(BACKBONE).split(".")[0] for k in missing})
        raise UntrainedHeadError(
            f"{source} has no trained {'/'.join(heads)} weights for {task} (the checkpoint was saved "
            f"as {_saved_as(model)}): its answers would be random. Fine-tune it first "
            "(mlx-albert train), or pass allow_untrained_head=True (--allow-untrained-head) to run anyway"
        )


def missing_keys(model: nn.Module) -> tuple[str, ...]:
    """Names of the weights from_pretrained initialised anew (none for a model built in code)."""
    info = getattr(model, "loading_info", None)
    return info.missing_keys if info is not None else ()


def _saved_as(model: nn.Module) -> str:
    names = getattr(model.config, "architectures", None) or ["AlbertModel"]
    return str(names[0])
