"""Pipelines: same answers as transformers' pipelines on the bundled tiny checkpoint."""

from pathlib import Path

import pytest
from conftest import needs_torch

import mlx_albert
from mlx_albert.pipelines import fill_mask

TINY = Path(__file__).parent.parent / "models" / "tiny-albert"
TEXTS = ["The cat likes [MASK] every morning.", "A [MASK] visits [MASK].", "[MASK]"]


@pytest.fixture(scope="module")
def model_and_tokenizer():
    return mlx_albert.load(TINY), mlx_albert.AlbertTokenizer.from_pretrained(TINY)


def _same(ours, ref):
    if isinstance(ref, list):
        assert isinstance(ours, list) and len(ours) == len(ref)
        for a, b in zip(ours, ref, strict=True):
            _same(a, b)
        return
    assert ours.keys() == ref.keys()
    assert ours["token"] == ref["token"] and ours["token_str"] == ref["token_str"]
    assert ours["sequence"] == ref["sequence"]
    assert abs(ours["score"] - ref["score"]) < 1e-4


@needs_torch
def test_fill_mask_matches_transformers(model_and_tokenizer):
    import transformers

    ref = transformers.pipeline("fill-mask", model=str(TINY), device="cpu")
    model, tok = model_and_tokenizer
    for text in TEXTS:
        _same(fill_mask(model, tok, text, top_k=4), ref(text, top_k=4))
    _same(fill_mask(model, tok, TEXTS, top_k=2), ref(TEXTS, top_k=2))
    _same(
        fill_mask(model, tok, "The cat likes [MASK].", targets=["the", "▁paris"]),
        ref("The cat likes [MASK].", targets=["the", "▁paris"]),
    )


def test_fill_mask_semantics(model_and_tokenizer):
    model, tok = model_and_tokenizer
    answers = fill_mask(model, tok, TEXTS[0], top_k=5)
    scores = [a["score"] for a in answers]
    assert len(answers) == 5 and scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1
    assert all(a["token_str"].strip() in a["sequence"] for a in answers)
    two = fill_mask(model, tok, TEXTS[1], top_k=3)
    assert len(two) == 2 and all(len(per_mask) == 3 for per_mask in two)  # one list per mask
    batch = fill_mask(model, tok, TEXTS, top_k=1)
    alone = fill_mask(model, tok, TEXTS[0], top_k=1)  # padding in a batch changes only float rounding
    assert [(a["token"], a["sequence"]) for a in batch[0]] == [(a["token"], a["sequence"]) for a in alone]
    assert abs(batch[0][0]["score"] - alone[0]["score"]) < 1e-6
    with pytest.raises(ValueError, match=r"No mask_token \(\[MASK\]\) found on the input 'no mask here'"):
        fill_mask(model, tok, ["The [MASK] cat", "no mask here"])
    with pytest.raises(ValueError, match="at least one text"):
        fill_mask(model, tok, [])
