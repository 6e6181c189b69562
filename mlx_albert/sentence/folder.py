"""A sentence-transformers folder read as untrusted input: modules.json and each module's config in
both layouts found on the Hub (sentence_transformers.models.* with pooling_mode_* flags, and the
module paths and pooling_mode key of sentence-transformers 5/6), sentence_bert_config.json and
config_sentence_transformers.json. A module this library does not implement is refused by name:
it would give other vectors than sentence-transformers' encode."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..checks import integer_in
from ..files import read_json
from ..text import escape

# Pooling modes in sentence-transformers' order (legacy flags, and the concatenation order).
POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
_LEGACY_FLAGS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
# torch activation classes a Dense module may name -> ours (activations.ACTIVATIONS names, or identity)
DENSE_ACTIVATIONS = {
    "Tanh": "tanh",
    "Identity": "identity",
    "ReLU": "relu",
    "Sigmoid": "sigmoid",
    "GELU": "gelu",
    "SiLU": "silu",
}
MODULES = ("Transformer", "Pooling", "Dense", "Normalize")
SIMILARITIES = ("cosine", "dot")


@dataclass(frozen=True)
class Dense:
    """A sentence-transformers Dense module: activation(W x + b), its weights in `folder`."""

    folder: Path
    in_features: int
    out_features: int
    bias: bool = True
    activation: str = "tanh"


@dataclass(frozen=True)
class SentenceConfig:
    """What a sentence-transformers folder says about turning token states into a vector."""

    transformer: Path  # the folder holding the ALBERT checkpoint (config.json, weights, tokenizer)
    pooling: tuple[str, ...] = ("mean",)  # modes, concatenated in this order
    include_prompt: bool = True
    steps: tuple[Dense | str, ...] = ()  # after pooling, in order: Dense modules and "normalize"
    max_seq_length: int | None = None  # sentence_bert_config.json's (else the tokenizer's)
    do_lower_case: bool = False
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None
    similarity: str = "cosine"

    @property
    def normalize(self) -> bool:
        return "normalize" in self.steps


def _kind(type_name, where: Path) -> str:
    name = str(type_name)
    kind = name.rsplit(".", 1)[-1]
    if not name.startswith("sentence_transformers.") or kind not in MODULES:
        raise ValueError(
            f"{where} uses the module {escape(name)[:120]!r}, which mlx_albert does not implement "
            f"(it reads {', '.join(MODULES)}): refusing it rather than giving other vectors than "
            "sentence-transformers"
        )
    return kind


def _pooling(config: dict, where: Path) -> tuple[tuple[str, ...], bool]:
    if not isinstance(config, dict):
        raise ValueError(f"{where} must hold a JSON object")
    mode = config.get("pooling_mode")
    if mode is None:  # the older flags, in sentence-transformers' order; none set means mean
        modes = tuple(m for flag, m in _LEGACY_FLAGS.items() if config.get(flag)) or ("mean",)
    else:
        modes = (mode,) if isinstance(mode, str) else tuple(mode) if isinstance(mode, list) else ()
    unknown = [m for m in modes if not isinstance(m, str) or m not in POOLING_MODES]
    if not modes or unknown or len(set(modes)) != len(modes):
        raise ValueError(
            f"{where}: pooling mode {escape(str(mode))[:80]} is not one of {POOLING_MODES}, or some of them "
            "each once"
        )
    include_prompt = config.get("include_prompt", True)
    if not isinstance(include_prompt, bool):
        raise ValueError(
            f"{where}: include_prompt must be true or false, got {escape(str(include_prompt))[:40]}"
        )
    return modes, include_prompt


def _dense(folder: Path, where: Path) -> Dense:
    config = read_json(where, "Dense config")
    if not isinstance(config, dict):
        raise ValueError(f"{where} must hold a JSON object")
    activation = str(config.get("activation_function", "torch.nn.modules.activation.Tanh"))
    name = activation.rsplit(".", 1)[-1]
    if not activation.startswith("torch.") or name not in DENSE_ACTIVATIONS:
        raise ValueError(
            f"{where}: the Dense activation {escape(activation)[:80]!r} is not one mlx_albert implements "
            f"({sorted(DENSE_ACTIVATIONS)})"
        )
    sizes = [config.get(k) for k in ("in_features", "out_features")]
    if not all(integer_in(n, 1, 1 << 20) for n in sizes) or not isinstance(config.get("bias", True), bool):
        raise ValueError(
            f"{where}: in_features and out_features must be positive integers, bias true or false"
        )
    return Dense(folder, sizes[0], sizes[1], bool(config.get("bias", True)), DENSE_ACTIVATIONS[name])


def _module_folder(root: Path, module: dict, modules_path: Path) -> Path:
    path = module.get("path", "")
    if not isinstance(path, str) or path.startswith(("/", "\\")) or ".." in Path(path).parts:
        raise ValueError(f"{modules_path}: module path {escape(str(path))[:80]!r} leaves the model folder")
    return root / path


def read_sentence_config(root: Path) -> SentenceConfig | None:
    """The sentence-transformers modules of a folder (None when it has no modules.json)."""
    modules_path = root / "modules.json"
    if not modules_path.is_file():
        return None
    modules = read_json(modules_path, "modules.json")
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise ValueError(f"{modules_path} must hold a list of module objects")
    modules = sorted(modules, key=lambda m: m.get("idx", 0) if isinstance(m.get("idx"), int) else 0)
    kinds = [_kind(m.get("type"), modules_path) for m in modules]
    if kinds[:2] != ["Transformer", "Pooling"] or kinds[2:].count("Pooling") or "Transformer" in kinds[1:]:
        raise ValueError(
            f"{modules_path}: expected a Transformer, then a Pooling module, then Dense/Normalize ones; "
            f"found {kinds}"
        )
    transformer = _module_folder(root, modules[0], modules_path)
    bert = transformer / "sentence_bert_config.json"
    bert_config = read_json(bert, "sentence_bert_config.json") if bert.is_file() else {}
    pooling_folder = _module_folder(root, modules[1], modules_path)
    modes, include_prompt = _pooling(
        read_json(pooling_folder / "config.json", "Pooling config"), pooling_folder
    )
    steps: list[Dense | str] = []
    for module, kind in zip(modules[2:], kinds[2:], strict=True):
        folder = _module_folder(root, module, modules_path)
        steps.append(_dense(folder, folder / "config.json") if kind == "Dense" else "normalize")
    extra_path = root / "config_sentence_transformers.json"
    extra = read_json(extra_path, "config_sentence_transformers.json") if extra_path.is_file() else {}
    if not isinstance(extra, dict) or not isinstance(bert_config, dict):
        raise ValueError(f"{extra_path} and {bert} must hold JSON objects")
    prompts, default = _prompts(extra, extra_path)
    similarity = extra.get("similarity_fn_name") or "cosine"
    if similarity not in SIMILARITIES:
        raise ValueError(
            f"{extra_path}: similarity_fn_name {escape(str(similarity))[:40]!r} is not one mlx_albert "
            f"implements ({', '.join(SIMILARITIES)})"
        )
    length, lower = bert_config.get("max_seq_length"), bert_config.get("do_lower_case", False)
    if (length is not None and not integer_in(length, 1, 1 << 20)) or not isinstance(lower, bool):
        raise ValueError(
            f"{bert}: max_seq_length must be a positive integer and do_lower_case true or false, got "
            f"{escape(str(length))[:20]} and {escape(str(lower))[:20]}"
        )
    return SentenceConfig(
        transformer=transformer,
        pooling=modes,
        include_prompt=include_prompt,
        steps=tuple(steps),
        max_seq_length=length,
        do_lower_case=lower,
        prompts=prompts,
        default_prompt_name=default,
        similarity=similarity,
    )


def _prompts(extra: dict, where: Path) -> tuple[dict[str, str], str | None]:
    """prompts ({name: text}) and default_prompt_name (one of them, or null), checked."""
    prompts = extra.get("prompts") or {}
    if not isinstance(prompts, dict) or not all(isinstance(v, str) for v in prompts.values()):
        raise ValueError(f"{where}: prompts must be an object of prompt names and their texts")
    default = extra.get("default_prompt_name")
    if default is not None and (not isinstance(default, str) or default not in prompts):
        raise ValueError(
            f"{where}: default_prompt_name {escape(str(default))[:40]!r} is not one of its prompts "
            f"{escape(str(sorted(prompts)))[:200]}"
        )
    return {str(k): v for k, v in prompts.items()}, default


def check_widths(config: SentenceConfig, hidden_size: int) -> None:
    """Each Dense module takes what the step before it gives (the pooled width, then the previous
    Dense's out_features): refused at load naming the module's config.json, not at the first encode."""
    width, before = hidden_size * len(config.pooling), "the pooling"
    for step in config.steps:
        if isinstance(step, Dense):
            if step.in_features != width:
                raise ValueError(
                    f"{step.folder / 'config.json'}: in_features is {step.in_features}, but {before} gives "
                    f"{width} values: this Dense module belongs to another model"
                )
            width, before = step.out_features, f"{step.folder.name} before it"


# -- writing a folder -------------------------------------------------------------------------------
_TORCH_ACTIVATIONS = {ours: theirs for theirs, ours in DENSE_ACTIVATIONS.items()}


def save_sentence_folder(encoder, path: Path) -> None:
    """Writes `encoder` as a sentence-transformers folder in the layout both sentence-transformers 5
    and 6 read (the model and tokenizer at the root, 1_Pooling with pooling_mode_* flags, then Dense
    and Normalize modules), assembled beside `path` and moved into place whole."""
    import numpy as np
    from safetensors.numpy import save_file

    from ..files import staged_folder
    from ..weights import write_json

    head = encoder.head
    if "pooler" in head.modes or list(head.modes) != [m for m in POOLING_MODES if m in head.modes]:
        raise ValueError(
            f"pooling {'+'.join(head.modes)} has no sentence-transformers equivalent (ALBERT's pooler, or "
            "modes out of sentence-transformers' order): choose pooling from {POOLING_MODES} in that order"
        )
    with staged_folder(path) as tmp:
        encoder.backbone.save_pretrained(tmp)
        encoder.tokenizer.save_pretrained(tmp)
        hidden = encoder.backbone.config.hidden_size
        pooling = {flag: mode in head.modes for flag, mode in _LEGACY_FLAGS.items()}
        (tmp / "1_Pooling").mkdir()
        pooling.update(word_embedding_dimension=hidden, include_prompt=head.include_prompt)
        write_json(tmp / "1_Pooling" / "config.json", pooling)
        modules = [("", "Transformer"), ("1_Pooling", "Pooling")]
        layers = iter(head.dense)
        for step in head.steps:
            folder = tmp / f"{len(modules)}_{'Normalize' if step == 'normalize' else 'Dense'}"
            folder.mkdir()
            if step == "normalize":
                modules.append((folder.name, "Normalize"))
                continue
            layer = next(layers)
            out_features, in_features = layer.weight.shape
            kind = "linear" if step == "identity" else "activation"
            write_json(folder / "config.json", {
                "in_features": in_features, "out_features": out_features, "bias": "bias" in layer,
                "activation_function": f"torch.nn.modules.{kind}.{_TORCH_ACTIVATIONS[step]}",
            })  # fmt: skip
            weights = {f"linear.{k}": np.array(v, np.float32) for k, v in layer.parameters().items()}
            save_file(weights, str(folder / "model.safetensors"))
            modules.append((folder.name, "Dense"))
        write_json(tmp / "modules.json", [
            {"idx": i, "name": str(i), "path": p, "type": f"sentence_transformers.models.{kind}"}
            for i, (p, kind) in enumerate(modules)
        ])  # fmt: skip
        bert = {"max_seq_length": encoder.max_seq_length, "do_lower_case": encoder.do_lower_case}
        write_json(tmp / "sentence_bert_config.json", bert)
        write_json(tmp / "config_sentence_transformers.json", {
            "prompts": encoder.prompts, "default_prompt_name": encoder.default_prompt_name,
            "similarity_fn_name": encoder.similarity_fn_name,
        })  # fmt: skip
