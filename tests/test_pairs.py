"""Text pairs truncated longest-first: token for token what `tokenizers` gives, without the product
of both sides' overflow windows that `tokenizers` builds (and pipelines never read)."""

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PEAK_KB

from mlx_albert import AlbertTokenizer
from mlx_albert.pairs import encode_pairs, encode_texts, longest_first

TINY = Path(__file__).parent.parent / "models" / "tiny-albert"
WORDS = "the cat sat on a mat . ﷺ İstanbul x, y; 12345 naïve \u200b \x00".split(" ") + ["ab" * 40]


@pytest.fixture(scope="module")
def tok():
    return AlbertTokenizer.from_pretrained(TINY)


def test_the_kept_lengths_are_tokenizers_own(tok):
    """Every (n1, n2, budget) of a grid, against the lengths tokenizers keeps of texts of exactly n1
    and n2 tokens ("the" is one token): odd budgets and ties decide which side gets the odd token."""
    assert len(tok("the " * 7)["input_ids"]) == 7 + 2
    for budget in range(1, 12):
        for n1 in range(0, 14):
            for n2 in range(0, 14):
                e = tok.encode("the " * n1, "the " * n2, truncation=True, max_length=budget + 3)[0][0]
                kept = (e.sequence_ids.count(0), e.sequence_ids.count(1))
                assert longest_first(n1, n2, budget) == kept, (n1, n2, budget)


def test_pairs_equal_tokenizers_on_random_texts(tok):
    """Random pairs, short to 3,000 words, zero-token words (\\u200b) and long words included, at
    budgets odd and even; a long side far longer than the other is cut before tokenising, and must
    still give truncation's tokens. (Pairs whose reference would build a large window product are
    left out: that product is what encode_pairs avoids.)"""
    rng = random.Random(0)

    def text(n: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(n))

    tried = 0
    for _ in range(400):
        length = rng.choice([5, 8, 9, 16, 33, 64, 128])
        a, b = text(rng.choice([0, 1, 5, 50, 300, 3000])), text(rng.choice([0, 1, 5, 50, 300, 3000]))
        if rng.random() < 0.3:
            a += " \u200b" * 5000 + " " + text(10)  # thousands of words that give no token
        if rng.random() < 0.5:
            a, b = b, a
        if min(len(a), len(b)) * max(len(a), len(b)) > 3000 * length**2:
            continue
        tried += 1
        want = tok.encode(a, b, truncation=True, max_length=length)[0][0]
        got = encode_pairs(tok, [a], [b], length)[0]
        assert (got.ids, got.type_ids, got.attention_mask) == (want.ids, want.type_ids, want.attention_mask)
    assert tried > 200


def test_singles_and_pairs_keep_their_order(tok):
    texts, pairs = ["a cat", "the mat " * 500, "x"], [None, "on a mat", None]
    got = encode_texts(tok, texts, pairs, 16)
    for t, p, e in zip(texts, pairs, got, strict=True):
        want = tok.encode(t, p, truncation=True, max_length=16)[0][0]
        assert e.ids == want.ids and e.type_ids == want.type_ids


def test_two_long_texts_cost_linear_memory(tmp_path):
    """Two 100,000-character texts classified as a pair and as a question with a choice: tokenizers'
    truncation would build ~40,000 overflow windows of 128 tokens for each (2.5 GB and more); the
    pipelines stay within a bounded peak (measured in a child process: its peak resident size)."""
    a, b = "the cat sat " * 8300, "on a mat . " * 9000
    code = f"""{PEAK_KB}
import json, sys
from mlx_albert import pipeline
classify = pipeline("text-classification", {str(TINY)!r}, allow_untrained_head=True)
choose = pipeline("multiple-choice", {str(TINY)!r}, allow_untrained_head=True)
a, b = sys.stdin.read().split("\\n")
out = [classify({{"text": a, "text_pair": b}}), choose({{"question": a, "choices": [b, a]}})]
print(json.dumps([peak_kb(), len(out)]))
"""
    done = subprocess.run(
        [sys.executable, "-c", code],
        input=a + "\n" + b,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    peak_kb, answers = json.loads(done.stdout)
    assert answers == 2
    assert peak_kb < 1_000_000, f"peak {peak_kb // 1024} MB"  # the window product needs several GB
