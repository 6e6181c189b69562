"""AlbertTokenizer: token-for-token equal to transformers' AlbertTokenizer on the tiny checkpoint's
SentencePiece model (live, and against golden/tokenizer.json), plus files and errors."""

import json
import shutil
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from conftest import GOLDEN, MODES, needs_torch
from oracle import PAIRS, TEXTS, tokenizer_case, window_args

import mlx_albert
from mlx_albert.spiece import read_spiece
from mlx_albert.tokenizer import AlbertTokenizer

TINY = Path(__file__).parent.parent / "models" / "tiny-albert"


@pytest.fixture(scope="module")
def spm_only(tmp_path_factory):
    folder = tmp_path_factory.mktemp("spm")
    for name in ("spiece.model", "tokenizer_config.json"):
        shutil.copy(TINY / name, folder / name)
    return folder


def expected(mode, folder):
    return tokenizer_case(folder) if mode == "live" else json.loads((GOLDEN / "tokenizer.json").read_text())


@pytest.mark.parametrize("mode", MODES)
def test_matches_transformers(mode, spm_only):
    ref = expected(mode, spm_only)
    tok = AlbertTokenizer.from_pretrained(spm_only)
    assert [tok(t)["input_ids"] for t in TEXTS] == ref["single"]
    for (a, b), r in zip(PAIRS, ref["pairs"], strict=True):
        out = tok(a, b)
        assert out["input_ids"] == r["input_ids"] and out["token_type_ids"] == r["token_type_ids"]
    batch = tok(
        [a for a, _ in PAIRS], [b for _, b in PAIRS], truncation=True, max_length=16, padding="max_length"
    )
    for key in ("input_ids", "token_type_ids", "attention_mask"):
        assert batch[key] == ref["truncated"][key], key
    assert [tok.decode(tok(t)["input_ids"]) for t in TEXTS] == ref["decoded"]


def test_save_and_reload(spm_only, tmp_path):
    tok = AlbertTokenizer.from_pretrained(spm_only)
    tok.save_pretrained(tmp_path)
    again = AlbertTokenizer.from_pretrained(tmp_path)  # now from tokenizer.json
    assert (tmp_path / "tokenizer.json").exists()
    assert [again(t)["input_ids"] for t in TEXTS] == [tok(t)["input_ids"] for t in TEXTS]
    assert again.mask_token_id == tok.mask_token_id == 4


def test_arrays_padding_and_model(spm_only):
    tok = AlbertTokenizer.from_pretrained(spm_only)
    batch = tok(["The cat likes [MASK].", "A dog"], padding=True, pad_to_multiple_of=8, return_tensors="mlx")
    assert isinstance(batch["input_ids"], mx.array) and batch["input_ids"].shape[1] % 8 == 0
    assert int(batch["attention_mask"][1].sum()) < batch["input_ids"].shape[1]
    model = mlx_albert.load(TINY)
    logits = model(**batch).logits
    assert logits.shape == (*batch["input_ids"].shape, model.config.vocab_size)
    with pytest.raises(ValueError, match="padding=True"):
        tok(["a", "a b c d"], return_tensors="np")
    assert np.array_equal(tok(["a b"], return_tensors="np")["input_ids"], np.array([tok("a b")["input_ids"]]))


def test_bad_inputs_and_files(spm_only, tmp_path):
    tok = AlbertTokenizer.from_pretrained(spm_only)
    with pytest.raises(TypeError, match="strings"):
        tok([1, 2])
    with pytest.raises(ValueError, match="2 texts but 1 text pairs"):
        tok(["a", "b"], ["c"])
    with pytest.raises(FileNotFoundError, match="tokenizer.json or spiece.model"):
        AlbertTokenizer.from_pretrained(tmp_path)
    (tmp_path / "spiece.model").write_bytes(b"\x0a\xff\xff\xff")
    with pytest.raises(ValueError, match="not a valid SentencePiece model"):
        AlbertTokenizer.from_pretrained(tmp_path)


def test_reads_every_piece():
    pieces, charsmap = read_spiece(TINY / "spiece.model")
    assert [p for p, _ in pieces[:5]] == ["<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"]
    assert len(pieces) == mlx_albert.load(TINY).config.vocab_size and len(charsmap) > 0


def _lists(x):
    return [_lists(v) for v in x] if isinstance(x, list | tuple) else x


@pytest.mark.parametrize("mode", MODES)
def test_offsets_and_overflow_windows_match_transformers(mode, spm_only):
    ref = expected(mode, spm_only)
    tok = AlbertTokenizer.from_pretrained(spm_only)
    assert [_lists(tok(t, return_offsets_mapping=True)["offset_mapping"]) for t in TEXTS] == _lists(
        ref["offsets"]
    )
    for strategy, windows in ref["windows"].items():
        ours = tok([a for a, _ in PAIRS], [b for _, b in PAIRS], **window_args(strategy))
        assert ours.keys() == windows.keys()
        for key in windows:
            assert _lists(ours[key]) == _lists(windows[key]), (strategy, key)


def test_overflow_errors(spm_only):
    tok = AlbertTokenizer.from_pretrained(spm_only)
    with pytest.raises(ValueError, match="stride needs truncation=True and return_overflowing_tokens"):
        tok("a b c", stride=2)
    with pytest.raises(ValueError, match="cannot tokenize with max_length=8"):  # question fills the window
        tok(
            "a long question with many words",
            "ctx",
            truncation="only_second",
            max_length=8,
            return_overflowing_tokens=True,
        )


def _train_spiece(folder, corpus: list[str], vocab_size: int, **config) -> None:
    """A SentencePiece model trained here (the sentencepiece trainer), in an ALBERT folder."""
    pytest.importorskip("sentencepiece")
    sys.path.insert(0, str(TINY.parent))
    from make_tiny_albert import train_spiece

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spiece.model").write_bytes(train_spiece(corpus, vocab_size, character_coverage=0.9995))
    base = {"tokenizer_class": "AlbertTokenizer", "remove_space": True, "model_max_length": 64}
    (folder / "tokenizer_config.json").write_text(json.dumps({**base, **config}))


CORPUS = [
    "Café au lait à Paris, naïve façade; Ångström units — 1,000,000 or 3.5%.",
    "The QUICK brown fox jumps over the lazy dog. “Quoted” and ‘single’ text ``here''.",
    "日本語のテキストと中文字符 mixed with emoji 😀🎉 and tabs\tand  spaces.",
    "Numbers 12, 345 and 6,789 appear; e-mail a.b@c.de; URL https://x.y/z?q=1.",
] * 40


@needs_torch
@pytest.mark.parametrize(
    "config",
    [
        {"do_lower_case": True, "keep_accents": False},
        {"do_lower_case": False, "keep_accents": True},
        {"do_lower_case": False, "keep_accents": False},
    ],
    ids=["uncased", "cased-accents", "cased"],
)
def test_matches_transformers_on_a_freshly_trained_spiece(tmp_path, config):
    import transformers

    _train_spiece(tmp_path, CORPUS, 400, **config)
    ref = transformers.AlbertTokenizer.from_pretrained(tmp_path)
    ours = AlbertTokenizer.from_pretrained(tmp_path)
    texts = (
        TEXTS + [c.upper() for c in CORPUS[:4]] + ["Ünïcödé ĀĒĪŌŪ ﬁ ligature ①②", "  leading and trailing  "]
    )
    for text in texts:
        expected = ref(text, return_offsets_mapping=True)
        got = ours(text, return_offsets_mapping=True)
        assert got["input_ids"] == expected["input_ids"], text
        assert [tuple(o) for o in got["offset_mapping"]] == [tuple(o) for o in expected["offset_mapping"]], (
            text
        )
        assert ours.decode(got["input_ids"], skip_special_tokens=True) == ref.decode(
            expected["input_ids"], skip_special_tokens=True
        )
    windows = dict(truncation="only_second", max_length=32, stride=4, return_overflowing_tokens=True)
    pairs = ref("Where is the café?", CORPUS[1], return_token_type_ids=True, **windows)
    got = ours("Where is the café?", CORPUS[1], **windows)
    assert len(got["input_ids"]) > 1  # several windows
    assert got["input_ids"] == pairs["input_ids"] and got["token_type_ids"] == pairs["token_type_ids"]


def test_lone_surrogates_and_bad_config_are_value_errors(spm_only, tmp_path):
    with pytest.raises(ValueError, match=r"text 1 holds a lone surrogate \('\\ud800'\)"):
        AlbertTokenizer.from_pretrained(spm_only)(["fine", "bro\ud800ken"])
    for name in ("spiece.model", "tokenizer_config.json"):
        shutil.copy(TINY / name, tmp_path / name)
    (tmp_path / "tokenizer_config.json").write_text('["not", "an", "object"]')
    with pytest.raises(ValueError, match="not a valid tokenizer_config.json"):
        AlbertTokenizer.from_pretrained(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text('{"mask_token": 5}')
    with pytest.raises(ValueError, match=r"\['mask_token'\] must be strings"):
        AlbertTokenizer.from_pretrained(tmp_path)


def test_tokenize_batch_decode_and_len_as_transformers():
    """The calls transformers users reach for: tokenize (pieces, no special tokens unless asked),
    batch_decode, len(tokenizer)."""
    tok = AlbertTokenizer.from_pretrained(TINY)
    assert tok.tokenize("The cat sat.") == ["▁the", "▁ca", "t", "▁s", "a", "t", "."]
    assert tok.tokenize("A b", "c d") == ["▁a", "▁b", "▁c", "▁d"]
    assert tok.tokenize("Hello", add_special_tokens=True)[::5] == ["[CLS]", "[SEP]"]
    ids = tok(["a cat", "the sea again"], padding=True)["input_ids"]
    assert tok.batch_decode(ids) == [tok.decode(row) for row in ids]
    assert tok.batch_decode(np.array(ids), skip_special_tokens=True) == ["a cat", "the sea again"]
    assert len(tok) == tok.vocab_size == 101
    try:
        import transformers
    except ImportError:
        return
    ref = transformers.AlbertTokenizer.from_pretrained(TINY)
    for text in TEXTS:
        assert tok.tokenize(text) == ref.tokenize(text), text
    assert tok.batch_decode(ids) == ref.batch_decode(ids) and len(tok) == len(ref)
