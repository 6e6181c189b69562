"""sentence-transformers folders around the tiny ALBERT, in both layouts found on the Hub, written
without sentence-transformers: the older one (sentence_transformers.models.* types, pooling_mode_*
flags, sentence_bert_config.json with max_seq_length, a Dense module's pytorch_model.bin-era
layout) and the current one (sentence-transformers 5/6 module paths, a pooling_mode key, the
Dense weights in model.safetensors)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

TINY = Path(__file__).parent.parent / "models" / "tiny-albert"
HIDDEN = 64
LEGACY_FLAGS = {
    "cls": "pooling_mode_cls_token",
    "max": "pooling_mode_max_tokens",
    "mean": "pooling_mode_mean_tokens",
    "mean_sqrt_len_tokens": "pooling_mode_mean_sqrt_len_tokens",
    "weightedmean": "pooling_mode_weightedmean_tokens",
    "lasttoken": "pooling_mode_lasttoken",
}
OLD = {
    "Transformer": "sentence_transformers.models.Transformer",
    "Pooling": "sentence_transformers.models.Pooling",
    "Dense": "sentence_transformers.models.Dense",
    "Normalize": "sentence_transformers.models.Normalize",
}
NEW = {
    "Transformer": "sentence_transformers.base.modules.transformer.Transformer",
    "Pooling": "sentence_transformers.sentence_transformer.modules.pooling.Pooling",
    "Dense": "sentence_transformers.base.modules.dense.Dense",
    "Normalize": "sentence_transformers.base.modules.normalize.Normalize",
}


def write(
    folder: Path,
    modes: tuple[str, ...] = ("mean",),
    layout: str = "new",
    dense: int | None = None,
    activation: str = "Tanh",
    normalize: bool = False,
    include_prompt: bool = True,
    max_seq_length: int = 64,
    prompts: dict | None = None,
) -> Path:
    """A sentence-transformers folder: the tiny ALBERT at its root, then Pooling(modes), an
    optional Dense(HIDDEN * len(modes) -> dense) with `activation`, an optional Normalize."""
    folder.mkdir(parents=True)
    for item in TINY.iterdir():
        shutil.copy(item, folder / item.name)
    types = OLD if layout == "old" else NEW
    modules = [{"idx": 0, "name": "0", "path": "", "type": types["Transformer"]}]
    width = HIDDEN * len(modes)
    pooling = folder / "1_Pooling"
    pooling.mkdir()
    if layout == "old":
        config = {flag: mode in modes for mode, flag in LEGACY_FLAGS.items()}
        config.update(word_embedding_dimension=HIDDEN, include_prompt=include_prompt)
        order = [m for m in LEGACY_FLAGS if m in modes]  # the flags fix the concatenation order
        assert tuple(order) == tuple(modes), "the old layout concatenates in its own order"
        (folder / "sentence_bert_config.json").write_text(
            json.dumps({"max_seq_length": max_seq_length, "do_lower_case": False})
        )
    else:
        config = {"embedding_dimension": HIDDEN, "pooling_mode": modes[0] if len(modes) == 1 else list(modes)}
        config["include_prompt"] = include_prompt
        tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
        tokenizer_config["model_max_length"] = max_seq_length  # where sentence-transformers 6 keeps it
        (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    (pooling / "config.json").write_text(json.dumps(config))
    modules.append({"idx": 1, "name": "1", "path": "1_Pooling", "type": types["Pooling"]})
    if dense:
        path = folder / "2_Dense"
        path.mkdir()
        name = {"Tanh": "activation.Tanh", "Identity": "linear.Identity", "ReLU": "activation.ReLU"}[
            activation
        ]
        (path / "config.json").write_text(
            json.dumps(
                {
                    "in_features": width,
                    "out_features": dense,
                    "bias": True,
                    "activation_function": f"torch.nn.modules.{name}",
                }
            )
        )
        rng = np.random.default_rng(len(modes) + dense)
        weights = {
            "linear.weight": rng.normal(0, 0.3, (dense, width)).astype(np.float32),
            "linear.bias": rng.normal(0, 0.1, (dense,)).astype(np.float32),
        }
        save_file(weights, str(path / "model.safetensors"))
        modules.append({"idx": 2, "name": "2", "path": "2_Dense", "type": types["Dense"]})
    if normalize:
        (folder / "3_Normalize").mkdir()
        modules.append(
            {
                "idx": len(modules),
                "name": str(len(modules)),
                "path": "3_Normalize",
                "type": types["Normalize"],
            }
        )
    (folder / "modules.json").write_text(json.dumps(modules))
    if prompts:
        extra = {"prompts": prompts, "default_prompt_name": None, "similarity_fn_name": "cosine"}
        (folder / "config_sentence_transformers.json").write_text(json.dumps(extra))
    return folder
