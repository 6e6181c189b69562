"""from_pretrained / save_pretrained: strict weight matching with named keys, new task heads
initialised, quantized checkpoints restored (`load()` and Hub resolution live above and below)."""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_unflatten

from .config import AlbertConfig
from .files import clean_stale, staged_folder
from .hub import Checkpoint
from .text import escape
from .weights import (
    BACKBONE,
    hf_to_mlx,
    mlx_to_hf,
    read_weights,
    stale_weight_files,
    write_json,
    write_safetensors,
)

logger = logging.getLogger(__name__)
M = TypeVar("M", bound="PreTrainedMixin")
DTYPES = {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16}
_HALF = (mx.float16, mx.bfloat16)
_told_float32 = False  # the CPU's float32 default is said once per process
_ENCODER_PARTS = ("embeddings.", "encoder.")  # always in a checkpoint
_BACKBONE_PARTS = (*_ENCODER_PARTS, "pooler.")  # the pooler is optional, initialised like a head


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


_LAYER = re.compile(r"(?:albert\.)?encoder\.groups\.(\d+)\.layers\.(\d+)\.")
# (our weight name, config field that sets its rows, transformers key) for the large allocations
_ROWS = (
    ("embeddings.word_embeddings.weight", "vocab_size", "vocab_size"),
    ("embeddings.position_embeddings.weight", "max_positions", "max_position_embeddings"),
    ("embeddings.token_type_embeddings.weight", "max_token_types", "type_vocab_size"),
    ("encoder.embedding_projection.weight", "hidden_size", "hidden_size"),
    ("encoder.groups.0.layers.0.ffn.weight", "intermediate_size", "intermediate_size"),
)


def check_config(config: AlbertConfig, weights: dict[str, mx.array], source: str) -> None:
    """Compares the config's sizes with the weights' names and shapes before anything is built, so a
    wrong or hostile config.json fails at once instead of allocating (or aborting) first."""
    layers: dict[int, set[int]] = {}
    for name in weights:
        if m := _LAYER.match(name):
            layers.setdefault(int(m[1]), set()).add(int(m[2]))
    problems = []
    if layers and sorted(layers) != list(range(config.num_groups)):
        problems.append(f"num_hidden_groups={config.num_groups} but the weights hold {len(layers)} group(s)")
    depths = {len(d) for d in layers.values()}
    if layers and (depths != {config.block_depth} or any(d != set(range(len(d))) for d in layers.values())):
        problems.append(
            f"inner_group_num={config.block_depth} but the weights hold {sorted(depths)} layer(s) per group"
        )
    for name, field, key in _ROWS:
        value = weights.get(name, weights.get(BACKBONE + name))
        if value is None:
            problems.append(f"{name} is missing from the checkpoint")
        elif value.ndim and value.shape[0] != getattr(config, field):
            problems.append(f"{key}={getattr(config, field)} but {name} has {value.shape[0]} rows")
    if problems:
        raise ValueError(
            f"config.json of {source} does not match its weights: "
            + "; ".join(problems)
            + ". Use the config.json that belongs to these weights."
        )


def match_weights(
    model: nn.Module, weights: dict[str, mx.array], source: str, quiet: frozenset[str] = frozenset()
) -> tuple[dict[str, mx.array], list[str]]:
    """Checks checkpoint weights against the model; raises listing every problem by name. Returns the
    weights the model uses and the names of the weights it initialised anew (missing_keys), of which
    those in `quiet` (filled from elsewhere, or never used) are not worth a warning."""
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
    if unused:  # other heads (anything else raised above): using part of a checkpoint is expected,
        # e.g. the MLM head of a pre-training checkpoint; worth a warning only beside new weights
        (logger.warning if missing else logger.info)(
            "%s: weights not used by %s: %s", source, type(model).__name__, unused
        )
    if loud := [k for k in missing if k not in quiet]:
        logger.warning(
            "%s: newly initialised weights of %s (train them before use): %s",
            source,
            type(model).__name__,
            loud,
        )
    return {k: v for k, v in weights.items() if k in expected}, missing


def quantize_like(model: nn.Module, q: dict, weights: dict[str, mx.array]) -> None:
    """Quantizes the layers a quantized checkpoint stores quantized (those with `scales`), with its
    group size, bits and per-layer overrides (keyed by the converted model's paths, with or
    without the `albert.` prefix, as mlx-lm's)."""

    def predicate(path: str, module: nn.Module):
        if f"{path}.scales" not in weights:
            return False
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


def dequantize(model: nn.Module) -> nn.Module:
    """Replaces every quantized linear and embedding layer by its float equivalent (in place)."""
    for _, module in model.named_modules():
        for name, child in list(module.children().items()):
            if isinstance(child, nn.QuantizedLinear | nn.QuantizedEmbedding):
                setattr(module, name, _float_layer(child))
    return model


def _float_layer(layer: nn.Module) -> nn.Module:
    weight = mx.dequantize(
        layer.weight, layer.scales, layer.get("biases"), layer.group_size, layer.bits, mode=layer.mode
    )
    if isinstance(layer, nn.QuantizedEmbedding):
        plain = nn.Embedding(*weight.shape)
        plain.weight = weight
        return plain
    plain = nn.Linear(weight.shape[1], weight.shape[0], bias="bias" in layer)
    plain.weight = weight
    if "bias" in layer:
        plain.bias = layer.bias
    return plain


def check_finite(weights: dict[str, mx.array], source: str) -> None:
    """Refuses float weights holding NaN or infinity (a corrupt or overflowed checkpoint), naming
    them; one pass over the weights and one host sync."""
    names = [k for k, v in weights.items() if mx.issubdtype(v.dtype, mx.floating)]
    if not names:
        return
    finite = mx.stack([mx.isfinite(weights[k]).all() for k in names]).tolist()
    bad = [k for k, ok in zip(names, finite, strict=True) if not ok]
    if bad:
        raise ValueError(
            f"the weights of {source} hold NaN or infinity ({', '.join(bad[:5])}"
            f"{f' and {len(bad) - 5} more' if len(bad) > 5 else ''}): the checkpoint is corrupt or "
            "overflowed; re-download or re-convert it (or pass allow_non_finite=True to load it anyway)"
        )


@dataclass(frozen=True)
class LoadingInfo:
    """What from_pretrained found, as transformers' output_loading_info: the weights it initialised anew."""

    missing_keys: tuple[str, ...] = ()


def _quantized_bits(model: nn.Module, name: str) -> int | None:
    """The bits of a quantized layer's packed `weight` (None for float parameters)."""
    path, _, leaf = name.rpartition(".")
    if leaf != "weight":
        return None
    module = model
    for part in path.split("."):
        module = module[int(part)] if isinstance(module, list) else getattr(module, part, None)
        if module is None:
            return None
    return (
        getattr(module, "bits", None)
        if isinstance(module, nn.QuantizedLinear | nn.QuantizedEmbedding)
        else None
    )


def compute_dtype(dtype: mx.Dtype | str | None, stored: mx.Dtype | None, source: str) -> mx.Dtype | None:
    """The dtype a loaded model computes in: `dtype` when given (an mx.Dtype or its name), the
    checkpoint's own for "auto", and by default the checkpoint's, except that a half-precision
    checkpoint computes in float32 on the CPU backend, which has no fast half-precision kernels
    (GPU backends keep the checkpoint's dtype)."""
    global _told_float32
    if isinstance(dtype, str):
        if dtype == "auto":
            return stored
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {[*DTYPES, 'auto']} or an mx.Dtype, got {dtype!r}")
        return DTYPES[dtype]
    if dtype is not None:
        if dtype not in DTYPES.values():
            raise ValueError(f"dtype must be a float dtype {list(DTYPES)}, got {dtype}")
        return dtype
    if stored in _HALF and mx.default_device() == mx.cpu:
        if not _told_float32:
            _told_float32 = True
            logger.info(
                "%s stores %s weights: computing in float32 on the CPU backend (half precision has no fast "
                "kernels there); pass dtype=%r (--dtype) to keep them",
                source,
                str(stored).removeprefix("mlx.core."),
                str(stored).removeprefix("mlx.core."),
            )
        return mx.float32
    return stored


class PreTrainedMixin:
    """Loading and saving for AlbertModel and the task models (transformers' checkpoint layout)."""

    config: AlbertConfig

    @property
    def backbone(self):
        """The AlbertModel: a task model's `albert`, or the bare model itself."""
        return self["albert"] if "albert" in self else self

    @property
    def dtype(self) -> mx.Dtype:
        """The float dtype of the weights (of the embeddings' LayerNorm, never quantized)."""
        return self.backbone.embeddings.norm.weight.dtype

    def num_parameters(self) -> int:
        """Parameters of the model as transformers counts them: quantized weights count as the float
        matrix they stand for (their scales and biases are not parameters of the model)."""
        total = 0
        for name, value in tree_flatten(self.parameters()):
            if name.endswith((".scales", ".biases")):
                continue
            bits = _quantized_bits(self, name)
            total += value.size * 32 // bits if bits else value.size
        return total

    @classmethod
    def from_pretrained(
        cls: type[M],
        path_or_repo_id: str | os.PathLike | Checkpoint,
        *,
        dtype: mx.Dtype | str | None = None,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        lazy: bool = False,
        allow_non_finite: bool = False,
        quiet: Iterable[str] = (),
        **config_changes,
    ) -> M:
        """Loads a transformers or mlx_albert checkpoint folder, or a Hub repo id.

        Args:
            path_or_repo_id: a folder with config.json + weights, "org/name" on the Hub, a shipped
                model's short name, or a Checkpoint already opened (hub.Checkpoint.open).
            dtype: compute dtype: an mx.Dtype or its name ("float32", "float16", "bfloat16"), or
                "auto" for the checkpoint's; default: the checkpoint's, but float32 for a
                half-precision checkpoint on the CPU backend (its half-precision kernels are slow).
            revision, cache_dir: passed to huggingface_hub for repo ids.
            lazy: leave weights unevaluated (memory-mapped until first use; not checked for NaN).
            allow_non_finite: load weights holding NaN or infinity (refused by default: every
                answer of such a model would be NaN).
            quiet: names of weights the checkpoint may lack without a warning (an adapter holds
                them, or the caller never uses them); they are still in loading_info.missing_keys.
            **config_changes: AlbertConfig fields to override, e.g. num_labels=3.

        Raises:
            FileNotFoundError: folder/repo, config.json or weights not found.
            ValueError: corrupt files, or weights that do not fit the config.
        """
        checkpoint = Checkpoint.open(path_or_repo_id, revision, cache_dir)
        folder, config, source = checkpoint.folder, checkpoint.config, checkpoint.source
        weights, unknown = hf_to_mlx(read_weights(folder))
        if unknown:
            raise ValueError(
                f"{folder} holds weights that are not ALBERT's: {escape(str(sorted(unknown)[:10]))}"
            )
        check_config(config, weights, source)
        if not (lazy or allow_non_finite):
            check_finite(weights, source)
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
        weights = _align_prefix(weights, "albert" in model)
        if config.quantization:
            quantize_like(model, config.quantization, weights)
        weights, missing = match_weights(model, weights, source, frozenset(quiet))
        # Not a list attribute: mlx.nn.Module would take a list for a child module.
        model.loading_info = LoadingInfo(missing_keys=tuple(missing))
        # the checkpoint's float dtype: its embeddings' LayerNorm (never quantized); new heads take it
        stored = next((v.dtype for k, v in weights.items() if k.endswith("embeddings.norm.weight")), None)
        dtype = compute_dtype(dtype, stored, source)
        model.update(tree_unflatten(list(weights.items())))
        if dtype is not None:
            model.set_dtype(dtype)
        model.eval()
        if not lazy:
            mx.eval(model.parameters())
        return model

    def save_pretrained(self, path: str | os.PathLike) -> None:
        """Writes config.json + model.safetensors with transformers' names, replacing any earlier
        weight files (shards, index, .bin). A folder of files is rebuilt beside `path` and swapped in
        as one step, so a kill leaves the old model or the new one, never a mix; a folder holding
        sub-folders (a training run) gets each file replaced atomically, weights first."""
        path = Path(path)
        weights = mlx_to_hf(dict(tree_flatten(self.parameters())))
        config = self.config.replace(architectures=[type(self).__name__]).to_hf()
        config["torch_dtype"] = str(self.dtype).removeprefix("mlx.core.")
        # "pt" layout: transformers reads unquantized files directly.
        fmt = "mlx" if self.config.quantization else "pt"

        def write(folder: Path) -> None:
            write_safetensors(folder / "model.safetensors", weights, {"format": fmt})
            write_json(folder / "config.json", config)

        if path.is_dir() and any(p.is_dir() for p in path.iterdir()):
            clean_stale(path)  # (staged_folder cleans for the other case)
            write(path)
            for stale in stale_weight_files(path):
                stale.unlink(missing_ok=True)
            return
        with staged_folder(path) as tmp:
            replaced = {"model.safetensors", "config.json"} | {p.name for p in stale_weight_files(path)}
            for item in path.iterdir() if path.is_dir() else ():
                if item.name not in replaced and item.is_file():  # keep the folder's other files
                    try:
                        os.link(item, tmp / item.name)
                    except OSError:
                        shutil.copy2(item, tmp / item.name)
            write(tmp)
