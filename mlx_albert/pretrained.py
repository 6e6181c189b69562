"""from_pretrained / save_pretrained / load: checkpoint folders and Hub repo ids, strict weight
matching with named keys, new task heads initialised, quantized checkpoints restored."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TypeVar

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_unflatten

from .config import AlbertConfig
from .weights import BACKBONE, hf_to_mlx, mlx_to_hf, read_weights, write_json, write_safetensors

logger = logging.getLogger(__name__)
M = TypeVar("M", bound="PreTrainedMixin")
_ENCODER_PARTS = ("embeddings.", "encoder.")  # always in a checkpoint
_BACKBONE_PARTS = (*_ENCODER_PARTS, "pooler.")  # the pooler is optional, initialised like a head
HUB_PATTERNS = ["*.json", "*.safetensors", "spiece.model", "*.txt", "*.md"]


def resolve(
    path_or_repo_id: str | os.PathLike,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """A local checkpoint folder, or a Hub repo id downloaded (or found in the local cache)."""
    path = Path(path_or_repo_id).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise NotADirectoryError(f"{path} is a file; pass the checkpoint folder that contains it")
    text = str(path_or_repo_id)
    if text.startswith((".", "/", "~")) or text.count("/") > 1 or not text.strip():
        raise FileNotFoundError(f"checkpoint folder {text!r} does not exist")
    from huggingface_hub import snapshot_download

    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    kwargs = dict(repo_id=text, revision=revision, cache_dir=cache_dir, allow_patterns=HUB_PATTERNS)
    try:
        folder = Path(snapshot_download(**kwargs, local_files_only=offline))
    except Exception as first:  # no network, unknown repo, gated repo, ...
        try:  # fall back to whatever the local cache holds
            folder = Path(snapshot_download(**kwargs, local_files_only=True))
        except Exception:
            where = "the local Hugging Face cache (offline)" if offline else "the Hub or the local cache"
            raise FileNotFoundError(
                f"{text!r} is neither a local folder nor a repo id found in {where} "
                f"({type(first).__name__}); check the name, or download it while online"
            ) from None
    if not any(folder.glob("*.safetensors")) and not offline:  # only a PyTorch checkpoint
        folder = Path(
            snapshot_download(
                repo_id=text, revision=revision, cache_dir=cache_dir, allow_patterns=["pytorch_model*.bin*"]
            )
        )
    return folder


def quantizable(path: str, module: nn.Module, group_size: int = 64) -> bool:
    """Linear and embedding layers whose rows split into groups; tiny heads stay in float."""
    return (
        isinstance(module, (nn.Linear, nn.Embedding))
        and module.weight.shape[-1] % group_size == 0
        and module.weight.shape[0] >= 32
    )


def _align_prefix(weights: dict[str, mx.array], model_has_backbone_prefix: bool) -> dict[str, mx.array]:
    """Lets a bare-model checkpoint load into a task model and vice versa (as transformers)."""
    has_prefix = any(k.startswith(BACKBONE) for k in weights)
    if model_has_backbone_prefix and not has_prefix:
        return {BACKBONE + k if k.startswith(_BACKBONE_PARTS) else k: v for k, v in weights.items()}
    if not model_has_backbone_prefix and has_prefix:
        return {k.removeprefix(BACKBONE): v for k, v in weights.items()}
    return weights


def _is_head(name: str) -> bool:
    """Weights a checkpoint may lack (new task heads, the pooler) or carry unused (other heads)."""
    return not name.removeprefix(BACKBONE).startswith(_ENCODER_PARTS)


def match_weights(model: nn.Module, weights: dict[str, mx.array], source: str) -> dict[str, mx.array]:
    """Checks checkpoint weights against the model; raises listing every problem by name."""
    expected = dict(tree_flatten(model.parameters()))
    unused = sorted(k for k in weights if k not in expected)
    missing = sorted(k for k in expected if k not in weights)
    mis_shaped = [
        f"{k}: checkpoint {tuple(weights[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in weights and weights[k].shape != v.shape
    ]
    problems = []
    if [k for k in missing if not _is_head(k)]:
        problems.append(f"missing from the checkpoint: {[k for k in missing if not _is_head(k)]}")
    if [k for k in unused if not _is_head(k)]:
        problems.append(f"in the checkpoint but not in the model: {[k for k in unused if not _is_head(k)]}")
    if mis_shaped:
        problems.append(f"shape mismatches: {mis_shaped}")
    if problems:
        raise ValueError(
            f"weights of {source} do not fit {type(model).__name__} with its config.json: "
            + "; ".join(problems)
            + ". Check that config.json belongs to these weights "
            "(or pass matching overrides such as num_labels=...)."
        )
    if unused:
        logger.warning("%s: weights not used by %s: %s", source, type(model).__name__, unused)
    if missing:
        logger.warning(
            "%s: newly initialised weights of %s (train them before use): %s",
            source,
            type(model).__name__,
            missing,
        )
    return {k: v for k, v in weights.items() if k in expected}


class PreTrainedMixin:
    """Loading and saving for AlbertModel and the task models (transformers' checkpoint layout)."""

    config: AlbertConfig

    @property
    def dtype(self) -> mx.Dtype:
        """The float dtype of the weights (of the embeddings' LayerNorm, never quantized)."""
        backbone = self["albert"] if "albert" in self else self
        return backbone.embeddings.norm.weight.dtype

    @classmethod
    def from_pretrained(
        cls: type[M],
        path_or_repo_id: str | os.PathLike,
        *,
        dtype: mx.Dtype | None = None,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        lazy: bool = False,
        **config_changes,
    ) -> M:
        """Loads a transformers or mlx_albert checkpoint folder, or a Hub repo id.

        Args:
            path_or_repo_id: a folder with config.json + weights, or "org/name" on the Hub.
            dtype: cast floating weights (e.g. mx.float32); default: as stored.
            revision, cache_dir: passed to huggingface_hub for repo ids.
            lazy: leave weights unevaluated (memory-mapped until first use).
            **config_changes: AlbertConfig fields to override, e.g. num_labels=3.

        Raises:
            FileNotFoundError: folder/repo, config.json or weights not found.
            ValueError: corrupt files, or weights that do not fit the config.
        """
        folder = resolve(path_or_repo_id, revision, cache_dir)
        config = AlbertConfig.from_json(folder / "config.json")
        if "id_to_label" in config_changes and "num_labels" not in config_changes:  # as transformers
            config_changes = {**config_changes, "num_labels": len(config_changes["id_to_label"])}
        if (
            config_changes.get("num_labels", config.num_labels) != config.num_labels
            and "id_to_label" not in config_changes
        ):  # new label count: old names no longer apply
            config_changes = {**config_changes, "id_to_label": {}, "label_to_id": {}}
        if config_changes:
            config = config.replace(**config_changes)
        model = cls(config)
        weights, unknown = hf_to_mlx(read_weights(folder))
        if unknown:
            raise ValueError(f"{folder} holds weights that are not ALBERT's: {sorted(unknown)}")
        weights = _align_prefix(weights, "albert" in model)
        if config.quantization:
            q = config.quantization

            def predicate(path: str, module: nn.Module):
                if f"{path}.scales" not in weights:
                    return False
                # per-layer overrides are keyed by the converted model's paths (with or without albert.)
                for key in (path, path.removeprefix(BACKBONE), BACKBONE + path):
                    if isinstance(q.get(key), dict):
                        return {"group_size": q["group_size"], "mode": q.get("mode", "affine"), **q[key]}
                return True

            nn.quantize(
                model,
                group_size=q["group_size"],
                bits=q["bits"],
                mode=q.get("mode", "affine"),
                class_predicate=predicate,
            )
        weights = match_weights(model, weights, str(path_or_repo_id))
        if dtype is None:  # new head weights take the checkpoint's float dtype
            dtype = next(
                (
                    v.dtype
                    for k, v in weights.items()
                    if k.endswith("word_embeddings.weight") and mx.issubdtype(v.dtype, mx.floating)
                ),
                None,
            )
        model.update(tree_unflatten(list(weights.items())))
        if dtype is not None:
            model.set_dtype(dtype)
        model.eval()
        if not lazy:
            mx.eval(model.parameters())
        return model

    def save_pretrained(self, path: str | os.PathLike) -> None:
        """Writes config.json + model.safetensors with transformers' names (each file atomically)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        weights = mlx_to_hf(dict(tree_flatten(self.parameters())))
        config = self.config.replace(architectures=[type(self).__name__]).to_hf()
        config["torch_dtype"] = str(self.dtype).removeprefix("mlx.core.")
        # "pt" layout: transformers reads unquantized files directly.
        fmt = "mlx" if self.config.quantization else "pt"
        write_safetensors(path / "model.safetensors", weights, {"format": fmt})
        write_json(path / "config.json", config)


def load(
    path_or_repo_id: str | os.PathLike,
    architecture: str | None = None,
    return_tokenizer: bool = False,
    **kwargs,
):
    """Loads a checkpoint as one of the spec's architectures.

    Args:
        path_or_repo_id: checkpoint folder or Hub repo id.
        architecture: "base", "for_masked_language_modeling", ... (or a transformers class name);
            default: the checkpoint's `architectures`, else "base".
        return_tokenizer: also return the checkpoint's AlbertTokenizer: `model, tokenizer = load(...)`.
        **kwargs: passed to `from_pretrained` (dtype, revision, lazy, config overrides).
    """
    if return_tokenizer:
        from .tokenizer import AlbertTokenizer

        folder = resolve(path_or_repo_id, kwargs.get("revision"), kwargs.get("cache_dir"))
        return load(folder, architecture, **kwargs), AlbertTokenizer.from_pretrained(folder)
    from .heads import ARCHITECTURES

    by_class = {cls.__name__: cls for cls in ARCHITECTURES.values()}
    if architecture is None:
        folder = resolve(path_or_repo_id, kwargs.get("revision"), kwargs.get("cache_dir"))
        names = AlbertConfig.from_json(folder / "config.json").architectures or ["AlbertModel"]
        if names[0] not in by_class:
            raise ValueError(
                f"unknown architecture {names[0]!r} in {folder / 'config.json'}; "
                f"pass architecture= one of {list(ARCHITECTURES)}"
            )
        cls = by_class[names[0]]
        path_or_repo_id = folder
    else:
        key = architecture.lstrip(":")
        cls = ARCHITECTURES.get(key) or by_class.get(key)
        if cls is None:
            raise ValueError(f"unknown architecture {architecture!r}; use one of {list(ARCHITECTURES)}")
    return cls.from_pretrained(path_or_repo_id, **kwargs)
