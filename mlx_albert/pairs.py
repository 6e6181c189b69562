"""Text pairs truncated longest-first exactly as `tokenizers` does, without its overflow windows:
it makes every window of one side with every window of the other (two 100,000-character texts at
max_length 512: 14,651 encodings, 16 s and 5.6 GB), and pipelines never read them. Each side is
encoded alone (linear), the kept lengths follow tokenizers' rule, and the tokenizer's own template
puts the special tokens around them."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from .batching import clip_pair, clip_text
from .spiece import panic_guard
from .tokenizer import check_unicode


@dataclass(frozen=True)
class PairEncoding:
    """What the pipelines and the trainer read of an encoding."""

    ids: list[int]
    type_ids: list[int]

    @property
    def attention_mask(self) -> list[int]:
        return [1] * len(self.ids)


def longest_first(n1: int, n2: int, budget: int) -> tuple[int, int]:
    """The lengths tokenizers' longest_first truncation keeps of two sequences of n1 and n2 tokens
    in `budget` tokens (its legacy rule: the shorter side is kept when it fits, the longer fills the
    rest; two long sides get half each, the longer one, or the second on a tie, the odd token)."""
    if n1 + n2 <= budget:
        return n1, n2
    short, long = (n2, n1) if n1 > n2 else (n1, n2)
    long = short if short > budget else max(short, budget - short)
    if short + long > budget:
        short, long = budget // 2, budget // 2 + budget % 2
    return (long, short) if n1 > n2 else (short, long)


@lru_cache(maxsize=8)
def _template(tokenizer) -> tuple[list[tuple[int, int | None, int]], int]:
    """The tokenizer's pair template, read off a probe: [(special id or -1, side or None, type id)],
    one entry per special token and one per side, and the number of special tokens."""
    probe = tokenizer.encode("a", "b")
    parts, added = [], 0
    for token, side, kind in zip(probe.ids, probe.sequence_ids, probe.type_ids, strict=True):
        if side is None:
            parts.append((token, None, kind))
            added += 1
        elif not parts or parts[-1][1] != side:
            parts.append((-1, side, kind))
    return parts, added


def _sides(tokenizer, texts: list[str]) -> list[list[int]]:
    try:
        encodings = panic_guard(lambda: tokenizer.encode_batch(texts, add_special_tokens=False), "a text")
    except ValueError:
        raise
    except Exception as e:  # a lone surrogate, named by check_unicode
        check_unicode(texts, False)
        raise ValueError(f"cannot tokenize: {e}") from None
    return [e.ids for e in encodings]


def encode_pairs(tokenizer, firsts: list[str], seconds: list[str], max_length: int) -> list[PairEncoding]:
    """The pairs (firsts[i], seconds[i]) encoded with special tokens and truncated longest-first to
    max_length, as `tokenizer(firsts, seconds, truncation=True, max_length=...)` gives them. A side
    far longer than the other is cut first (clip_pair); where the cut one is not still the longer and
    over budget, it is encoded whole again, so the lengths, and the tokens, are truncation's own."""
    parts, added = _template(tokenizer.tokenizer)
    budget = max_length - added
    if budget < 1:
        raise ValueError(f"max_length {max_length} leaves no room for text next to {added} special tokens")
    clipped = [clip_pair(a, b, budget) for a, b in zip(firsts, seconds, strict=True)]
    a_ids = _sides(tokenizer.tokenizer, [a for a, _ in clipped])
    b_ids = _sides(tokenizer.tokenizer, [b for _, b in clipped])
    out = []
    for i, (a, b) in enumerate(zip(a_ids, b_ids, strict=True)):
        if len(clipped[i][0]) < len(firsts[i]) and not (len(a) >= budget and len(a) > len(b)):
            a = _sides(tokenizer.tokenizer, [firsts[i]])[0]
        if len(clipped[i][1]) < len(seconds[i]) and not (len(b) >= budget and len(b) > len(a)):
            b = _sides(tokenizer.tokenizer, [seconds[i]])[0]
        keep = longest_first(len(a), len(b), budget)
        sides = (a[: keep[0]], b[: keep[1]])
        ids, types = [], []
        for token, side, kind in parts:
            piece = [token] if side is None else sides[side]
            ids += piece
            types += [kind] * len(piece)
        out.append(PairEncoding(ids, types))
    return out


def encode_texts(tokenizer, texts: list[str], pairs: list[str | None], max_length: int) -> list:
    """Texts, each alone (pairs[i] None) or with its pair, encoded and truncated to max_length: one
    encoding each, in order; a long single text is cut first to what truncation keeps (clip_text)."""
    out: list = [None] * len(texts)
    single = [i for i, p in enumerate(pairs) if p is None]
    double = [i for i, p in enumerate(pairs) if p is not None]
    if single:
        encodings, _ = tokenizer.encode(
            [clip_text(texts[i], max_length) for i in single], truncation=True, max_length=max_length
        )
        for i, e in zip(single, encodings, strict=True):
            out[i] = e
    if double:
        encodings = encode_pairs(
            tokenizer, [texts[i] for i in double], [pairs[i] for i in double], max_length
        )
        for i, e in zip(double, encodings, strict=True):
            out[i] = e
    return out
