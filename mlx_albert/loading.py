"""load(): a checkpoint, resolved and read once (hub.Checkpoint), as one of the spec's architectures
(the class from config.json's `architectures`), optionally with its tokenizer, and the checks that
keep the pair honest."""

from __future__ import annotations

import os
from pathlib import Path

import mlx.nn as nn

from .config import AlbertConfig
from .heads import ARCHITECTURES
from .hub import Checkpoint
from .text import escape
from .tokenizer import AlbertTokenizer
from .weights import BACKBONE


class UntrainedHeadError(ValueError):
    """A task needs a head the checkpoint does not have (it would answer with random weights)."""


def load(
    path_or_repo_id: str | os.PathLike | Checkpoint,
    architecture: str | None = None,
    return_tokenizer: bool = False,
    adapter_path: str | os.PathLike | None = None,
    **kwargs,
):
    """Loads a checkpoint as one of the spec's architectures.

    Args:
        path_or_repo_id: checkpoint folder, Hub repo id, a shipped model's short name
            ("pydoc-small"), or a Checkpoint already opened. A sentence-transformers folder loads
            its Transformer module's ALBERT.
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
    checkpoint = Checkpoint.open(path_or_repo_id, kwargs.pop("revision", None), kwargs.pop("cache_dir", None))
    if adapter_path is not None:
        from .lora import adapter_config, adapter_names

        adapter = adapter_config(Path(adapter_path))
        architecture = architecture or adapter["architecture"]
        quiet = adapter_names(Path(adapter_path)) | frozenset(kwargs.pop("quiet", ()))
        kwargs = {**head_changes(adapter["head_config"]), **kwargs, "quiet": quiet}
    model = architecture_class(checkpoint, architecture).from_pretrained(checkpoint, **kwargs)
    if adapter_path is not None:
        from .lora import load_adapters

        load_adapters(model, Path(adapter_path))
    if not return_tokenizer:
        return model
    tokenizer = AlbertTokenizer.from_pretrained(checkpoint)
    check_tokenizer(model, tokenizer, checkpoint.source)
    return model, tokenizer


def architecture_class(checkpoint: Checkpoint, architecture: str | None = None) -> type[nn.Module]:
    """The class of a spec architecture name or transformers class name; by default the
    checkpoint's own (config.json's `architectures`, else the bare model)."""
    by_class = {cls.__name__: cls for cls in ARCHITECTURES.values()}
    if architecture is None:
        names = checkpoint.config.architectures or ["AlbertModel"]
        if not isinstance(names, list) or names[0] not in by_class:
            raise ValueError(
                f"unknown architecture {escape(str(names))[:80]!r} in {checkpoint.folder / 'config.json'}; "
                f"pass architecture= one of {list(ARCHITECTURES)}"
            )
        return by_class[names[0]]
    cls = ARCHITECTURES.get(architecture.lstrip(":")) or by_class.get(architecture)
    if cls is None:
        raise ValueError(f"unknown architecture {architecture!r}; use one of {list(ARCHITECTURES)}")
    return cls


def head_changes(head: dict) -> dict:
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
