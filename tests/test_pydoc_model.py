"""The shipped albert-pydoc-small (inside the package: `pydoc-small`): its held-out numbers,
recomputed on the committed held-out text (a broken model, tokenizer or evaluation is caught),
transformers loads it to the same outputs, and fill-mask answers Python questions with plausible
words."""

import json
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from conftest import needs_torch
from tolerances import PARITY, forward_tol

import mlx_albert
from mlx_albert.hub import bundled
from mlx_albert.training import evaluate_pretraining, read_documents, sop_dataset

MODEL = bundled("pydoc-small")  # the installed package's copy: what a wheel's users get
HELDOUT = Path(__file__).parent / "data" / "pydoc_heldout.txt"
CARD = json.loads((MODEL / "eval.json").read_text())
F64 = 4 * float(np.finfo(np.float64).eps)


@pytest.fixture(scope="module")
def model():
    # float16 as shipped, computed in float32 (as publish_pydoc.py measured it)
    return mlx_albert.load(MODEL, "for_pre_training", dtype=mx.float32)


@pytest.fixture(scope="module")
def tokenizer():
    return mlx_albert.AlbertTokenizer.from_pretrained(MODEL)


def test_held_out_numbers_match_the_card_and_beat_the_baselines(model, tokenizer):
    """The card's numbers, recomputed on the committed held-out text with the same masks (seed 0):
    equal within one example (another host's BLAS may round one borderline logit the other way).
    The issue's targets: sentence order >= 0.60 (chance 0.5; it measured 0.668) and masked-token
    top-1 >= 3x always-the-most-frequent-token. It measured exactly 3.0x (432 of the 2,229 masked
    tokens against 144), so the floor allows the same one example as the card check."""
    data = sop_dataset(read_documents(HELDOUT), tokenizer, CARD["max_length"], CARD["seed"])
    numbers = evaluate_pretraining(
        model, tokenizer, data, seed=CARD["seed"], constant_token=CARD["most_frequent_token"]
    )
    assert len(data) == CARD["pairs"] and numbers["masked_tokens"] == CARD["masked_tokens"]
    assert numbers["baseline_accuracy"] == CARD["baseline_accuracy"]  # labels only: exact
    for key, n in (("mlm_accuracy", CARD["masked_tokens"]), ("mlm_top5_accuracy", CARD["masked_tokens"])):
        # one example either way, and the float64 rounding of two quotients (4 ulps of 1)
        assert abs(numbers[key] - CARD[key]) <= 1 / n + F64, (key, numbers[key], CARD[key])
    assert abs(numbers["sop_accuracy"] - CARD["sop_accuracy"]) <= 1 / CARD["pairs"] + F64
    # exp(mean NLL): each token's NLL moves by at most twice its logits' rounding (logsumexp over
    # the 8,000 pieces and the picked logit, logits up to ~20), and the mean of N independent
    # roundings by 1/sqrt(N) of that
    nll = 2 * forward_tol(model.config, model.config.vocab_size, scale=20) / CARD["masked_tokens"] ** 0.5
    assert abs(numbers["perplexity"] - CARD["perplexity"]) <= nll * CARD["perplexity"]
    assert numbers["mlm_accuracy"] >= 3 * numbers["baseline_accuracy"] - 1 / numbers["masked_tokens"]
    assert numbers["mlm_top5_accuracy"] > 1.5 * numbers["mlm_accuracy"]
    assert CARD["sop_accuracy"] >= 0.60 and numbers["sop_accuracy"] >= 0.59
    hits, baseline = (round(CARD[k] * CARD["masked_tokens"]) for k in ("mlm_accuracy", "baseline_accuracy"))
    assert hits >= 3 * baseline  # as measured for the card: 3x, counted in tokens


def test_shipped_files_are_small_float16_and_complete():
    names = {p.name for p in MODEL.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "spiece.model", "README.md"} <= names
    assert sum(p.stat().st_size for p in MODEL.iterdir()) <= 10 * 2**20
    from safetensors import safe_open

    with safe_open(str(MODEL / "model.safetensors"), "np") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F16"}


def test_fill_mask_ranks_the_masked_word_above_chance():
    """Through the fill-mask pipeline, on held-out sentences with one word masked: the true word is
    among the top 5 far more often than a random guess from 8,000 pieces would put it (5/8000);
    measured 0.33 on the card's sample."""
    unmask = mlx_albert.pipeline("fill-mask", MODEL, top_k=5)
    tok = unmask.tokenizer
    sentences = [s for d in read_documents(HELDOUT)[:20] for s in d if 6 <= len(s.split()) <= 25][:40]
    hits = total = 0
    for sentence in sentences:
        words = sentence.split()
        word = words[len(words) // 2].lower()
        if len(tok.encode([word])[0][0].ids) != 3:  # one piece: [CLS] piece [SEP]
            continue
        words[len(words) // 2] = "[MASK]"
        answers = unmask(" ".join(words))
        hits += word in {a["token_str"].strip() for a in answers}
        total += 1
    assert total >= 10 and hits / total >= 0.1, (hits, total)


@needs_torch
def test_transformers_loads_it_to_the_same_outputs(model, tokenizer, tmp_path):
    """transformers' AlbertForPreTraining (float32) and its tokenizers (from tokenizer.json, and
    converted from spiece.model alone) agree with ours: the same ids, logits within PARITY."""
    import shutil

    import torch
    import transformers

    text = "The sort() method sorts the list in place. It returns None."
    for name in ("spiece.model", "tokenizer_config.json"):
        shutil.copy(MODEL / name, tmp_path / name)
    ids = tokenizer.encode([text])[0][0].ids
    for folder in (MODEL, tmp_path):
        assert transformers.AlbertTokenizer.from_pretrained(folder)(text)["input_ids"] == ids, folder
    hf = transformers.AlbertForPreTraining.from_pretrained(MODEL, dtype=torch.float32).eval()
    with torch.no_grad():
        ref = hf(input_ids=torch.tensor([ids]))
    ours = model(mx.array([ids]))
    for name in ("prediction_logits", "sop_logits"):
        err = np.abs(np.array(getattr(ours, name)) - getattr(ref, name).numpy()).max()
        assert err < PARITY, (name, err)
