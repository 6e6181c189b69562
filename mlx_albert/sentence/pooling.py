"""From token states to one vector per text, as sentence-transformers computes it: its pooling modes
(cls, max, mean, mean_sqrt_len_tokens, weightedmean, lasttoken; several are concatenated), prompt
tokens left out when include_prompt is false, then Dense layers and Normalize in the folder's order.
Also ALBERT's own "pooler" (tanh of a dense layer on [CLS])."""

from __future__ import annotations

from collections.abc import Callable

import mlx.core as mx
import mlx.nn as nn

from ..activations import ACTIVATIONS
from ..weights import weight_files
from .folder import POOLING_MODES, Dense, SentenceConfig

MODES = (*POOLING_MODES, "pooler")


def pool(
    states: mx.array,
    mask: mx.array,
    modes: tuple[str, ...],
    prompt_length: int = 0,
    pooler: Callable[[mx.array], mx.array] | None = None,
) -> mx.array:
    """(N, L, H) token states and their (N, L) mask (right padded) -> (N, H * len(modes)) in float32.
    With prompt_length, the first prompt_length positions ([CLS] and the prompt) are left out."""
    states = states.astype(mx.float32)
    mask = mask.astype(mx.float32)
    if prompt_length:
        mask = mask * (mx.arange(mask.shape[1]) >= prompt_length)
    weights = mask[..., None]  # (N, L, 1)
    positions = mx.arange(mask.shape[1])
    parts = []
    for mode in modes:
        if mode == "cls":  # the first position pooled (after the prompt when it is left out)
            first = mx.argmax(mask, axis=1)
            parts.append(mx.take_along_axis(states, first[:, None, None], axis=1)[:, 0])
        elif mode == "pooler":
            if pooler is None:
                raise ValueError("this model has no pooler: use pooling='cls' or 'mean'")
            parts.append(pooler(states[:, 0]).astype(mx.float32))
        elif mode == "max":  # sentence-transformers masks with -1e9 (finite when nothing is left)
            parts.append(mx.where(weights > 0, states, -1e9).max(axis=1))
        elif mode in ("mean", "mean_sqrt_len_tokens"):
            count = mx.maximum(weights.sum(axis=1), 1e-9)
            parts.append((states * weights).sum(axis=1) / (count if mode == "mean" else mx.sqrt(count)))
        elif mode == "weightedmean":  # position i (from 1) weighs i
            w = weights * (positions + 1).astype(mx.float32)[None, :, None]
            parts.append((states * w).sum(axis=1) / mx.maximum(w.sum(axis=1), 1e-9))
        elif mode == "lasttoken":
            last = mask.shape[1] - 1 - mx.argmax(mask[:, ::-1], axis=1)
            parts.append(mx.take_along_axis(states, last[:, None, None], axis=1)[:, 0])
        else:
            raise ValueError(f"pooling must be one of {MODES}, got {mode!r}")
    return parts[0] if len(parts) == 1 else mx.concatenate(parts, axis=-1)


def normalize(x: mx.array) -> mx.array:
    """x / max(|x|, 1e-12) over the last axis (torch's F.normalize, sentence-transformers' Normalize)."""
    return x / mx.maximum(mx.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


class SentenceHead(nn.Module):
    """Pooling, then the folder's Dense layers and Normalize in order."""

    def __init__(self, modes: tuple[str, ...], include_prompt: bool = True, steps: tuple = ()):
        super().__init__()
        unknown = [m for m in modes if m not in MODES]
        if not modes or unknown:
            raise ValueError(f"pooling must be one of {MODES}, got {unknown or modes!r}")
        self.modes, self.include_prompt = tuple(modes), include_prompt
        self.steps = [s if s == "normalize" else s.activation for s in steps]  # what runs, in order
        self.dense = [
            nn.Linear(s.in_features, s.out_features, bias=s.bias) for s in steps if s != "normalize"
        ]

    @classmethod
    def from_config(
        cls, config: SentenceConfig | None, pooling: str | None = None, normalize: bool | None = None
    ) -> SentenceHead:
        """The head a sentence-transformers folder describes (its Dense weights loaded); without
        one, mean pooling and unit norm (this library's default for plain checkpoints). `pooling`
        and `normalize` override the folder's choice (pooling then replaces the whole head)."""
        if config is None or pooling is not None:
            modes = (pooling or "mean",) if isinstance(pooling or "mean", str) else tuple(pooling)
            steps = ("normalize",) if normalize is not False else ()
            return cls(modes, True, steps)
        steps = tuple(s for s in config.steps if s != "normalize")
        if normalize if normalize is not None else config.normalize:
            steps = config.steps if normalize is None else (*steps, "normalize")
        head = cls(config.pooling, config.include_prompt, steps)
        head.load_dense([s for s in steps if isinstance(s, Dense)])
        return head

    def load_dense(self, modules: list[Dense]) -> None:
        """Each Dense module's linear.weight / linear.bias from its folder (safetensors or .bin)."""
        for layer, module in zip(self.dense, modules, strict=True):
            files, reader = weight_files(module.folder)
            weights = {}
            for f in files:
                weights.update(reader(f))
            expected = {"linear.weight": (module.out_features, module.in_features)}
            if module.bias:
                expected["linear.bias"] = (module.out_features,)
            wrong = [
                k for k, shape in expected.items() if k not in weights or tuple(weights[k].shape) != shape
            ]
            if wrong or set(weights) - set(expected):
                raise ValueError(
                    f"{module.folder}: the Dense weights do not fit its config.json (expected "
                    f"{expected}, found { {k: tuple(v.shape) for k, v in weights.items()} })"
                )
            layer.weight = weights["linear.weight"].astype(mx.float32)
            if module.bias:
                layer.bias = weights["linear.bias"].astype(mx.float32)
        mx.eval(self.parameters())  # read now, not lazily at the first call (export cannot trace a load)

    @property
    def normalizes(self) -> bool:
        return bool(self.steps) and self.steps[-1] == "normalize"

    def __call__(self, states: mx.array, mask: mx.array, prompt_length: int = 0, pooler=None) -> mx.array:
        x = pool(states, mask, self.modes, 0 if self.include_prompt else prompt_length, pooler)
        layers = iter(self.dense)
        for step in self.steps:
            if step == "normalize":
                x = normalize(x)
            else:
                x = next(layers)(x)
                x = x if step == "identity" else ACTIVATIONS[step](x)
        return x
