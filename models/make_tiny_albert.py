"""Builds models/tiny-albert: a small random-initialised AlbertForMaskedLM in transformers' layout
with a SentencePiece vocabulary trained here, so every command in the README runs offline.

    python models/make_tiny_albert.py      (needs sentencepiece)"""

import io
import json
import random
import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent))

from mlx_albert import AlbertConfig, AlbertForMaskedLM  # noqa: E402

SUBJECTS = [
    "the cat",
    "a dog",
    "my friend",
    "the teacher",
    "our neighbour",
    "the old man",
    "a child",
    "the engineer",
    "paris",
    "the river",
    "a small bird",
    "the company",
]
VERBS = ["likes", "sees", "builds", "finds", "visits", "paints", "follows", "remembers", "answers"]
OBJECTS = [
    "the house",
    "a red car",
    "the garden",
    "many books",
    "the city of london",
    "fresh bread",
    "a long letter",
    "the blue sea",
    "music",
    "the mountains",
    "an apple",
    "the question",
]
TAILS = [
    "every morning.",
    "in the summer.",
    "with great care.",
    "after school.",
    "near the station.",
    "because it is beautiful.",
    "again and again.",
    "before dinner.",
    "\u2014 or so they say.",
]


TOKENIZER_CONFIG = {
    "tokenizer_class": "AlbertTokenizer",
    "do_lower_case": True,
    "remove_space": True,
    "keep_accents": False,
    "model_max_length": 128,
    "bos_token": "[CLS]",
    "eos_token": "[SEP]",
    "unk_token": "<unk>",
    "sep_token": "[SEP]",
    "pad_token": "<pad>",
    "cls_token": "[CLS]",
    "mask_token": "[MASK]",
}


def corpus(n: int = 3000, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [
        f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(TAILS)}".capitalize()
        for _ in range(n)
    ]


def train_spiece(sentences, vocab_size: int, character_coverage: float = 1.0) -> bytes:
    """A unigram SentencePiece model with ALBERT's special pieces (<pad>, <unk>, [CLS], [SEP], [MASK])."""
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="unigram",
        hard_vocab_limit=False,
        pad_id=0,
        unk_id=1,
        bos_id=-1,
        eos_id=-1,
        control_symbols=["[CLS]", "[SEP]", "[MASK]"],
        character_coverage=character_coverage,
        minloglevel=2,
    )
    return model.getvalue()


def main(out: Path = HERE / "tiny-albert") -> None:
    import mlx.core as mx  # after mlx_albert, which picks the BLAS
    import sentencepiece as spm

    out.mkdir(parents=True, exist_ok=True)
    model = io.BytesIO(train_spiece(corpus(), 160))
    (out / "spiece.model").write_bytes(model.getvalue())
    vocab_size = spm.SentencePieceProcessor(model_proto=model.getvalue()).get_piece_size()
    (out / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_CONFIG, indent=2) + "\n")
    mx.random.seed(0)
    config = AlbertConfig(
        vocab_size=vocab_size,
        embedding_size=32,
        hidden_size=64,
        num_blocks=4,
        num_groups=1,
        num_attention_heads=4,
        intermediate_size=128,
        max_positions=128,
        activation="gelu_new",
        extra={"bos_token_id": 2, "eos_token_id": 3},
    )
    AlbertForMaskedLM(config).save_pretrained(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
