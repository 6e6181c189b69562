"""AlbertConfig: the options of Bumblebee.Text.Albert (v0.5.3) with their defaults, and the one
translation table to and from a Hugging Face transformers `config.json`."""

from __future__ import annotations

import dataclasses
import difflib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .activations import ACTIVATIONS
from .checks import integer_in
from .files import read_json
from .text import escape

logger = logging.getLogger(__name__)

# (our option, transformers config.json key) — the one translation table, read both ways.
HF_NAMES: tuple[tuple[str, str], ...] = (
    ("vocab_size", "vocab_size"),
    ("max_positions", "max_position_embeddings"),
    ("max_token_types", "type_vocab_size"),
    ("embedding_size", "embedding_size"),
    ("hidden_size", "hidden_size"),
    ("num_blocks", "num_hidden_layers"),
    ("num_groups", "num_hidden_groups"),
    ("block_depth", "inner_group_num"),
    ("num_attention_heads", "num_attention_heads"),
    ("intermediate_size", "intermediate_size"),
    ("activation", "hidden_act"),
    ("dropout_rate", "hidden_dropout_prob"),
    ("attention_dropout_rate", "attention_probs_dropout_prob"),
    ("classifier_dropout_rate", "classifier_dropout_prob"),
    ("layer_norm_epsilon", "layer_norm_eps"),
    ("initializer_scale", "initializer_range"),
    ("output_hidden_states", "output_hidden_states"),
    ("output_attentions", "output_attentions"),
    ("pad_token_id", "pad_token_id"),
    ("problem_type", "problem_type"),
    ("architectures", "architectures"),
)
# Upper bounds that no real checkpoint reaches and that keep a hostile config.json from allocating
# terabytes or building a graph of a billion layers: ids are int32, layers are run one by one.
MAX_SIZE = 2**31 - 1
MAX_LAYERS = 1024  # num_blocks * block_depth (ALBERT-xxlarge runs 12)
MAX_LABELS = 1 << 20  # classifier rows: real label sets have at most thousands
# transformers' PretrainedConfig keys: known, carried in `extra` without a warning.
_HF_COMMON = {
    "bos_token_id",
    "eos_token_id",
    "sep_token_id",
    "cls_token_id",
    "mask_token_id",
    "unk_token_id",
    "is_decoder",
    "add_cross_attention",
    "chunk_size_feed_forward",
    "torchscript",
    "pruned_heads",
    "tokenizer_class",
    "finetuning_task",
    "task_specific_params",
    "use_cache",
    "_name_or_path",
    "_attn_implementation",
    "_attn_implementation_autoset",
    "gradient_checkpointing",
    "prefix",
    "decoder_start_token_id",
    "output_scores",
    "return_dict_in_generate",
    "cross_attention_hidden_size",
    "tie_encoder_decoder",
    "is_encoder_decoder",
    "down_scale_factor",
    "gap_size",
    "net_structure_type",
    "num_memory_blocks",
    "_commit_hash",
    "base_model",
    "quantization_config",
}
SIZES = (  # positive integer options
    "vocab_size",
    "max_positions",
    "max_token_types",
    "embedding_size",
    "hidden_size",
    "num_blocks",
    "num_groups",
    "block_depth",
    "num_attention_heads",
    "intermediate_size",
    "num_labels",
)
PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")
# transformers keys that carry no meaning here and are regenerated on export.
_HF_IGNORED = {
    "model_type",
    "transformers_version",
    "torch_dtype",
    "dtype",
    "id2label",
    "label2id",
    "num_labels",
    "position_embedding_type",
    "tie_word_embeddings",
    "return_dict",
}


@dataclass
class AlbertConfig:
    """ALBERT hyper-parameters, named as in Bumblebee.Text.Albert (see README for the HF names)."""

    vocab_size: int = 30000  # token embedding rows
    max_positions: int = 512  # position embedding rows = longest sequence
    max_token_types: int = 2  # segment embedding rows
    embedding_size: int = 128  # factorised embedding width (E), projected to hidden_size
    hidden_size: int = 768  # transformer width (H)
    num_blocks: int = 12  # encoder blocks run, each block_depth transformer layers deep
    num_groups: int = 1  # groups of blocks; blocks of one group share parameters
    block_depth: int = 1  # transformer layers inside each block
    num_attention_heads: int = 12
    intermediate_size: int = 16384  # FFN width
    activation: str = "gelu"  # FFN and MLM-head activation (see activations.ACTIVATIONS)
    dropout_rate: float = 0.0  # embeddings and encoder
    attention_dropout_rate: float = 0.0  # attention probabilities
    classifier_dropout_rate: float | None = None  # task heads; None -> dropout_rate
    layer_norm_epsilon: float = 1e-12
    initializer_scale: float = 0.02  # std of the normal initialiser for new weights
    output_hidden_states: bool = False
    output_attentions: bool = False
    num_labels: int = 2  # classifier width (sequence/token classification, QA, SOP)
    id_to_label: dict[int, str] = field(default_factory=dict)
    # What transformers checkpoints also carry:
    label_to_id: dict[str, int] = field(default_factory=dict)
    pad_token_id: int | None = 0
    problem_type: str | None = None  # regression | single_label_classification | multi_label_...
    architectures: list[str] | None = None
    quantization: dict | None = None  # {"group_size": g, "bits": b[, layer path: {"bits": b}]} if quantized
    extra: dict[str, Any] = field(default_factory=dict)  # other config.json keys, kept for export

    def __post_init__(self):
        self.id_to_label = {int(k): str(v) for k, v in self.id_to_label.items()}
        if self.id_to_label and not self.label_to_id:
            self.label_to_id = {v: k for k, v in self.id_to_label.items()}
        for name in SIZES:
            value = getattr(self, name)
            if not integer_in(value, 1, MAX_SIZE):
                raise ValueError(
                    f"AlbertConfig.{name} must be a positive integer up to {MAX_SIZE}, got {str(value)[:40]}"
                )
        if self.num_labels > MAX_LABELS:
            raise ValueError(
                f"AlbertConfig.num_labels ({self.num_labels}) is past the limit of {MAX_LABELS} labels: "
                "check num_labels (and id2label) in config.json"
            )
        if self.num_blocks * self.block_depth > MAX_LAYERS:
            raise ValueError(
                f"AlbertConfig.num_blocks x block_depth = {self.num_blocks * self.block_depth} layers is "
                f"past the limit of {MAX_LAYERS}: check num_hidden_layers and inner_group_num"
            )
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"AlbertConfig.hidden_size ({self.hidden_size}) must be divisible by "
                f"num_attention_heads ({self.num_attention_heads})"
            )
        if self.num_blocks % self.num_groups:
            raise ValueError(
                f"AlbertConfig.num_blocks ({self.num_blocks}) must be divisible by num_groups "
                f"({self.num_groups}): each group shares the parameters of num_blocks/num_groups blocks"
            )
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"AlbertConfig.activation {self.activation!r} is unknown; use one of {sorted(ACTIVATIONS)}"
            )
        for name in ("dropout_rate", "attention_dropout_rate", "classifier_dropout_rate"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value < 1.0:
                raise ValueError(f"AlbertConfig.{name} must be in [0, 1), got {value!r}")
        for name in ("layer_norm_epsilon", "initializer_scale"):
            if not getattr(self, name) > 0:
                raise ValueError(f"AlbertConfig.{name} must be > 0, got {getattr(self, name)!r}")
        if self.id_to_label and sorted(self.id_to_label) != list(range(self.num_labels)):
            raise ValueError(
                f"AlbertConfig.id_to_label keys {sorted(self.id_to_label)} must be "
                f"0..num_labels-1 (num_labels={self.num_labels})"
            )
        if self.problem_type is not None and self.problem_type not in PROBLEM_TYPES:
            raise ValueError(
                f"AlbertConfig.problem_type {self.problem_type!r} must be one of {PROBLEM_TYPES} or None"
            )
        if self.pad_token_id is not None and not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(
                f"AlbertConfig.pad_token_id ({self.pad_token_id}) must be in "
                f"[0, vocab_size={self.vocab_size})"
            )
        if self.quantization is not None:
            _check_quantization(self.quantization)
        _check_memory(self)

    def parameter_count(self) -> int:
        """Parameters of the largest model these sizes build (embeddings, the shared layers, a pooler
        and the larger of the MLM and classifier heads): known before anything is allocated."""
        return sum(_parameters(self).values())

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def num_layers(self) -> int:
        """Transformer layers run in one forward pass (num_blocks x block_depth)."""
        return self.num_blocks * self.block_depth

    @property
    def classifier_dropout(self) -> float:
        return self.dropout_rate if self.classifier_dropout_rate is None else self.classifier_dropout_rate

    def replace(self, **changes) -> "AlbertConfig":
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_hf(cls, hf: dict[str, Any]) -> "AlbertConfig":
        """Reads a transformers `config.json` dict (unknown keys are kept in `extra`)."""
        if not isinstance(hf, dict):
            raise ValueError(f"config.json must hold a JSON object, got a {type(hf).__name__}")
        if hf.get("model_type", "albert") != "albert":
            raise ValueError(f"config.json has model_type {escape(str(hf['model_type']))!r}, not 'albert'")
        ours = {name: hf[key] for name, key in HF_NAMES if key in hf}
        id2label = hf.get("id2label") or {}
        label2id = hf.get("label2id") or {}
        if not isinstance(id2label, dict) or not isinstance(label2id, dict):
            raise ValueError("config.json: id2label and label2id must be objects")
        try:
            ours["num_labels"] = int(hf.get("num_labels") or len(id2label) or 2)
            id2label = {int(k): v for k, v in id2label.items()}
            label2id = {str(k): int(v) for k, v in label2id.items()}
        except (TypeError, ValueError, OverflowError):
            raise ValueError(
                "config.json: num_labels, id2label keys and label2id values must be integers"
            ) from None
        # transformers writes LABEL_i names when none were given: keep only real names.
        if any(str(v) != f"LABEL_{k}" for k, v in id2label.items()):
            ours["id_to_label"] = id2label
            ours["label_to_id"] = label2id
        if "quantization" in hf:
            if not isinstance(hf["quantization"], dict):
                raise ValueError("config.json: quantization must be an object")
            ours["quantization"] = dict(hf["quantization"])
        known = {key for _, key in HF_NAMES} | _HF_IGNORED | {"quantization"}
        ours["extra"] = {k: v for k, v in hf.items() if k not in known}
        for key in sorted(set(ours["extra"]) - _HF_COMMON):
            near = difflib.get_close_matches(key, sorted(known | _HF_COMMON), n=1, cutoff=0.75)
            logger.warning(
                "config.json: unknown key %r is ignored%s",
                escape(key),
                f" (did you mean {near[0]!r}?)" if near else "",
            )
        try:
            return cls(**ours)
        except TypeError as e:  # a value of the wrong type in a comparison
            raise ValueError(f"config.json holds a value of the wrong type ({e})") from None

    def to_hf(self) -> dict[str, Any]:
        """A transformers `config.json` dict (transformers' AlbertConfig loads it)."""
        hf: dict[str, Any] = {"model_type": "albert"}
        hf.update(self.extra)
        for name, key in HF_NAMES:
            value = getattr(self, name)
            if value is not None or name == "classifier_dropout_rate":
                hf[key] = value
        if hf["classifier_dropout_prob"] is None:  # transformers' AlbertConfig wants a number
            hf["classifier_dropout_prob"] = self.dropout_rate
        names = self.id_to_label or {i: f"LABEL_{i}" for i in range(self.num_labels)}
        hf["id2label"] = {str(i): names[i] for i in sorted(names)}
        hf["label2id"] = self.label_to_id or {v: i for i, v in names.items()}
        if self.quantization:
            hf["quantization"] = dict(self.quantization)
        return hf

    @classmethod
    def from_json(cls, path: str | Path) -> "AlbertConfig":
        path = Path(path)
        try:  # a regular file, read within a bound: never a device or a pipe (untrusted folders)
            data = read_json(path, "config.json")
        except FileNotFoundError:
            raise FileNotFoundError(f"{path} not found: a checkpoint folder needs its config.json") from None
        except ValueError as e:
            raise ValueError(f"{e}; re-download or re-convert the checkpoint") from None
        try:
            return cls.from_hf(data)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None


def _parameters(c: AlbertConfig) -> dict[str, int]:
    """Parameter count per the option that sizes it (the largest term names what to check)."""
    e, h, i, layers = c.embedding_size, c.hidden_size, c.intermediate_size, c.num_groups * c.block_depth
    return {
        "vocab_size": c.vocab_size * (e + 1) + h * e,  # token embeddings (tied decoder) and its bias
        "max_positions": c.max_positions * e,
        "max_token_types": c.max_token_types * e,
        "embedding_size": 4 * e + e * h + h,
        "hidden_size": layers * (4 * h * h + 9 * h) + h * h + h,  # attention, norms and the pooler
        "intermediate_size": layers * (2 * h * i + i),  # the feed-forward layers
        "num_labels": c.num_labels * (h + 1),
    }


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _check_memory(config: AlbertConfig) -> None:
    """Refuses sizes whose float32 weights alone would not fit this machine's memory (a config.json
    could otherwise ask for terabytes, and the process die without a message when it is built)."""
    memory, terms = _physical_memory(), _parameters(config)
    need = 4 * sum(terms.values())
    if memory is None or need <= memory:
        return
    largest = max(terms, key=terms.get)
    raise ValueError(
        f"AlbertConfig: these sizes make a model of {need / 4:.3g} parameters ({need / 2**30:.1f} GiB in "
        f"float32), more than this machine's {memory / 2**30:.1f} GiB of memory; most of it from "
        f"{largest}={getattr(config, largest)}: check it in config.json"
    )


def _check_quantization(quantization: dict) -> None:
    """group_size, bits, mode; plus, as mlx-lm, per-layer overrides {path: {"bits", "group_size"}}."""
    keys = {"group_size", "bits", "mode"}
    bad = [
        k for k, v in quantization.items() if k not in keys and not (isinstance(v, dict) and set(v) <= keys)
    ]
    if bad:
        raise ValueError(
            f"AlbertConfig.quantization {quantization} may only hold group_size, bits, mode and per-layer "
            f"{{bits, group_size}} overrides; not {bad}"
        )
