"""ALBERT's tokenizer on the `tokenizers` package: read from tokenizer.json, or built from a
SentencePiece spiece.model exactly as transformers' AlbertTokenizer builds it (no sentencepiece
or protobuf needed: the model file's few fields are read directly)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from tokenizers import Encoding, Tokenizer

from .files import read_bytes, read_json
from .spiece import MAX_FILE, SPECIAL_TOKENS, build_from_spiece, panic_guard


def check_unicode(texts: list, split: bool) -> None:
    """Raises a ValueError naming the first text with a lone surrogate (tokenizers cannot take it)."""
    for i, text in enumerate(texts):
        for part in text if split else [text]:
            try:
                part.encode("utf-8")
            except UnicodeEncodeError as e:
                raise ValueError(
                    f"text {i} holds a lone surrogate ({e.object[e.start : e.end]!r}), "
                    "which is not valid Unicode: "
                    "decode the input with errors='replace'"
                ) from None


def _read_config(path: Path) -> dict:
    """tokenizer_config.json as a dict of plain values (special tokens as their strings)."""
    if not path.exists():
        return {}
    try:
        config = read_json(path, "tokenizer_config.json")
        if not isinstance(config, dict):
            raise ValueError(f"a {type(config).__name__}, not an object")
    except ValueError as e:
        raise ValueError(f"{path} is not a valid tokenizer_config.json ({e}); re-download it") from None
    config = {k: v["content"] if isinstance(v, dict) and "content" in v else v for k, v in config.items()}
    bad = [k for k in SPECIAL_TOKENS if k in config and not isinstance(config[k], str)]
    if bad:
        raise ValueError(f"{path}: {bad} must be strings")
    return config


def _batch(text, text_pair, is_split_into_words: bool) -> tuple[list, list | None]:
    """(texts, pairs or None) as lists, checked: strings, or lists of words with is_split_into_words."""
    if is_split_into_words:
        texts = [text] if text and isinstance(text[0], str) else list(text)
        if not all(isinstance(w, str) for words in texts for w in words):
            raise TypeError("with is_split_into_words, texts must be lists of strings")
        texts = [list(words) for words in texts]
    else:
        texts = [text] if isinstance(text, str) else list(text)
    pairs = None if text_pair is None else ([text_pair] if isinstance(text_pair, str) else list(text_pair))
    if not is_split_into_words and not all(isinstance(t, str) for t in texts + (pairs or [])):
        raise TypeError("texts must be strings (or lists of strings)")
    if pairs is not None and len(pairs) != len(texts):
        raise ValueError(f"{len(texts)} texts but {len(pairs)} text pairs")
    return texts, pairs


class AlbertTokenizer:
    """A `tokenizers.Tokenizer` with ALBERT's special tokens and transformers' call semantics."""

    def __init__(self, tokenizer: Tokenizer, model_max_length: int = 512, config: dict | None = None):
        self.tokenizer = tokenizer
        self.model_max_length = model_max_length
        self.config = dict(config or {})
        for name, token in SPECIAL_TOKENS.items():
            setattr(self, name, self.config.get(name, token))
            setattr(self, f"{name}_id", tokenizer.token_to_id(getattr(self, name)))

    @classmethod
    def from_pretrained(
        cls, path_or_repo_id, revision: str | None = None, cache_dir=None
    ) -> "AlbertTokenizer":
        """Reads tokenizer.json, or builds the tokenizer from spiece.model (+ tokenizer_config.json),
        of a folder, repo id, shipped model's short name or opened Checkpoint."""
        from .hub import Checkpoint

        folder = Checkpoint.open(path_or_repo_id, revision, cache_dir).folder
        config = _read_config(folder / "tokenizer_config.json")
        if (folder / "tokenizer.json").exists():
            path = folder / "tokenizer.json"
            text = read_bytes(path, MAX_FILE, "tokenizer.json").decode("utf-8", errors="replace")
            try:
                tokenizer = panic_guard(lambda: Tokenizer.from_str(text), str(path))
            except Exception as e:  # tokenizers raises a bare Exception for malformed JSON
                raise ValueError(
                    f"{path} is not a valid tokenizer.json ({str(e)[:200]}); re-download it"
                ) from None
        elif (folder / "spiece.model").exists():
            path = folder / "spiece.model"
            tokenizer = build_from_spiece(
                path, bool(config.get("do_lower_case", True)), bool(config.get("keep_accents", False))
            )
        else:
            raise FileNotFoundError(
                f"no tokenizer in {folder}: expected tokenizer.json or spiece.model "
                "(copy them from the original checkpoint)"
            )
        required = [config.get(k, t) for k, t in SPECIAL_TOKENS.items() if k != "mask_token"]
        lacking = [t for t in required if tokenizer.token_to_id(t) is None]
        if lacking:
            raise ValueError(f"{path} is not an ALBERT tokenizer: it lacks the tokens {lacking}")
        # A corrupt normaliser or model panics inside tokenizers on first use: find out now.
        panic_guard(lambda: tokenizer.encode_batch(["Probe ``text'' ÄÖ 東京 1,000 ☃", ("a", "b")]), str(path))
        max_length = config.get("model_max_length")
        return cls(
            tokenizer,
            int(max_length) if isinstance(max_length, int) and 1 < max_length < 1e9 else 512,
            config,
        )

    def copy(self) -> "AlbertTokenizer":
        """An independent tokenizer: `encode` sets truncation and padding on the underlying
        `tokenizers.Tokenizer`, so threads that tokenize at the same time need one each."""
        return type(self)(Tokenizer.from_str(self.tokenizer.to_str()), self.model_max_length, self.config)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(
        self,
        text: str | list[str],
        text_pair: str | list[str] | None = None,
        padding: bool | str = False,
        truncation: bool | str = False,
        max_length: int | None = None,
        stride: int = 0,
        pad_to_multiple_of: int | None = None,
        return_overflowing_tokens: bool = False,
        is_split_into_words: bool = False,
    ) -> tuple[list[Encoding], list[int]]:
        """`tokenizers` Encodings of a batch (overflow windows flattened after their text) and, for each,
        the index of the text it came from. Arguments as `__call__`; with is_split_into_words, each
        text is a list of words (their word ids then index that list)."""
        texts, pairs = _batch(text, text_pair, is_split_into_words)
        if stride and not (truncation and return_overflowing_tokens):
            raise ValueError("stride needs truncation=True and return_overflowing_tokens=True")
        limit = max_length or self.model_max_length
        tok = self.tokenizer
        tok.no_truncation()
        tok.no_padding()
        try:
            if truncation:
                strategy = "longest_first" if truncation is True else truncation
                try:
                    tok.enable_truncation(limit, stride=stride, strategy=strategy)
                except Exception as e:  # tokenizers raises a bare Exception for a bad stride
                    raise ValueError(
                        f"cannot truncate to max_length={limit} with stride={stride}: {e}"
                    ) from None
            if padding:
                tok.enable_padding(
                    pad_id=self.pad_token_id,
                    pad_token=self.pad_token,
                    length=limit if padding == "max_length" else None,
                    pad_to_multiple_of=pad_to_multiple_of,
                )
            batch = texts if pairs is None else list(zip(texts, pairs, strict=True))
            try:
                encodings = panic_guard(
                    lambda: tok.encode_batch(batch, is_pretokenized=is_split_into_words), "a text"
                )
            except ValueError:
                raise
            except Exception as e:  # e.g. a question too long to leave room for any context
                check_unicode(texts + (pairs or []), is_split_into_words)
                raise ValueError(f"cannot tokenize with max_length={limit}: {e}") from None
        finally:
            tok.no_truncation()
            tok.no_padding()
        flat, sample = [], []
        for i, e in enumerate(encodings):
            windows = [e, *e.overflowing] if return_overflowing_tokens else [e]
            flat += windows
            sample += [i] * len(windows)
        if padding and return_overflowing_tokens:  # windows of other texts may be longer than the text
            width = max(len(e.ids) for e in flat)
            for e in flat:
                e.pad(width, pad_id=self.pad_token_id, pad_token=self.pad_token)
        return flat, sample

    def __call__(
        self,
        text: str | list[str],
        text_pair: str | list[str] | None = None,
        padding: bool | str = False,
        truncation: bool | str = False,
        max_length: int | None = None,
        stride: int = 0,
        pad_to_multiple_of: int | None = None,
        return_overflowing_tokens: bool = False,
        return_offsets_mapping: bool = False,
        return_special_tokens_mask: bool = False,
        return_tensors: str | None = None,
    ) -> dict:
        """Encodes one text (or pair) or a batch, as transformers' tokenizer call.

        padding: False, True/"longest" or "max_length"; truncation: False, True/"longest_first",
        "only_first" or "only_second"; stride: tokens shared by consecutive overflow windows
        (with return_overflowing_tokens, which adds "overflow_to_sample_mapping");
        return_tensors: None (lists), "np" or "mlx".
        """
        single = isinstance(text, str)
        encodings, sample = self.encode(
            text,
            text_pair,
            padding,
            truncation,
            max_length,
            stride,
            pad_to_multiple_of,
            return_overflowing_tokens,
        )
        out = {
            "input_ids": [e.ids for e in encodings],
            "token_type_ids": [e.type_ids for e in encodings],
            "attention_mask": [e.attention_mask for e in encodings],
        }
        if return_special_tokens_mask:
            out["special_tokens_mask"] = [e.special_tokens_mask for e in encodings]
        if return_offsets_mapping:
            out["offset_mapping"] = [e.offsets for e in encodings]
        if return_overflowing_tokens:
            out["overflow_to_sample_mapping"] = sample
        if return_tensors is not None:
            if len({len(ids) for ids in out["input_ids"]}) > 1:
                raise ValueError("sequences have different lengths: pass padding=True to return arrays")
            arrays = {k: np.array(v, dtype=np.int32) for k, v in out.items()}
            if return_tensors == "mlx":
                import mlx.core as mx

                arrays = {k: mx.array(v) for k, v in arrays.items()}
            elif return_tensors != "np":
                raise ValueError(f"return_tensors must be None, 'np' or 'mlx', got {return_tensors!r}")
            return arrays
        if single and not return_overflowing_tokens:
            return {k: v[0] for k, v in out.items()}
        return out

    def encode_windows(
        self,
        questions: list[str],
        contexts: list[str],
        max_length: int,
        stride: int,
        names: tuple[str, str] = ("max_length", "stride"),
    ) -> tuple[list[Encoding], list[int]]:
        """(question, context) pairs as overlapping windows over the context (question repeated in each),
        as question answering reads them; ValueError when a question leaves no room for context
        (`names`: what the caller calls max_length and stride, for that message)."""
        try:
            return self.encode(
                questions,
                contexts,
                truncation="only_second",
                max_length=max_length,
                stride=stride,
                return_overflowing_tokens=True,
            )
        except ValueError:
            longest = max(len(e.ids) for e in self.encode(questions)[0])  # [CLS] question [SEP]
            room = max_length - longest - 1  # what a window keeps for the context (and its [SEP])
            if room < 2:
                raise ValueError(
                    f"a question of {longest - 2} tokens leaves no room for the context in "
                    f"{names[0]}={max_length} tokens: shorten the question"
                ) from None
            raise ValueError(
                f"{names[1]}={stride} must be below the {room} context tokens a window of {names[0]}="
                f"{max_length} keeps after the question: lower {names[1]} (e.g. {names[1]}={room // 2})"
            ) from None

    def __len__(self) -> int:
        """Tokens of the vocabulary, added tokens included (as transformers' len(tokenizer))."""
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def tokenize(self, text: str, pair: str | None = None, add_special_tokens: bool = False) -> list[str]:
        """The pieces of a text (or pair), without [CLS]/[SEP] unless asked: transformers' tokenize."""
        if not isinstance(text, str) or not (pair is None or isinstance(pair, str)):
            raise TypeError("tokenize takes a string (and optionally a second one for a pair)")
        encoding = panic_guard(
            lambda: self.tokenizer.encode(text, pair, add_special_tokens=add_special_tokens), "a text"
        )
        return encoding.tokens

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return self.tokenizer.decode([int(i) for i in np.asarray(ids).reshape(-1)], skip_special_tokens)

    def batch_decode(self, sequences, skip_special_tokens: bool = False) -> list[str]:
        """decode() of each row: a list of id lists, or a (batch, seq) array."""
        return [self.decode(ids, skip_special_tokens) for ids in sequences]

    def convert_ids_to_tokens(self, ids) -> list[str]:
        return [self.tokenizer.id_to_token(int(i)) for i in np.asarray(ids).reshape(-1)]

    def convert_tokens_to_ids(self, tokens: list[str]) -> list[int]:
        unk = self.unk_token_id
        return [i if (i := self.tokenizer.token_to_id(t)) is not None else unk for t in tokens]

    def save_pretrained(self, path: str | os.PathLike) -> None:
        """Writes tokenizer.json and tokenizer_config.json (each atomically)."""
        from .files import atomic_write
        from .weights import write_json

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        atomic_write(path / "tokenizer.json", lambda tmp: self.tokenizer.save(str(tmp)))
        config = {
            **self.config,
            **{k: getattr(self, k) for k in SPECIAL_TOKENS},
            "model_max_length": self.model_max_length,
            "tokenizer_class": "AlbertTokenizer",
        }
        write_json(path / "tokenizer_config.json", config)
