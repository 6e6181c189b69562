"""SentencePiece's spiece.model read without sentencepiece or protobuf, as untrusted input (every
length checked against the file, truncation detected), and turned into transformers'
AlbertTokenizer pipeline on `tokenizers`."""

from __future__ import annotations

import math
import os
import struct
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import Unigram

from .files import read_bytes

SPECIAL_TOKENS = {
    "pad_token": "<pad>",
    "unk_token": "<unk>",
    "cls_token": "[CLS]",
    "sep_token": "[SEP]",
    "mask_token": "[MASK]",
}
MAX_FILE = 100 << 20  # bytes: ALBERT's files are < 1 MB; refuse a multi-GB "tokenizer" before reading it


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = 0
    for shift in range(0, 70, 7):  # a varint has at most 10 bytes
        if pos >= len(buf):
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
    raise ValueError("varint longer than 10 bytes")


def _fields(buf: bytes):
    """(field number, wire type, value) of a protobuf message: ints, bytes, or floats for 32-bit
    fields; every length is checked against the buffer."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire in (1, 2, 5):
            if wire == 2:
                size, pos = _varint(buf, pos)
            else:
                size = 8 if wire == 1 else 4
            if size > len(buf) - pos:
                raise ValueError(
                    f"field {field} runs {size - (len(buf) - pos)} bytes past the end (truncated?)"
                )
            value, pos = buf[pos : pos + size], pos + size
            if wire == 5:
                value = struct.unpack("<f", value)[0]
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield field, wire, value


def _message(buf, what: str) -> dict[int, list]:
    if not isinstance(buf, bytes):
        raise ValueError(f"{what} is not a message")
    fields: dict[int, list] = {}
    for field, wire, value in _fields(buf):
        fields.setdefault(field, []).append((wire, value))
    return fields


def read_spiece(path: str | os.PathLike) -> tuple[list[tuple[str, float]], bytes]:
    """(piece, score) pairs and the normaliser's precompiled charsmap of a SentencePiece model,
    validated: every length within the file, pieces valid UTF-8 with finite scores, the trainer's
    vocabulary size equal to the pieces found (a truncated file has fewer), a normaliser present."""
    path = Path(path)
    try:
        model = _message(read_bytes(path, MAX_FILE, "spiece.model"), "the file")
        pieces = []
        for wire, value in model.get(1, []):  # ModelProto.pieces: {1: piece, 2: score, 3: type}
            entry = _message(value, "a piece") if wire == 2 else None
            if not entry or 1 not in entry or entry[1][0][0] != 2:
                raise ValueError(f"piece {len(pieces)} is malformed")
            text = entry[1][0][1].decode("utf-8")
            score = entry.get(2, [(5, 0.0)])[0]
            if score[0] != 5 or not math.isfinite(score[1]) or not text:
                raise ValueError(f"piece {len(pieces)} has no text or a bad score")
            pieces.append((text, float(score[1])))
        trainer = _message(model[2][0][1], "trainer_spec") if 2 in model else {}
        if 3 not in model or model[3][0][0] != 2:
            raise ValueError("no normalizer_spec (truncated?)")
        normalizer = _message(model[3][0][1], "normalizer_spec")
        charsmap = normalizer.get(2, [(2, b"")])[0]
        if charsmap[0] != 2:
            raise ValueError("malformed precompiled_charsmap")
        charsmap = charsmap[1]
        if charsmap and (len(charsmap) < 4 or struct.unpack("<I", charsmap[:4])[0] + 4 > len(charsmap)):
            raise ValueError("malformed precompiled_charsmap")
        declared = trainer.get(4, [(0, None)])[0]  # TrainerSpec.vocab_size
        if declared[0] == 0 and declared[1] is not None and declared[1] != len(pieces):
            raise ValueError(f"{len(pieces)} pieces but the trainer made {declared[1]} (truncated?)")
    except (ValueError, UnicodeDecodeError, struct.error, IndexError, KeyError) as e:
        raise ValueError(f"{path} is not a valid SentencePiece model ({e}); re-download it") from None
    if not pieces:
        raise ValueError(f"{path} holds no SentencePiece vocabulary; re-download it")
    return pieces, charsmap


def panic_guard(call, what: str):
    """Runs call(); a Rust panic inside `tokenizers` (pyo3's PanicException, a BaseException that
    escapes `except Exception`) becomes a ValueError naming `what`."""
    try:
        return call()
    except BaseException as e:
        if type(e).__name__ != "PanicException":
            raise
        raise ValueError(
            f"the tokenizer failed on {what} ({str(e)[:200]}): its files are corrupt; re-download them"
        ) from None


def build_from_spiece(path, do_lower_case: bool = True, keep_accents: bool = False) -> Tokenizer:
    """transformers' AlbertTokenizer pipeline on a spiece.model."""
    pieces, charsmap = read_spiece(path)
    try:
        return panic_guard(lambda: _pipeline(pieces, charsmap, do_lower_case, keep_accents, path), str(path))
    except ValueError:
        raise
    except Exception as e:  # tokenizers' own errors for a vocabulary or normaliser it cannot use
        raise ValueError(
            f"{path} is not a usable SentencePiece model ({str(e)[:200]}); re-download it"
        ) from None


def _pipeline(pieces, charsmap: bytes, do_lower_case: bool, keep_accents: bool, path) -> Tokenizer:
    # As transformers' AlbertConverter: pieces like "1," are pushed down so numbers keep commas apart.
    vocab = [(p, s - 100 if len(p) >= 2 and p[-1] == "," and p[-2].isdigit() else s) for p, s in pieces]
    ids = {p: i for i, (p, _) in enumerate(vocab)}
    if SPECIAL_TOKENS["unk_token"] not in ids:
        raise ValueError(f"{path} has no {SPECIAL_TOKENS['unk_token']} piece: not an ALBERT vocabulary")
    tok = Tokenizer(Unigram(vocab, unk_id=ids[SPECIAL_TOKENS["unk_token"]], byte_fallback=False))
    steps = [normalizers.Replace("``", '"'), normalizers.Replace("''", '"')]
    if not keep_accents:
        steps += [normalizers.NFKD(), normalizers.StripAccents()]
    if do_lower_case:
        steps.append(normalizers.Lowercase())
    if charsmap:
        steps.append(normalizers.Precompiled(charsmap))
    steps.append(normalizers.Replace(Regex(" {2,}"), " "))
    tok.normalizer = normalizers.Sequence(steps)
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")]
    )
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0",
        pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[(t, ids[t]) for t in ("[CLS]", "[SEP]")],
    )
    tok.add_special_tokens([t for t in SPECIAL_TOKENS.values() if t in ids])
    return tok
