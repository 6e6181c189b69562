"""Untrusted files: random, truncated and bit-flipped spiece.model, tokenizer.json, safetensors and
config.json files load or fail with a ValueError naming the file, each within a bounded multiple of a
clean load, and never crash, hang or escape as another exception (a Rust panic included)."""

import json
import random
import shutil
import time
from pathlib import Path

import pytest

import mlx_albert
from mlx_albert import AlbertTokenizer
from mlx_albert.spiece import panic_guard

TINY = Path(__file__).parent.parent / "models" / "tiny-albert"
SEED = 20261126


def _variants(data: bytes, rng: random.Random, n: int) -> list[bytes]:
    """Truncations (at random points and at the small sizes that once slipped through), bit flips,
    random bytes and a megabyte of 0xFF (an endless varint)."""
    cuts = {0, 1, 8, 25, 30, 36, 1197, len(data) - 1} | {rng.randrange(len(data)) for _ in range(n)}
    out = [data[:c] for c in sorted(cuts) if c < len(data)]
    for _ in range(n):
        flipped = bytearray(data)
        for _ in range(rng.randrange(1, 8)):
            flipped[rng.randrange(len(flipped))] = rng.randrange(256)
        out.append(bytes(flipped))
    out += [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400))) for _ in range(n // 2)]
    return out + [b"\xff" * 1_000_000]


SLOWER = 50  # a damaged file may cost this many clean loads (a hang or a quadratic parse costs far more)


def _timed(load) -> float:
    start = time.perf_counter()
    try:
        load()
    except ValueError:
        pass
    return time.perf_counter() - start


def _only_clean_errors(write, load, variants, clean: bytes):
    """Every variant loads or raises ValueError, at most SLOWER times a clean load measured in the
    same test on either side of it: a bound relative to the machine's speed and load right now,
    never an absolute wall-clock limit (a busy 2-core machine once took 1.05 s for a 1 s bound)."""
    outcomes = {"ok": 0, "ValueError": 0}
    for data in variants:
        write(clean)
        before = _timed(load)
        write(data)
        start = time.perf_counter()
        try:
            load()
            outcomes["ok"] += 1
        except ValueError:
            outcomes["ValueError"] += 1
        took = time.perf_counter() - start
        write(clean)
        reference = max(before, _timed(load))
        assert took <= SLOWER * reference, (
            f"{len(data)} bytes took {took:.3f} s, a clean load {reference:.3f} s"
        )
    assert outcomes["ValueError"] > 0
    return outcomes


def test_spiece_model(tmp_path):
    shutil.copy(TINY / "tokenizer_config.json", tmp_path)
    data = (TINY / "spiece.model").read_bytes()
    outcomes = _only_clean_errors(
        lambda d: (tmp_path / "spiece.model").write_bytes(d),
        lambda: AlbertTokenizer.from_pretrained(tmp_path)(["hello world", "Ünïcode 東京 1,000"]),
        _variants(data, random.Random(SEED), 120),
        data,
    )
    # every truncation is refused (a cut file once loaded and tokenised differently)
    for cut in (1197, len(data) // 2, len(data) - 1):
        (tmp_path / "spiece.model").write_bytes(data[:cut])
        with pytest.raises(ValueError, match="not a valid SentencePiece model"):
            AlbertTokenizer.from_pretrained(tmp_path)
    assert outcomes["ok"] < 120


def test_tokenizer_json(tmp_path):
    AlbertTokenizer.from_pretrained(TINY).save_pretrained(tmp_path)
    data = (tmp_path / "tokenizer.json").read_bytes()
    rng = random.Random(SEED)
    variants = _variants(data, rng, 40) + [b"[1, 2]", b"null", b'{"model": {"type": "BPE"}}']
    bert = json.loads(data)
    bert["added_tokens"] = [t for t in bert["added_tokens"] if t["content"] != "[CLS]"]
    bert["model"]["vocab"] = [p for p in bert["model"]["vocab"] if p[0] != "[CLS]"]
    variants.append(json.dumps(bert).encode())
    _only_clean_errors(
        lambda d: (tmp_path / "tokenizer.json").write_bytes(d),
        lambda: AlbertTokenizer.from_pretrained(tmp_path)("hello world"),
        variants,
        data,
    )
    (tmp_path / "tokenizer.json").write_text(json.dumps(bert))
    with pytest.raises(ValueError, match=r"not an ALBERT tokenizer: it lacks the tokens \['\[CLS\]'\]"):
        AlbertTokenizer.from_pretrained(tmp_path)


def test_safetensors_and_config_json(tmp_path):
    for name in ("config.json", "model.safetensors", "spiece.model"):
        shutil.copy(TINY / name, tmp_path)
    rng = random.Random(SEED)
    weights = (TINY / "model.safetensors").read_bytes()
    _only_clean_errors(
        lambda d: (tmp_path / "model.safetensors").write_bytes(d),
        lambda: mlx_albert.load(tmp_path),
        [weights[: rng.randrange(len(weights))] for _ in range(30)]
        + [bytes(rng.randrange(256) for _ in range(64)) for _ in range(20)]
        + [weights[:8] + b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}' + weights[70:]],
        weights,
    )
    shutil.copy(TINY / "model.safetensors", tmp_path)
    config = (TINY / "config.json").read_bytes()
    odd_values = [
        json.dumps({**json.loads(config), key: value}).encode()
        for key in ("vocab_size", "hidden_size", "num_hidden_layers", "id2label", "hidden_act")
        for value in (None, "12", -1, 10**12, [1], {"a": 1}, 1.5)
    ]
    _only_clean_errors(
        lambda d: (tmp_path / "config.json").write_bytes(d),
        lambda: mlx_albert.load(tmp_path),
        _variants(config, rng, 30) + odd_values,
        config,
    )


def test_a_rust_panic_becomes_a_value_error():
    class PanicException(BaseException):  # pyo3's, which escapes `except Exception`
        pass

    def panics():
        raise PanicException("index out of bounds")

    with pytest.raises(ValueError, match="the tokenizer failed on spiece.model"):
        panic_guard(panics, "spiece.model")
    with pytest.raises(KeyboardInterrupt):
        panic_guard(lambda: (_ for _ in ()).throw(KeyboardInterrupt()), "x")
