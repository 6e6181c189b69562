"""embed: sentence vectors through SentenceEncoder, the one path of every embedding: a
sentence-transformers folder's own pooling, Dense and Normalize (so its vectors equal
sentence-transformers' encode), or for a plain checkpoint mean pooling and unit norm. `pooling`
(cls, mean, max, mean_sqrt_len_tokens, weightedmean, lasttoken, or ALBERT's pooler) and
`normalize` override the checkpoint's choice."""

from __future__ import annotations

import numpy as np

from ..batching import check_strings, dispatch, max_tokens
from ..sentence.encoder import SentenceEncoder
from ..sentence.ops import similarity
from ..sentence.pooling import MODES
from ..sentence.training import SentenceRecipe
from ..tokenizer import AlbertTokenizer
from .base import Task
from .exported import Export
from .options import Option, declare


def embed(
    model,
    tokenizer: AlbertTokenizer,
    inputs,
    pooling: str | None = None,
    normalize: bool | None = None,
    batch_size: int = 64,
    progress: bool = False,
    max_length: int | None = None,
    encoder: SentenceEncoder | None = None,
    prompt_name: str | None = None,
    prompt: str | None = None,
):
    """Sentence embeddings: (D,) for one text, (N, D) for a list, a generator of (D,) vectors for
    another iterable. Texts are cut to the model (max_length, default the checkpoint's).

    encoder: the checkpoint's (pipeline() passes it); without it, mean pooling and unit norm.
    pooling, normalize: override the encoder's head (pooling: one of MODES).
    """
    encoder = configure(model, tokenizer, encoder, pooling, normalize, max_length)
    text = encoder._prompt(prompt_name, prompt)

    def run(texts: list) -> list:
        ids, _, prompt_length = encoder.tokenize(check_strings("embed", texts), text)
        return encoder.encode_ids(ids, batch_size, prompt_length, progress)

    result = dispatch(inputs, lambda x: isinstance(x, str), run, batch_size)
    return np.stack(result) if isinstance(inputs, list | tuple) else result


def configure(
    model,
    tokenizer: AlbertTokenizer,
    encoder: SentenceEncoder | None = None,
    pooling: str | None = None,
    normalize: bool | None = None,
    max_length: int | None = None,
) -> SentenceEncoder:
    """The encoder `embed` runs with these options: the checkpoint's (else mean pooling and unit
    norm), its head and length overridden."""
    limit = max_tokens(model, tokenizer, max_length)
    encoder = encoder or SentenceEncoder(model, tokenizer)
    if pooling is not None or normalize is not None:
        encoder = encoder.with_head(pooling, normalize)
    return encoder.with_length(limit) if max_length is not None else encoder


class SentenceExport(Export):
    """The checkpoint's own sentence-transformers head over the backbone: its vectors."""

    def run(self, model, prepared: dict, inputs: dict) -> tuple:
        encoder = prepared["encoder"]
        states = model.backbone(**inputs, check_inputs=False, exportable=True).last_hidden_state
        pooler = model.backbone.pool if "pooler" in model.backbone else None
        return (encoder.head(states, inputs["attention_mask"], 0, pooler),)


class Embed(Task):
    name = "embed"
    help = "sentence embeddings (sentence-transformers' pooling when the folder has it)"
    architecture = "base"
    command = "embed"
    needs_head = False
    export = SentenceExport(("sentence_embedding",))
    vectors = True
    batch_size = 64
    recipe = SentenceRecipe()
    options = declare(
        embed,
        Option(
            "pooling", str, "unset: the checkpoint's (sentence-transformers), else mean", choices=MODES,
            server=False,
        ),
        Option("normalize", bool, "unit L2 norm (unset: the checkpoint's, else yes)", server=False),
        Option(
            "prompt_name", str, "a prompt of the folder's config_sentence_transformers.json (e.g. query, "
            "document) put before every text", server=False,
        ),
    )  # fmt: skip

    def predict(self, model, tokenizer, inputs, **options):
        return embed(model, tokenizer, inputs, **options)

    def prepare(self, checkpoint, model, tokenizer) -> dict:
        return {"encoder": SentenceEncoder.from_pretrained(checkpoint, model=model, tokenizer=tokenizer)}

    def needs_pooler(self, options: dict) -> bool:
        return options.get("pooling") == "pooler"

    def human(self, result, args) -> str:
        return " ".join(f"{x:.6f}" for x in result)


TASK = Embed()
__all__ = ["TASK", "configure", "embed", "similarity"]
