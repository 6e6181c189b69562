"""feature-extraction: the last hidden states of each text ([CLS] and [SEP] included), as
transformers' FeatureExtractionPipeline: nested lists [1, L, H], or numpy with return_tensors."""

from __future__ import annotations

from ..batching import check_strings, clip_text, dispatch, max_tokens, run_batches, to_numpy
from ..tokenizer import AlbertTokenizer
from .base import Task
from .exported import Export


def feature_extraction(
    model,
    tokenizer: AlbertTokenizer,
    inputs,
    return_tensors: bool = False,
    batch_size: int = 8,
    progress=False,
    max_length: int | None = None,
):
    """The last hidden state of each text, [CLS] and [SEP] included: a nested list of shape
    [1, L, H] as transformers, or an np.ndarray of that shape with return_tensors=True.
    Texts longer than the model are truncated."""
    limit = max_tokens(model, tokenizer, max_length)

    def run(texts: list) -> list:
        texts = [clip_text(t, limit) for t in check_strings("feature_extraction", texts)]
        encodings, _ = tokenizer.encode(texts, truncation=True, max_length=limit)
        states = run_batches(
            model,
            [[e] for e in encodings],
            lambda b: list(to_numpy(model.backbone(**b).last_hidden_state)),
            tokenizer.pad_token_id,
            limit,
            batch_size,
            progress,
        )
        out = [s[None, : len(e.ids)] for s, e in zip(states, encodings, strict=True)]
        return out if return_tensors else [s.tolist() for s in out]

    return dispatch(inputs, lambda x: isinstance(x, str), run, batch_size)


class FeatureExtraction(Task):
    name = "feature-extraction"
    help = "last hidden states per token, one JSON [1, L, H] per input"
    architecture = "base"
    command = "feature-extraction"
    needs_head = False
    export = Export(("last_hidden_state",))
    json_only = True  # nested lists [1, L, H]: one JSON line each

    def predict(self, model, tokenizer, inputs, **options):
        return feature_extraction(model, tokenizer, inputs, **options)


TASK = FeatureExtraction()
